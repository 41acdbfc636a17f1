"""`jaxdeid enhance IN OUT`: run the trained light enhancement network over a folder of images.

    jaxdeid enhance photos/ enhanced/ --preset small

Every image file under IN (sub-folders included) is read safely
(`jaxdeid.data.read_image`), enhanced at its own size and written to OUT as a PNG
with the same relative path. A file that cannot be read is reported on stderr, one
line each, and the run goes on; the exit status is then 3 (partial). It is 1 when no
image at all could be enhanced, and 1 with a message naming the training command
when no trained enhancer exists.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..cli import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, add_config_flags, config_from_args


def register(subparsers):
    p = subparsers.add_parser("enhance", help="enhance low-light images with the trained light enhancement network")
    p.add_argument("input", metavar="IN", help="folder of images (or one image file)")
    p.add_argument("output", metavar="OUT", help="folder for the enhanced PNGs (created if missing)")
    add_config_flags(p)
    p.set_defaults(func=_run)


def _inputs(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder")
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def pad_to_multiple(image: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Mirror-pads HxWx3 so both sides divide by `multiple` (the U-Net's down-sampling factor)."""
    height, width = image.shape[:2]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")
    return image, (height, width)


def _run(args) -> int:
    import jax

    from ..data import ImageError, read_image, write_image
    from ..light import load_trained
    from ..progress import progress

    config = config_from_args(args)
    root, out = Path(args.input), Path(args.output)
    files = _inputs(root)
    model, variables = load_trained(config, "enhance")  # FileNotFoundError names `jaxdeid train enhance`
    enhance = jax.jit(lambda image: model.apply(variables, image[None])[0])
    multiple = 2 ** int(config.light.adjust_depth)

    written, rejected = 0, 0
    for path in progress(files, desc="enhance"):
        try:
            image, _notes = read_image(path, max_pixels=int(config.data.max_image_pixels))
        except ImageError as err:
            print(f"jaxdeid enhance: rejected {err}", file=sys.stderr)
            rejected += 1
            continue
        padded, (height, width) = pad_to_multiple(image, multiple)
        result = np.asarray(enhance(padded))[:height, :width]
        relative = path.relative_to(root) if root.is_dir() else Path(path.name)
        write_image(out / relative.with_suffix(".png"), result)
        written += 1

    print(f"jaxdeid enhance: wrote {written} image(s) to {out}; rejected {rejected}")
    if written == 0:
        print(f"jaxdeid enhance: error: no usable image under {root}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_PARTIAL if rejected else EXIT_OK
