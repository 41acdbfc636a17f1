"""`jaxdeid deidentify IN OUT`: private images for a folder of low-light photos, failing closed.

    jaxdeid deidentify photos/ private/ --preset small [--method ours] [--batch-size 16]

Every image file under IN is read safely (`jaxdeid.data.read_image`: bad files are
reported one at a time and the run goes on), letterboxed into the square frame the
networks were trained on (``config.data.scene_resolution``: scaled to fit, black
bars), and de-identified in batches by the jitted private step
(`jaxdeid.deid.step`). The result is mapped back to the file's ORIGINAL size: only
the region the step replaced (the feathered face square, or the pixelated fallback
region) is taken from the network's output, upscaled; the rest of the frame keeps
the original pixels.

What is written under OUT, for ``IN/a/b.jpg``:

  * ``OUT/a/b.png``                    the private image — only when the step succeeded
    (face found, valid output, every white-box judge rejects it);
  * ``OUT/a/b.FALLBACK_BLURRED.png``   otherwise: the face region (or, with no face found,
    the whole frame) pixelated beyond recognition. Never named as a private image;
  * ``OUT/a/b.json``                   the per-file report: status, box, detector score,
    iterations, every judge's similarity, the success flags, the conversions applied
    when reading, and which networks were untrained (``--allow-untrained``);
  * ``OUT/summary.json``               counts and the list of rejected files.

A stale output of the other kind from an earlier run is deleted, so OUT never holds
a private-looking file for an image that is not private now.

Exit status: 0 every file is private; 3 some files were rejected or fell back
(each one reported); 1 nothing usable (no readable image) or a failure (e.g.
missing checkpoints: the message lists the `jaxdeid train ...` commands to run).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from ..cli import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, add_config_flags, config_from_args

FALLBACK_SUFFIX = ".FALLBACK_BLURRED.png"


def register(subparsers):
    p = subparsers.add_parser(
        "deidentify", help="write private (de-identified) versions of every image in a folder",
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 all private, 3 some rejected or fell back (pixelated, flagged), 1 nothing usable.")
    p.add_argument("input", metavar="IN", help="folder of images (searched recursively)")
    p.add_argument("output", metavar="OUT", help="folder for private images, fallbacks and JSON reports")
    add_config_flags(p)
    p.add_argument("--method", default=None, choices=("ours", "pggan", "stylegan1", "stylegan2"),
                   help="ours (default: config.deid.method) or a baseline generator without light networks")
    p.add_argument("--batch-size", type=int, default=None, help="frames per jitted step (default: config.deid.batch_size)")
    p.add_argument("--allow-untrained", action="store_true",
                   help="randomly initialise networks with no checkpoint (tests/demos only: faces are meaningless)")
    p.set_defaults(func=main)


# --------------------------------------------------------------------------- geometry


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Float image resize (Pillow bicubic per channel, mode "F"), clipped to [0, 1]."""
    from PIL import Image

    if image.shape[:2] == (height, width):
        return image.astype(np.float32)
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], np.float32)).resize(
        (width, height), Image.Resampling.BICUBIC)) for c in range(image.shape[-1])]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)


