"""Face detection under low light: the mechanism behind the paper's Figure 6 (issue 4, item 5).

    python -m jaxdeid.reproduce.detection --preset small     # from the shipped weights: ~3 min on 2 CPU cores
    python -m jaxdeid.reproduce.detection --preset smoke     # tiny networks, a few minutes on 2 CPU cores

The paper explains its baselines' failures (Fig. 6) by their face cropping network
missing faces in low light, and its own 100 % by the enhancement network restoring
them. This script measures that instead of assuming it. It trains what is missing
(the cropping network, `jaxdeid train crop`, on SynthFaces scenes of which a fraction
``crop.enhanced_fraction`` is darkened and enhanced, and the light enhancement network, `jaxdeid train enhance`), then runs the detector on
the test scenes in three versions:

  normal    the scenes as rendered;
  lowlight  the same scenes darkened with LLNet's synthesis (one fixed draw per scene);
  enhanced  those low-light scenes passed through the enhancement network.

A scene counts as detected when the face score is at least ``crop.score_threshold``
and the box overlaps the true box with IoU >= ``crop.iou_threshold`` (paper §4.2, Fig. 6).

It also measures the private step's multiple-face rule: each test scene gets a second
face (the next scene's, a quarter of the frame a side, in the corner farthest from the
first), and ``two_faces`` reports how often the detector's best score outside the first
face's aligned square reaches the step's second-face threshold (the frame is then
pixelated whole), on the normal and on the enhanced low-light versions.

Writes ``results/detection.json`` = {"normal", "lowlight", "enhanced", "two_faces",
"provenance"} (rates in [0, 1]; counts, mean IoU and mean score sit in the provenance)
and ``results/detection_examples.png``.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np
from PIL import Image, ImageDraw

from jaxdeid.crop import detection_rate, detection_stats, load_trained as load_detector, make_task as make_crop_task
from jaxdeid.crop.detector import decode
from jaxdeid.crop.ops import square_boxes
from jaxdeid.data import get_source
from jaxdeid.data.lowlight import darken
from jaxdeid.light import load_trained as load_light, train as train_light
from jaxdeid.reproduce.common import parse_script_flags
from jaxdeid.results import provenance, write_json, write_png
from jaxdeid.store import shipped
from jaxdeid.train import run
from jaxdeid.train.loop import read_metrics

VERSIONS = ("normal", "lowlight", "enhanced")


def _enhance(model, variables, batch_index, frames):
    """Transform for `detection_stats`: the light enhancement network (component 1) on whole frames."""
    del batch_index
    return jax.numpy.clip(model.apply(variables, frames), 0.0, 1.0)


def darken_scenes(frames: np.ndarray, lowlight_cfg, seed: int, batch_size: int) -> np.ndarray:
    """One fixed LLNet draw per scene (key = seed and scene index), so every version sees the same darkness."""

    @jax.jit
    def dark(key, batch):
        keys = jax.random.split(key, batch.shape[0])
        return jax.vmap(lambda k, x: darken(k, x, lowlight_cfg))(keys, batch)

    base = jax.random.fold_in(jax.random.PRNGKey(seed), 0xD4)
    out = [np.asarray(dark(jax.random.fold_in(base, start), frames[start:start + batch_size]))
           for start in range(0, len(frames), batch_size)]
    return np.concatenate(out)


def ensure_trained(config) -> dict[str, bool]:
    """Trains the enhancer, then the detector (which trains on enhanced scenes too), where neither a
    shipped network nor a finished checkpoint exists; says which it trained."""

    trained_here = {}
    if not shipped(config, "light_enhance", lambda: load_light(config, "enhance")):
        before = read_metrics(config.workdir, "light_enhance")
        train_light(config, "enhance")
        trained_here["enhance"] = len(read_metrics(config.workdir, "light_enhance")) > len(before)
    if not shipped(config, "crop", lambda: load_detector(config)):
        before = read_metrics(config.workdir, "crop")
        run(make_crop_task(config), config.crop.train, config.workdir, seed=config.seed, desc="crop")
        trained_here["crop"] = len(read_metrics(config.workdir, "crop")) > len(before)
    return trained_here


def two_face_scenes(frames: np.ndarray, boxes: np.ndarray, side_fraction: float = 0.25,
                    margin: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test scenes with a second face: scene ``i+1``'s face, scaled to ``side_fraction`` of the
    frame, pasted into scene ``i`` in the corner farthest from its face.

    Returns ``(frames, second_boxes, usable)``; ``usable`` marks the scenes whose second face
    lies wholly outside the first face's aligned square (the region the private step
    replaces), the only ones where a second face can be told apart.
    """

    n, side = frames.shape[0], frames.shape[1]
    out, second = frames.copy(), np.zeros_like(boxes)
    size = int(round(side_fraction * side))
    squares = np.asarray(square_boxes(jax.numpy.asarray(boxes), (side, side), margin))
    usable = np.zeros(n, bool)
    for i in range(n):
        j = (i + 1) % n
        y0, x0, y1, x1 = np.round(boxes[j] * side).astype(int)
        face = jax.image.resize(jax.numpy.asarray(frames[j, y0:y1, x0:x1]), (size, size, 3), "linear")
        cy, cx = 0.5 * (boxes[i, 0] + boxes[i, 2]), 0.5 * (boxes[i, 1] + boxes[i, 3])
        top = 0 if cy > 0.5 else side - size
        left = 0 if cx > 0.5 else side - size
        out[i, top:top + size, left:left + size] = np.asarray(face)
        second[i] = np.asarray([top, left, top + size, left + size], np.float32) / side
        sq = squares[i]
        usable[i] = (second[i, 2] <= sq[0] or second[i, 0] >= sq[2] or second[i, 3] <= sq[1] or second[i, 1] >= sq[3])
    return out, second, usable


