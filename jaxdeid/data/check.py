"""`jaxdeid data check FOLDER`: read every file under a folder and report, file by file.

``check_folder`` returns how many files are usable and how many were rejected;
the command turns that into its exit status. Each rejected file gets one line naming it and the reason; each
converted file (grayscale, RGBA, 16-bit, ...) lists the conversions applied.
Files are found by `list_files`, the walker `scan_folder`, ``deidentify`` and
``enhance`` share: hidden image files (``.x.jpg``) are reported as rejected.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..progress import progress
from .images import ImageError, is_image_candidate, list_files, not_an_image_reason, read_image


def check_folder(folder, *, max_pixels: int, out=None, bad_only: bool = False) -> tuple[int, int]:
    """Prints one line per file and a summary to ``out`` (default: the current stdout); returns
    (usable files, rejected files)."""
    out = out or sys.stdout   # looked up per call: a default bound at import would pin a replaced stream
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
    return good, bad
