"""`jaxdeid enhance IN OUT`: run the trained light enhancement network over a folder of images.

    jaxdeid enhance photos/ enhanced/ --preset small

Every image file under IN (sub-folders included) is read safely
(`jaxdeid.data.read_image`), enhanced at its own size and written to OUT as a PNG
with the same relative path, the last suffix replaced (``a/john.smith.jpg`` ->
``a/john.smith.png``; two inputs that would share a name, e.g. ``b.jpg`` and ``b.png``,
keep their whole name: ``b_jpg.png``, ``b_png.png``). Files are found by the walker
every command shares (`jaxdeid.data.images.list_files`): hidden image files are
reported, and OUT's files are never read when OUT lies inside IN. A file that cannot
be read (or written) is reported on stderr, one line each, and the run goes on; the
exit status is then 3 (partial). OUT equal to IN is a usage error (2). It is 1 when no
image at all could be enhanced, and 1 with a message naming the training command
when no trained enhancer exists.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np

from ..data import ImageError, read_image, write_image
from ..data.images import list_files
from ..light import load_trained
from ..progress import progress
from .common import EXIT_USAGE, add_config_flags, config_from_args, status_of_counts
from .deidentify import output_file, output_stems


def register(subparsers):
    p = subparsers.add_parser("enhance", help="enhance low-light images with the trained light enhancement network")
    p.add_argument("input", metavar="IN", help="folder of images (or one image file)")
    p.add_argument("output", metavar="OUT", help="folder for the enhanced PNGs (created if missing)")
    add_config_flags(p)
    p.set_defaults(func=_run)


def pad_to_multiple(image: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Mirror-pads HxWx3 so both sides divide by `multiple` (the U-Net's down-sampling factor)."""
    height, width = image.shape[:2]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")
    return image, (height, width)


def _run(args) -> int:


    config = config_from_args(args)
    root, out = Path(args.input), Path(args.output)
    in_resolved, out_resolved = root.resolve(), out.resolve()
    if in_resolved == out_resolved:
        print(f"jaxdeid enhance: error: OUT must differ from IN ({root}): the outputs would overwrite "
              f"the inputs", file=sys.stderr)
        return EXIT_USAGE
    exclude = out if root.is_dir() and in_resolved in out_resolved.parents else None   # OUT inside IN
    files, skipped = list_files(root, exclude=exclude)
    # IN inside OUT: an output must never land on an input file (links not followed).
    inputs_absolute = [in_resolved / p.relative_to(root) if root.is_dir() else in_resolved for p in files]
    stems = output_stems(files, root, taken=[p.relative_to(out_resolved) for p in inputs_absolute
                                             if out_resolved in p.parents])
    model, variables = load_trained(config, "enhance")  # FileNotFoundError names `jaxdeid train enhance`
    enhance = jax.jit(lambda image: model.apply(variables, image[None])[0])
    multiple = 2 ** int(config.light.adjust_depth)

    written, rejected = 0, len(skipped)
    for path, reason in skipped:
        print(f"jaxdeid enhance: rejected {path}: {reason}", file=sys.stderr)
    for path in progress(files, desc="enhance"):
        try:
            image, _notes = read_image(path, max_pixels=int(config.data.max_image_pixels))
        except ImageError as err:
            print(f"jaxdeid enhance: rejected {err}", file=sys.stderr)
            rejected += 1
            continue
        padded, (height, width) = pad_to_multiple(image, multiple)
        result = np.asarray(enhance(padded))[:height, :width]
        try:
            write_image(output_file(out / stems[path], ".png"), result)
        except (OSError, ValueError) as err:   # one file's write failure (or non-finite output) is reported
            print(f"jaxdeid enhance: rejected {path}: cannot write its output ({type(err).__name__}: {err})",
                  file=sys.stderr)
            rejected += 1
            continue
        written += 1

    print(f"jaxdeid enhance: wrote {written} image(s) to {out}; rejected {rejected}")
    if written == 0:
        print(f"jaxdeid enhance: error: no usable image under {root}", file=sys.stderr)
    return status_of_counts(written, rejected)
