"""Preview images of SynthFaces: identities x samples with their low-light pairs, and scenes with boxes.

Used by ``jaxdeid data preview``; the images go in the README and in results/.
Pillow only (no plotting library), so the pixels shown are exactly the data's pixels,
enlarged with nearest-neighbour sampling.
"""

from __future__ import annotations

import math
import time

import numpy as np
from PIL import Image, ImageDraw

from .lowlight import darken_np
from .synthfaces import render_faces, render_scenes

_GAP = 6            # pixels between (normal, low-light) pairs and between rows
_PAIR_GAP = 1       # pixels between the two images of one pair
_PAPER = (245, 245, 242)
_BOX_COLOUR = (255, 230, 0)


def _enlarge(images: np.ndarray, scale: int) -> np.ndarray:
    return images if scale == 1 else images.repeat(scale, axis=-3).repeat(scale, axis=-2)


def face_grid(num_identities: int, per_identity: int, resolution: int, lowlight_cfg, seed: int = 0,
              scale: int | None = None, first_identity: int = 0):
    """Rows of identities; each row holds `per_identity` (normal, low-light) pairs.

    Returns (PIL image, stats) where stats has the render speed.
    """
    ids = np.repeat(np.arange(first_identity, first_identity + num_identities), per_identity)
    samples = np.tile(np.arange(per_identity), num_identities)
    faces = render_faces(ids, samples, resolution, seed)
    # Time a second pass (the first one includes warm-up): wall clock, and CPU time of this process.
    wall, cpu = time.perf_counter(), time.process_time()
    render_faces(ids, samples, resolution, seed)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    normal = faces.astype(np.float32) / 255.0
    low = darken_np(np.random.default_rng(seed), normal, lowlight_cfg)
    low = np.clip(np.rint(low * 255), 0, 255).astype(np.uint8)
    scale = scale or max(1, math.ceil(64 / resolution))
    side = resolution * scale
    faces, low = _enlarge(faces, scale), _enlarge(low, scale)
    pair_w = 2 * side + _PAIR_GAP
    width = per_identity * pair_w + (per_identity + 1) * _GAP
    height = num_identities * side + (num_identities + 1) * _GAP
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = _PAPER
    for row in range(num_identities):
        y = _GAP + row * (side + _GAP)
        for col in range(per_identity):
            k = row * per_identity + col
            x = _GAP + col * (pair_w + _GAP)
            canvas[y:y + side, x:x + side] = faces[k]
            canvas[y:y + side, x + side + _PAIR_GAP:x + pair_w] = low[k]
    stats = {"faces": int(len(ids)), "resolution": resolution, "render_wall_s": wall, "render_cpu_s": cpu,
             "faces_per_s": len(ids) / max(wall, 1e-9), "faces_per_cpu_s": len(ids) / max(cpu, 1e-9)}
    return Image.fromarray(canvas), stats


def scene_grid(num_scenes: int, scene_resolution: int, seed: int = 0, columns: int = 4,
               first_identity: int = 0):
    """Scenes (one face each) with their true boxes drawn; returns (PIL image, stats)."""
    ids = np.arange(first_identity, first_identity + num_scenes)
    samples = np.zeros(num_scenes, np.int64)
    wall, cpu = time.perf_counter(), time.process_time()
    scenes, boxes = render_scenes(ids, samples, scene_resolution, seed)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    scale = max(1, math.ceil(192 / scene_resolution))
    scenes = _enlarge(scenes, scale)
    side = scene_resolution * scale
    rows = math.ceil(num_scenes / columns)
    canvas = Image.new("RGB", (columns * side + (columns + 1) * _GAP, rows * side + (rows + 1) * _GAP), _PAPER)
    draw = ImageDraw.Draw(canvas)
    for k in range(num_scenes):
        x = _GAP + (k % columns) * (side + _GAP)
        y = _GAP + (k // columns) * (side + _GAP)
        canvas.paste(Image.fromarray(scenes[k]), (x, y))
        y0, x0, y1, x1 = (boxes[k] * side).tolist()
        draw.rectangle([x + x0, y + y0, x + x1 - 1, y + y1 - 1], outline=_BOX_COLOUR, width=max(1, scale))
    stats = {"scenes": int(num_scenes), "scene_resolution": scene_resolution, "render_wall_s": wall,
             "render_cpu_s": cpu, "scenes_per_cpu_s": num_scenes / max(cpu, 1e-9)}
    return canvas, stats
