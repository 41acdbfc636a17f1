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

What is written under OUT, for ``IN/a/b.jpg`` (the last suffix is replaced, so
``IN/john.smith.jpg`` gives ``OUT/john.smith.png``):

  * ``OUT/a/b.png``                    the private image — only when the step succeeded
    (face found, valid output, every white-box judge rejects it) with trained networks;
  * ``OUT/a/b.FALLBACK_BLURRED.png``   otherwise: the face region (or, with no face found,
    the whole frame) pixelated beyond recognition. Never named as a private image;
  * ``OUT/a/b.UNTRAINED_NOT_PRIVATE.png``  instead of either when any network ran with
    random weights (``--allow-untrained``): status ``untrained``, never private;
  * ``OUT/a/b.WEAKENED_NOT_PRIVATE.png``   instead of either when a privacy setting is
    weaker than the preset's default (a higher judge threshold, fewer judges, judging one
    view, a lower detector threshold, ...; `jaxdeid.deid.pipeline.weakened_settings`):
    status ``weakened_settings``, never private, the settings listed in every report;
  * ``OUT/a/b.json``                   the per-file report: status, box, detector score,
    iterations, every judge's similarity, the success flags, the conversions applied
    when reading, and which networks were untrained;
  * ``OUT/summary.json``               counts and the list of rejected files (deleted at
    the start of a run, so a crashed run never leaves the previous run's summary).

Two inputs whose outputs would share a name (``b.jpg`` and ``b.png``; any output
name clashing with another's, with ``summary.json`` or with an input file) keep the
whole file name instead (``b_jpg``, ``b_png``; then ``_2``, ``_3``, ...), decided
from the sorted file list, so reruns name files the same way.

Before anything is written for a file, every output of the other kinds (and, for a
rejected file, every image output) from an earlier run is deleted, so OUT never
holds a private-looking file for an image that is not private now. A file whose
output cannot be written (disk full, permissions) is reported as rejected and the
run goes on. Hidden image files (``.x.jpg``) are reported as rejected, not skipped
silently. When OUT lies inside IN its files are never read as inputs; OUT equal
to IN is a usage error.

Exit status: 0 every file is private; 3 some files were rejected, fell back or ran
untrained (each one reported); 1 nothing usable (no readable image) or a failure
(e.g. missing checkpoints: the message lists the `jaxdeid train ...` commands to
run); 2 bad usage (e.g. ``--batch-size 0``, OUT equal to IN).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from ..data import ImageError, read_image, scan_folder, write_image
from ..data.images import letterbox, unletterbox
from ..deid.pipeline import load_params, weakened_settings
from ..deid.step import make_jitted_private_step
from ..eval.protocol import run_padded
from ..progress import progress
from .common import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, add_config_flags, config_from_args

PRIVATE_SUFFIX = ".png"
FALLBACK_SUFFIX = ".FALLBACK_BLURRED.png"
UNTRAINED_SUFFIX = ".UNTRAINED_NOT_PRIVATE.png"
WEAKENED_SUFFIX = ".WEAKENED_NOT_PRIVATE.png"
# Every image output of one input.
IMAGE_SUFFIXES = (PRIVATE_SUFFIX, FALLBACK_SUFFIX, UNTRAINED_SUFFIX, WEAKENED_SUFFIX)
REPORT_SUFFIX = ".json"
SUMMARY_NAME = "summary.json"


def positive_int(text: str) -> int:
    """argparse type for counts that must be at least 1 (a usage error, exit 2, otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(subparsers):
    p = subparsers.add_parser(
        "deidentify", help="write private (de-identified) versions of every image in a folder",
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 all private, 3 some rejected, fell back (pixelated, flagged) or untrained, "
               "1 nothing usable, 2 usage.")
    p.add_argument("input", metavar="IN", help="folder of images (searched recursively)")
    p.add_argument("output", metavar="OUT", help="folder for private images, fallbacks and JSON reports")
    add_config_flags(p)
    p.add_argument("--method", default=None, choices=("ours", "pggan", "stylegan1", "stylegan2"),
                   help="ours (default: config.deid.method) or a baseline generator without light networks")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="frames per jitted step, at least 1 (default: config.deid.batch_size)")
    p.add_argument("--allow-untrained", action="store_true",
                   help="randomly initialise networks with no checkpoint (tests/demos only: faces are meaningless)")
    p.set_defaults(func=main)


# --------------------------------------------------------------------------- geometry


def box_to_pixels(box: np.ndarray, geometry, side: int, height: int, width: int) -> list[float]:
    """A normalised (y0, x0, y1, x1) box of the letterboxed frame -> pixels of the original image."""
    top, left, new_h, new_w = geometry
    y0, x0, y1, x1 = (float(v) * side for v in box)
    sy, sx = height / new_h, width / new_w
    return [round(min(max((y0 - top) * sy, 0.0), height), 2), round(min(max((x0 - left) * sx, 0.0), width), 2),
            round(min(max((y1 - top) * sy, 0.0), height), 2), round(min(max((x1 - left) * sx, 0.0), width), 2)]


# --------------------------------------------------------------------------- outputs


def output_file(stem: Path, suffix: str) -> Path:
    """``stem`` + ``suffix`` without `Path.with_suffix` (which would cut ``john.smith`` to ``john``)."""
    return stem.parent / (stem.name + suffix)


def _output_keys(stem: Path) -> list[str]:
    # Case-folded so that names differing only in case count as one (macOS, Windows).
    return [str(output_file(stem, suffix)).casefold() for suffix in (*IMAGE_SUFFIXES, REPORT_SUFFIX)]


def natural_stem(path: Path, root: Path) -> Path:
    """``a/b.jpg`` -> ``a/b``: the relative path (just the name when `root` is a file) minus its last suffix."""
    relative = path.relative_to(root) if path != root else Path(path.name)
    return relative.parent / relative.stem


def output_stems(paths: list[Path], root: Path, *, taken=()) -> dict[Path, Path]:
    """OUT-relative stem per input, such that no two inputs share any output file.

    An input keeps its natural stem (`natural_stem`) when none of its output names
    (`IMAGE_SUFFIXES`, `REPORT_SUFFIX`) is another input's output name or in `taken`
    (OUT-relative paths that must never be written: ``summary.json``, input files
    lying inside OUT); case is ignored. The others, in sorted order, take their whole
    file name (``a/b.jpg`` -> ``a/b_jpg``), then ``a/b_jpg_2``, ``_3``, ... until
    every output name is free: deterministic for a given set of inputs.
    """
    used = {str(Path(t)).casefold() for t in taken}
    natural = {p: natural_stem(p, root) for p in sorted(paths)}
    counts: dict[str, int] = {}
    for stem in natural.values():
        for key in _output_keys(stem):
            counts[key] = counts.get(key, 0) + 1
    stems = {p: s for p, s in natural.items()
             if all(counts[k] == 1 and k not in used for k in _output_keys(s))}
    used.update(k for s in stems.values() for k in _output_keys(s))
    for path, stem in natural.items():
        if path in stems:
            continue
        base = stem.with_name(path.name.replace(".", "_"))
        candidate, number = base, 1
        while any(k in used for k in _output_keys(candidate)):
            number += 1
            candidate = base.with_name(f"{base.name}_{number}")
        stems[path] = candidate
        used.update(_output_keys(candidate))
    return {p: stems[p] for p in paths}


def stale_natural_outputs(stems: dict[Path, Path], root: Path, *, taken=()) -> list[Path]:
    """OUT-relative outputs (images and report) at the natural name of a renamed input
    that no current input claims (an earlier run, without the clash, wrote them there)."""
    claimed = {k for s in stems.values() for k in _output_keys(s)} | {str(Path(t)).casefold() for t in taken}
    stale = []
    for path, stem in stems.items():
        natural = natural_stem(path, root)
        if natural != stem:
            stale.extend(output_file(natural, suffix) for suffix in (*IMAGE_SUFFIXES, REPORT_SUFFIX)
                         if str(output_file(natural, suffix)).casefold() not in claimed)
    return sorted(set(stale))


def exit_status(counts: dict) -> int:
    """0 only when every file is private (trained networks); 1 when nothing was processed; else 3."""
    processed = counts["private"] + counts["fallback"] + counts["untrained"] + counts.get("weakened", 0)
    if processed == 0:
        return EXIT_FAILED
    partial = counts["fallback"] or counts["rejected"] or counts["untrained"] or counts.get("weakened", 0)
    return EXIT_PARTIAL if partial else EXIT_OK


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


def file_report(path: Path, written: Path, diag: dict, i: int, *, config, method: str, judges: list[str],
                geometry, side: int, size: tuple[int, int], notes: list[str], untrained: list[str],
                weakened: list[str] = ()) -> dict:
    """The JSON report of one processed file (row `i` of the step's diagnostics).

    Every float goes through `_finite_or_none`, so a NaN score, similarity or box
    becomes ``null`` and the report can always be written (``allow_nan=False``).
    With untrained networks the status is ``untrained`` and ``success`` is False
    whatever the step did (``step_status``/``step_success`` keep that, for tests).
    """
    height, width = size
    step_success = bool(diag["success"][i])
    detected = bool(diag["detected"][i])
    # A second face makes the step pixelate the whole frame (it replaces one face per frame).
    multiple = bool(diag["multiple_faces"][i]) if "multiple_faces" in diag else False
    step_status = "private" if step_success else (
        "fallback_face_pixelated" if detected else "fallback_frame_pixelated")
    box = np.asarray(diag["box"][i], np.float64)
    report = {
        "input": str(path), "output": str(written),
        "status": "untrained" if untrained else "weakened_settings" if weakened else step_status, "method": method,
        "fallback": not step_success, "success": step_success and not untrained and not weakened,
        "step_status": step_status, "step_success": step_success, "detected": detected,
        "multiple_faces": multiple,
        "valid": bool(diag["valid"][i]), "deidentified": bool(diag["deidentified"][i]),
        "iterations": int(diag["iterations"][i]), "max_iters": int(config.deid.max_iters),
        "threshold": float(config.recognizer.threshold),
        "similarities": {a: _finite_or_none(diag["similarities"][i, j]) for j, a in enumerate(judges)},
        "score": _finite_or_none(diag["score"][i]),
        "box": box_to_pixels(box, geometry, side, height, width) if np.isfinite(box).all() else None,
        "box_format": "(y0, x0, y1, x1) pixels of the input image",
        "size": [height, width], "read_notes": notes, "untrained_networks": untrained,
        "weakened_settings": list(weakened),
        "redetected": bool(diag["redetected"][i]) if "redetected" in diag else None,
        "frame_similarities": ({a: _finite_or_none(diag["frame_similarities"][i, j]) for j, a in enumerate(judges)}
                               if "frame_similarities" in diag else None),
    }
    why = []
    if untrained:
        why.append(f"untrained (random) networks: {', '.join(untrained)}; not private whatever the step did")
    if weakened:
        why.append(f"privacy settings weaker than the defaults: {'; '.join(weakened)}; not private whatever "
                   f"the step did")
    if not step_success:
        if not detected:
            why.append("more than one face found (whole frame pixelated)" if multiple
                       else "no face found (whole frame pixelated)")
        if detected and not diag["valid"][i]:
            why.append("generated face not valid (non-finite or too dark)")
        if detected and not diag["deidentified"][i]:
            why.append(f"a judge still recognised the face after {int(diag['iterations'][i])} iterations")
    if why:
        report["reason"] = "; ".join(why)
    return report


# --------------------------------------------------------------------------- the command


def main(args) -> int:


    started = time.perf_counter()
    config = config_from_args(args)
    method = args.method or config.deid.method
    batch_size = int(args.batch_size if args.batch_size is not None else config.deid.batch_size)
    if batch_size < 1:   # --batch-size is checked by argparse; this is config.deid.batch_size
        print(f"jaxdeid deidentify: error: batch size must be at least 1, got {batch_size}", file=sys.stderr)
        return EXIT_USAGE
    in_root, out_root = Path(args.input), Path(args.output)
    side = int(config.data.scene_resolution)
    max_pixels = int(config.data.max_image_pixels)

    in_resolved, out_resolved = in_root.resolve(), out_root.resolve()
    if in_resolved == out_resolved:
        print(f"jaxdeid deidentify: error: OUT must differ from IN ({in_root}): the outputs would "
              f"overwrite the inputs", file=sys.stderr)
        return EXIT_USAGE
    # OUT inside IN: never re-read our own outputs. IN inside OUT: nothing to exclude.
    exclude = out_root if in_resolved in out_resolved.parents else None
    good, rejected = scan_folder(in_root, max_pixels=max_pixels, deep=False, exclude=exclude,
                                 progress_desc=f"checking {in_root}")
    everything = sorted(good + [p for p, _ in rejected])
    # IN inside OUT: an output must never land on an input file.
    inputs_absolute = [in_resolved / p.relative_to(in_root) for p in everything]   # links not followed
    taken = [SUMMARY_NAME] + [p.relative_to(out_resolved) for p in inputs_absolute if out_resolved in p.parents]
    stems = output_stems(everything, in_root, taken=taken)
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        (out_root / SUMMARY_NAME).unlink(missing_ok=True)   # a crash below must not leave the last run's summary
        for stale in stale_natural_outputs(stems, in_root, taken=taken):
            if not (out_root / stale).is_dir():
                (out_root / stale).unlink(missing_ok=True)
    except OSError as err:
        print(f"jaxdeid deidentify: error: cannot prepare {out_root} ({err})", file=sys.stderr)
        return EXIT_FAILED

    def remove_outputs(path: Path, keep: Path | None = None) -> None:
        stem = out_root / stems[path]
        for suffix in IMAGE_SUFFIXES:
            target = output_file(stem, suffix)
            if target != keep and (target.is_file() or target.is_symlink()):   # never a folder of the user's
                target.unlink()

    def reject(path: Path, reason: str) -> None:
        """Reports `path` as rejected and removes any image an earlier run wrote for it."""
        print(f"rejected: {path}: {reason}", file=sys.stderr)
        stem = out_root / stems[path]
        try:
            remove_outputs(path)
            _write_report(output_file(stem, REPORT_SUFFIX),
                          {"input": str(path), "output": None, "status": "rejected", "reason": reason,
                           "fallback": False, "success": False})
        except OSError as err:
            print(f"error: {path}: cannot update its outputs in {out_root} ({err})", file=sys.stderr)

    for path, reason in rejected:
        reject(path, reason)
    counts = {"private": 0, "fallback": 0, "untrained": 0, "weakened": 0, "rejected": len(rejected)}
    weakened = weakened_settings(config)

    def write_summary(untrained: list[str]) -> None:
        _write_report(out_root / SUMMARY_NAME, {
            "input": str(in_root), "output": str(out_root), "method": method, "preset": config.preset,
            "files": sum(counts.values()), **counts,
            "rejected_files": [{"path": str(p), "reason": r} for p, r in rejected],
            "untrained_networks": untrained, "weakened_settings": weakened,
            "wall_s": round(time.perf_counter() - started, 2)})

    if not good:
        write_summary([])
        print(f"jaxdeid deidentify: error: no usable image in {in_root} ({len(rejected)} rejected)", file=sys.stderr)
        return EXIT_FAILED

    try:
        params, untrained = load_params(config, method, allow_untrained=args.allow_untrained)
    except FileNotFoundError as err:
        print(f"jaxdeid deidentify: error: {err}", file=sys.stderr)
        return EXIT_FAILED
    if untrained:
        print(f"warning: running with UNTRAINED (random) {', '.join(untrained)} (--allow-untrained); "
              f"no output is private: every image is written as *{UNTRAINED_SUFFIX}", file=sys.stderr)
    elif weakened:
        print(f"warning: privacy settings weaker than the {config.preset} defaults ({'; '.join(weakened)}); "
              f"no output is private: every image is written as *{WEAKENED_SUFFIX}", file=sys.stderr)

    step = make_jitted_private_step(config, method)
    judges = list(step.judges) if hasattr(step, "judges") else list(config.recognizer.judges)
    base_key = jax.random.PRNGKey(int(config.seed))

    def file_rejected(path: Path, reason: str) -> None:
        reject(path, reason)
        rejected.append((path, reason))
        counts["rejected"] += 1

    bar = progress(total=len(good), desc=f"deidentify ({method})")
    for batch_index, start in enumerate(range(0, len(good), batch_size)):
        items = []
        for path in good[start:start + batch_size]:
            try:
                image, notes = read_image(path, max_pixels=max_pixels)
            except ImageError as err:
                file_rejected(path, err.reason)
                bar.update(1)
                continue
            frame, geometry = letterbox(image, side)
            items.append((path, image, notes, frame, geometry))
        if not items:
            continue
        key = jax.random.fold_in(base_key, batch_index)
        # The evaluation's padded-batch runner: every call has the compiled batch size.
        [(private, diag)] = run_padded(lambda x: step(params, x, key), np.stack([item[3] for item in items]),
                                       batch_size)
        for i, (path, image, notes, _, geometry) in enumerate(items):
            height, width = image.shape[:2]
            # Back to the original size: the region the step replaced (its own mask) is the step's
            # output, every pixel the mask touches even partly after resizing, so no input pixel
            # survives inside it; the rest is the untouched input (np.where: nothing the step
            # produced outside its region can reach the file).
            mask = unletterbox(np.repeat(diag["replaced_mask"][i][..., None], 3, axis=-1), geometry, height, width)
            result = np.where(mask > 0, unletterbox(private[i], geometry, height, width), image)
            success = bool(diag["success"][i])
            stem = out_root / stems[path]
            written = output_file(stem, UNTRAINED_SUFFIX if untrained else WEAKENED_SUFFIX if weakened else
                                  PRIVATE_SUFFIX if success else FALLBACK_SUFFIX)
            report = file_report(path, written, diag, i, config=config, method=method, judges=judges,
                                 geometry=geometry, side=side, size=(height, width), notes=notes,
                                 untrained=untrained, weakened=weakened)
            try:
                remove_outputs(path, keep=written)   # first: a failed write must not leave a stale private file
                write_image(written, result)
                _write_report(output_file(stem, REPORT_SUFFIX), report)
            except (OSError, ValueError) as err:     # ValueError: non-finite pixels (write_image refuses them)
                file_rejected(path, f"cannot write its output {written} ({type(err).__name__}: {err})")
                bar.update(1)
                continue
            counts["untrained" if untrained else "weakened" if weakened else "private" if success else "fallback"] += 1
            if untrained or weakened or not success:
                print(f"{report['status']}: {path}: {report['reason']} -> {written.name}", file=sys.stderr)
            bar.update(1)
    bar.close()

    write_summary(untrained)
    print(f"deidentify ({method}): {counts['private']} private, {counts['fallback']} fallback (pixelated, "
          f"flagged {FALLBACK_SUFFIX}), {counts['untrained']} untrained (*{UNTRAINED_SUFFIX}), "
          f"{counts['weakened']} with weakened settings (*{WEAKENED_SUFFIX}), "
          f"{counts['rejected']} rejected; reports in {out_root}")
    status = exit_status(counts)
    if status == EXIT_FAILED:
        print("jaxdeid deidentify: error: no usable image in the input folder", file=sys.stderr)
    return status
