"""`jaxdeid data check FOLDER`: read every file under a folder and report, file by file.

Exit status (the CLI's shared codes): 0 every file is a usable image, 3 (partial)
some files were rejected but others are usable, 1 nothing usable (no files, or
all rejected). Each rejected file gets one line naming it and the reason; each
converted file (grayscale, RGBA, 16-bit, ...) lists the conversions applied.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .images import ImageError, is_image_candidate, read_image

EXIT_OK, EXIT_FAILED, EXIT_PARTIAL = 0, 1, 3


def check_folder(folder, *, max_pixels: int, out=sys.stdout, bad_only: bool = False) -> int:
    """Prints one line per file and a summary; returns the exit status."""
    from ..progress import progress

    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder")
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    good = bad = converted = 0
    for path in progress(files, desc=f"checking {root}"):
        if not is_image_candidate(path):
            bad += 1
            print(f"BAD  {path}: not an image file (extension {path.suffix or 'none'!r})", file=out)
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
    if not files:
        print(f"{root}: no files found, so no image to use", file=out)
    print(f"{good} usable ({converted} converted), {bad} rejected, of {len(files)} files under {root}", file=out)
    if good == 0:
        return EXIT_FAILED
    return EXIT_PARTIAL if bad else EXIT_OK


def run(config, args) -> int:
    return check_folder(args.folder, max_pixels=int(config.data.max_image_pixels), bad_only=args.bad_only)