def letterbox(image: np.ndarray, side: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Scales `image` to fit a side x side square (black bars); returns it and (top, left, h, w) of the content."""
    height, width = image.shape[:2]
    scale = side / max(height, width)
    new_h, new_w = max(int(round(height * scale)), 1), max(int(round(width * scale)), 1)
    top, left = (side - new_h) // 2, (side - new_w) // 2
    frame = np.zeros((side, side, 3), np.float32)
    frame[top:top + new_h, left:left + new_w] = _resize(image, new_h, new_w)
    return frame, (top, left, new_h, new_w)


def unletterbox(frame: np.ndarray, geometry, height: int, width: int) -> np.ndarray:
    """The content of a letterboxed frame, resized back to height x width."""
    top, left, new_h, new_w = geometry
    return _resize(frame[top:top + new_h, left:left + new_w], height, width)


def box_to_pixels(box: np.ndarray, geometry, side: int, height: int, width: int) -> list[float]:
    """A normalised (y0, x0, y1, x1) box of the letterboxed frame -> pixels of the original image."""
    top, left, new_h, new_w = geometry
    y0, x0, y1, x1 = (float(v) * side for v in box)
    sy, sx = height / new_h, width / new_w
    return [round(min(max((y0 - top) * sy, 0.0), height), 2), round(min(max((x0 - left) * sx, 0.0), width), 2),
            round(min(max((y1 - top) * sy, 0.0), height), 2), round(min(max((x1 - left) * sx, 0.0), width), 2)]


def changed_region_masks(config, boxes: np.ndarray, flags: dict, side: int) -> np.ndarray:
    """Per frame [B, S, S, 1]: where the private step replaced pixels (1) and where it kept them (0).

    Mirrors `jaxdeid.deid.step`'s finish stage: success -> the feathered aligned square;
    fallback with a face -> the grown fallback square (hard edge); no face -> everything.
    """
    import jax.numpy as jnp

    from ..crop import ops

    masks = []
    for i in range(boxes.shape[0]):
        box = jnp.asarray(boxes[i:i + 1])
        if flags["success"][i]:
            region = ops.square_boxes(box, (side, side), float(config.crop.align_margin))[0]
            mask = ops.feather_mask((side, side), region, float(config.crop.feather))
        elif flags["detected"][i]:
            region = ops.square_boxes(box, (side, side), float(config.deid.fallback_margin))[0]
            mask = ops.feather_mask((side, side), region, 0.0)
        else:
            mask = jnp.ones((side, side, 1), jnp.float32)
        masks.append(np.asarray(mask, np.float32))
    return np.stack(masks)


# --------------------------------------------------------------------------- outputs


def output_stems(paths: list[Path], root: Path) -> dict[Path, Path]:
    """OUT-relative stem per input (``a/b.jpg`` -> ``a/b``); the suffix is kept where two inputs would collide."""
    stems = {p: p.relative_to(root).with_suffix("") for p in paths}
    counts: dict[Path, int] = {}
    for stem in stems.values():
        counts[stem] = counts.get(stem, 0) + 1
    return {p: (s if counts[s] == 1 else s.with_name(p.name.replace(".", "_"))) for p, s in stems.items()}


def _write_report(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2, allow_nan=False, default=_jsonable) + "\n")
    tmp.replace(path)


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _finite_or_none(x: float):
    return float(x) if np.isfinite(x) else None


# --------------------------------------------------------------------------- the command


def main(args) -> int:
    import jax

    from ..data import ImageError, read_image, scan_folder, write_image
    from ..deid.pipeline import load_params
    from ..deid.step import make_jitted_private_step
    from ..progress import progress

    started = time.perf_counter()
    config = config_from_args(args)
    method = args.method or config.deid.method
    batch_size = int(args.batch_size or config.deid.batch_size)
    if batch_size < 1:
        print("jaxdeid deidentify: error: --batch-size must be at least 1", file=sys.stderr)
        return EXIT_FAILED
    in_root, out_root = Path(args.input), Path(args.output)
    side = int(config.data.scene_resolution)
    max_pixels = int(config.data.max_image_pixels)

    good, bad = scan_folder(in_root, max_pixels=max_pixels, deep=False, progress_desc=f"checking {in_root}")
    out_resolved = out_root.resolve()
    good = [p for p in good if out_resolved not in p.resolve().parents]   # never re-read our own outputs
    rejected = [(p, reason) for p, reason in bad if out_resolved not in p.resolve().parents]
    stems = output_stems(good + [p for p, _ in rejected], in_root)
    out_root.mkdir(parents=True, exist_ok=True)

    def reject(path: Path, reason: str) -> None:
        print(f"rejected: {path}: {reason}", file=sys.stderr)
        stem = out_root / stems[path]
        _write_report(stem.parent / (stem.name + ".json"),
                      {"input": str(path), "output": None, "status": "rejected", "reason": reason,
                       "fallback": False, "success": False})

    for path, reason in rejected:
        reject(path, reason)
    if not good:
        _write_report(out_root / "summary.json", {
            "input": str(in_root), "output": str(out_root), "method": method, "preset": config.preset,
            "files": len(rejected), "private": 0, "fallback": 0, "rejected": len(rejected),
            "rejected_files": [{"path": str(p), "reason": r} for p, r in rejected]})
        print(f"jaxdeid deidentify: error: no usable image in {in_root} ({len(rejected)} rejected)", file=sys.stderr)
        return EXIT_FAILED

    try:
        params, untrained = load_params(config, method, allow_untrained=args.allow_untrained)
    except FileNotFoundError as err:
        print(f"jaxdeid deidentify: error: {err}", file=sys.stderr)
        return EXIT_FAILED
    if untrained:
        print(f"warning: running with UNTRAINED (random) {', '.join(untrained)} (--allow-untrained); "
              f"outputs are for testing only", file=sys.stderr)

    step = make_jitted_private_step(config, method)
    judges = list(step.judges) if hasattr(step, "judges") else list(config.recognizer.judges)
    base_key = jax.random.PRNGKey(int(config.seed))
    counts = {"private": 0, "fallback": 0, "rejected": len(rejected)}

    bar = progress(total=len(good), desc=f"deidentify ({method})")
    for batch_index, start in enumerate(range(0, len(good), batch_size)):
        items = []
        for path in good[start:start + batch_size]:
            try:
                image, notes = read_image(path, max_pixels=max_pixels)
            except ImageError as err:
                reject(path, err.reason)
                rejected.append((path, err.reason))
                counts["rejected"] += 1
                bar.update(1)
                continue
            frame, geometry = letterbox(image, side)
            items.append((path, image, notes, frame, geometry))
        if not items:
            continue
        frames = np.zeros((batch_size, side, side, 3), np.float32)   # padded: one compiled shape
        for i, item in enumerate(items):
            frames[i] = item[3]
        private, diag = step(params, frames, jax.random.fold_in(base_key, batch_index))
        private = np.asarray(private)
        diag = {k: np.asarray(v) for k, v in diag.items() if k in (
            "iterations", "similarities", "box", "score", "detected", "valid", "deidentified", "success", "fallback")}
        masks = changed_region_masks(config, diag["box"], diag, side)
        for i, (path, image, notes, _, geometry) in enumerate(items):
            height, width = image.shape[:2]
            # Back to the original size: replaced region from the network, the rest untouched.
            mask = unletterbox(np.repeat(masks[i], 3, axis=-1), geometry, height, width)
            result = mask * unletterbox(private[i], geometry, height, width) + (1.0 - mask) * image
            success = bool(diag["success"][i])
            stem = out_root / stems[path]
            private_path, fallback_path = stem.with_suffix(".png"), stem.parent / (stem.name + FALLBACK_SUFFIX)
            written = private_path if success else fallback_path
            write_image(written, result)
            (fallback_path if success else private_path).unlink(missing_ok=True)   # no stale outputs
            status = "private" if success else (
                "fallback_face_pixelated" if diag["detected"][i] else "fallback_frame_pixelated")
            counts["private" if success else "fallback"] += 1
            report = {
                "input": str(path), "output": str(written), "status": status, "method": method,
                "fallback": not success, "success": success, "detected": bool(diag["detected"][i]),
                "valid": bool(diag["valid"][i]), "deidentified": bool(diag["deidentified"][i]),
                "iterations": int(diag["iterations"][i]), "max_iters": int(config.deid.max_iters),
                "threshold": float(config.recognizer.threshold),
                "similarities": {a: _finite_or_none(diag["similarities"][i, j]) for j, a in enumerate(judges)},
                "score": float(diag["score"][i]),
                "box": box_to_pixels(diag["box"][i], geometry, side, height, width),
                "box_format": "(y0, x0, y1, x1) pixels of the input image",
                "size": [height, width], "read_notes": notes, "untrained_networks": untrained,
            }
            if not success:
                why = [] if diag["detected"][i] else ["no face found (whole frame pixelated)"]
                if diag["detected"][i] and not diag["valid"][i]:
                    why.append("generated face not valid (non-finite or too dark)")
                if diag["detected"][i] and not diag["deidentified"][i]:
                    why.append(f"a judge still recognised the face after {int(diag['iterations'][i])} iterations")
                report["reason"] = "; ".join(why)
                print(f"fallback: {path}: {report['reason']} -> {written.name}", file=sys.stderr)
            _write_report(stem.parent / (stem.name + ".json"), report)
            bar.update(1)
    bar.close()

    processed = counts["private"] + counts["fallback"]
    summary = {"input": str(in_root), "output": str(out_root), "method": method, "preset": config.preset,
               "files": processed + counts["rejected"], **counts,
               "rejected_files": [{"path": str(p), "reason": r} for p, r in rejected],
               "untrained_networks": untrained, "wall_s": round(time.perf_counter() - started, 2)}
    _write_report(out_root / "summary.json", summary)
    print(f"deidentify ({method}): {counts['private']} private, {counts['fallback']} fallback (pixelated, "
          f"flagged {FALLBACK_SUFFIX}), {counts['rejected']} rejected; reports in {out_root}")
    if processed == 0:
        print("jaxdeid deidentify: error: no usable image in the input folder", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK if counts["fallback"] == 0 and counts["rejected"] == 0 else EXIT_PARTIAL