def second_face_stats(config, detector, variables, frames: np.ndarray, enhancer=None, batch_size: int = 64):
    """Per frame: the best score and its box, and the best score outside that face's aligned square.

    ``enhancer``: ``(model, variables)`` of the enhancement network run on the frames first, or None.
    """

    margin = float(config.crop.align_margin)
    enhance_model, enhancer_variables = enhancer if enhancer is not None else (None, None)

    @jax.jit
    def run(variables, enhancer_variables, frames):
        if enhance_model is not None:
            frames = jax.numpy.clip(enhance_model.apply(enhancer_variables, frames), 0.0, 1.0)
        return decode(detector.apply(variables, frames, train=False), exclusion_margin=margin)

    parts = [jax.device_get(run(variables, enhancer_variables, frames[s:s + batch_size]))
             for s in range(0, len(frames), batch_size)]
    return {k: np.concatenate([p[i] for p in parts]) for i, k in enumerate(("box", "score", "second_score"))}


def write_examples(path: Path, versions: dict, boxes: np.ndarray, stats: dict, prov: dict, count: int = 6) -> Path:
    """Rows normal / low-light / enhanced; green = true box, red = detected box (with its score)."""

    count = min(count, len(boxes))
    side = versions["normal"].shape[1]
    scale = max(1, 192 // side)
    size, label_w = side * scale, 90
    canvas = Image.new("RGB", (label_w + count * size, len(VERSIONS) * size), "white")
    draw = ImageDraw.Draw(canvas)
    for r, name in enumerate(VERSIONS):
        draw.text((4, r * size + size // 2 - 6), name, fill="black")
        for c in range(count):
            pixels = np.round(np.clip(versions[name][c], 0, 1) * 255).astype(np.uint8)
            tile = Image.fromarray(pixels).resize((size, size), Image.NEAREST)
            tile_draw = ImageDraw.Draw(tile)
            for box, colour in ((boxes[c], (0, 255, 0)), (stats[name]["box"][c], (255, 0, 0))):
                y0, x0, y1, x1 = (np.asarray(box) * size).tolist()
                tile_draw.rectangle([x0, y0, x1, y1], outline=colour)
            tile_draw.text((2, 2), f"{stats[name]['score'][c]:.2f}", fill=(255, 0, 0))
            canvas.paste(tile, (label_w + c * size, r * size))
    return write_png(path, canvas, prov)


def main(argv=None) -> int:
    args, config = parse_script_flags(__doc__, argv, private_evaluation=False, storage_default="config")
    start = time.perf_counter()

    trained_here = ensure_trained(config)
    detector, variables = load_detector(config)

    enhancer, enhancer_variables = load_light(config, "enhance")

    test = get_source(config, "test")
    count = min(len(test), int(config.crop.test_scenes))
    scenes = test.scenes(np.arange(count))
    frames, boxes = np.asarray(scenes["image"], np.float32), np.asarray(scenes["box"], np.float32)
    batch_size = min(count, 64)
    low = darken_scenes(frames, config.lowlight, config.seed, batch_size)

    stats = {
        "normal": detection_stats(detector, variables, frames, boxes, batch_size),
        "lowlight": detection_stats(detector, variables, low, boxes, batch_size),
        "enhanced": detection_stats(detector, variables, low, boxes, batch_size,
                                    transform=functools.partial(_enhance, enhancer),
                                    transform_args=enhancer_variables),
    }
    crop_cfg = config.crop
    rates = {name: detection_rate(stats[name], crop_cfg.iou_threshold, crop_cfg.score_threshold)
             for name in VERSIONS}
    # A second face (paper-independent, the private step's multiple-face rule): how often the
    # detector's best score outside the first face's aligned square reaches the step's threshold.
    two, second_boxes, usable = two_face_scenes(frames, boxes, margin=float(crop_cfg.align_margin))
    two_low = darken_scenes(two, config.lowlight, config.seed + 1, batch_size)
    flag_at = max(float(config.deid.second_face_threshold), float(crop_cfg.score_threshold))
    two_faces = {"scenes": int(usable.sum()), "second_face_side": 0.25, "flag_threshold": flag_at}
    for name, images, enh in (("normal", two, None), ("enhanced", two_low, (enhancer, enhancer_variables))):
        if not usable.any():
            two_faces[name] = None
            continue
        found = second_face_stats(config, detector, variables, images[usable], enhancer=enh, batch_size=batch_size)
        two_faces[name] = {"flagged": float(np.mean(found["second_score"] >= flag_at)),
                           "first_face_found": float(np.mean(found["score"] >= crop_cfg.score_threshold)),
                           "mean_second_score": float(np.mean(found["second_score"]))}
    details = {name: {"detected": int(round(rates[name] * count)),
                      "mean_iou": float(np.mean(stats[name]["iou"])),
                      "mean_score": float(np.mean(stats[name]["score"])),
                      "iou_only_rate": float(np.mean(stats[name]["iou"] >= crop_cfg.iou_threshold))}
               for name in VERSIONS}
    prov = provenance(config.preset, config.seed, time.perf_counter() - start,
                      scenes=count, iou_threshold=crop_cfg.iou_threshold, score_threshold=crop_cfg.score_threshold,
                      detector=f"CenterNet-style (jaxdeid.crop), trained on normal-light scenes and a "
                               f"{float(crop_cfg.enhanced_fraction):.0%} share of enhanced low-light scenes",
                      detector_steps=int(crop_cfg.train.steps), trained_here=trained_here, details=details)
    results = Path(config.results_dir)
    write_json(results / "detection.json", {**rates, "two_faces": two_faces, "provenance": prov})
    enhanced_frames = np.asarray(jax.jit(lambda v, x: _enhance(enhancer, v, 0, x))(
        enhancer_variables, low[:6]))
    write_examples(results / "detection_examples.png",
                   {"normal": frames, "lowlight": low, "enhanced": enhanced_frames}, boxes, stats, prov)
    print(json.dumps({"rates": rates, "details": details, "two_faces": two_faces}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
