"""Sample grids: fixed latents and PNG writing for generator snapshots."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image


def fixed_latents(z_dim: int, n: int, seed: int = 1234) -> np.ndarray:
    """`n` z vectors that depend only on (z_dim, n, seed), so grids from different steps are comparable."""
    return np.random.default_rng(seed).standard_normal((n, z_dim)).astype(np.float32)


def grid_image(images: np.ndarray, columns: int | None = None, pad: int = 1) -> np.ndarray:
    """Tiles float images [N, H, W, 3] in [0, 1] into one uint8 image (near-square grid, white gutters)."""
    images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    n, h, w, c = images.shape
    columns = columns or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / columns))
    canvas = np.ones((rows * (h + pad) + pad, columns * (w + pad) + pad, c), np.float32)
    for i, img in enumerate(images):
        r, q = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        canvas[y:y + h, x:x + w] = img
    return np.round(canvas * 255.0).astype(np.uint8)


def save_png(image: np.ndarray, path) -> Path:

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path
