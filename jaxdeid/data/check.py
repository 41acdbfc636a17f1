"""`jaxdeid data check FOLDER`: read every file under a folder and report, file by file.

Exit status (the CLI's shared codes): 0 every file is a usable image, 3 (partial)
some files were rejected but others are usable, 1 nothing usable (no files, or
all rejected). Each rejected file gets one line naming it and the reason; each
converted file (grayscale, RGBA, 16-bit, ...) lists the conversions applied.
Files are found by `list_files`, the walker `scan_folder`, ``deidentify`` and
``enhance`` share: hidden image files (``.x.jpg``) are reported as rejected.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..cli import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL
from .images import ImageError, is_image_candidate, list_files, not_an_image_reason, read_image


def check_folder(folder, *, max_pixels: int, out=sys.stdout, bad_only: bool = False) -> int:
    """Prints one line per file and a summary; returns the exit status."""
    from ..progress import progress

    root = Path(folder)
    files, skipped = list_files(root)   # the walker `scan_folder` and the commands share
    for path, reason in skipped:        # hidden image files: reported, not silently dropped
        print(f"BAD  {path}: {reason}", file=out)
    good, bad, converted = 0, len(skipped), 0
    for path in progress(files, desc=f"checking {root}"):
        if not is_image_candidate(path):
            bad += 1
            print(f"BAD  {path}: {not_an_image_reason(path)}", file=out)
            continue
        try:
            image, notes = read_image(path, max_pixels=max_pixels)
        except ImageError as err:
            bad += 1
            print(f"BAD  {err}", file=out)
            continue
        good += 1
        converted += bool(notes)
        if not bad_only:
            height, width = image.shape[:2]
            detail = f" ({'; '.join(notes)})" if notes else ""
            print(f"ok   {path}: {width}x{height}{detail}", file=out)
    total = len(files) + len(skipped)
    if not total:
        print(f"{root}: no files found, so no image to use", file=out)
    print(f"{good} usable ({converted} converted), {bad} rejected, of {total} files under {root}", file=out)
    if good == 0:
        return EXIT_FAILED
    return EXIT_PARTIAL if bad else EXIT_OK


def run(config, args) -> int:
    return check_folder(args.folder, max_pixels=int(config.data.max_image_pixels), bad_only=args.bad_only)
