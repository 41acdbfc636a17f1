"""The recognizers' data: one source per (data config, split), the train split optionally in memory.

Training (`train.py`) and evaluation (`evaluate.py`) both read their images through
`get_split`, so a split is built (and, for training, loaded) once per process.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
from typing import Any

import numpy as np

from ..data import get_source

_SOURCES: dict[tuple[str, str, bool], Any] = {}


class InMemorySource:
    """A split held in host memory, so a training step never waits for rendering or decoding.

    Same surface as the data sources (`len`, `labels`, `num_identities`, `get`). Images
    are stored as uint8 when that is exact (SynthFaces and stored PNGs are 8-bit), else float32.
    """

    def __init__(self, source, workers: int = 0, chunk: int = 512):
        self.labels = np.asarray(source.labels)
        self.num_identities = source.num_identities
        starts = list(range(0, len(source), chunk))
        first = source.get(np.arange(0, min(chunk, len(source))))["image"]
        exact = np.array_equal(np.round(first * 255.0) / 255.0, first.astype(np.float64).astype(np.float32))
        store = (lambda x: np.round(x * 255.0).astype(np.uint8)) if exact else (lambda x: x.astype(np.float32))
        self._images = np.empty((len(source), *first.shape[1:]), np.uint8 if exact else np.float32)
        self._images[:len(first)] = store(first)
        rest = [s for s in starts if s >= len(first)]
        workers = workers or os.cpu_count() or 1
        # Worker processes pay off for sources that render or decode on read; a prepared tfds
        # split reads stored records (and its builder handles cannot be pickled to a worker).
        if rest and workers > 1 and getattr(source, "renders_on_read", True):
            # Rendering is numpy-bound Python; separate processes (spawned: JAX threads do not survive fork).
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                parts = pool.map(_get_images, [source] * len(rest), [np.arange(s, min(s + chunk, len(source)))
                                                                     for s in rest])
                for s, images in zip(rest, parts):
                    self._images[s:s + len(images)] = store(images)
        else:
            for s in rest:
                self._images[s:s + chunk] = store(source.get(np.arange(s, min(s + chunk, len(source))))["image"])
        self._scale = np.float32(1.0 / 255.0) if exact else None

    def __len__(self) -> int:
        return len(self.labels)

    def get(self, indices) -> dict[str, np.ndarray]:
        indices = np.asarray(indices, np.int64)
        images = self._images[indices]
        images = images.astype(np.float32) / np.float32(255.0) if self._scale is not None else images
        return {"image": images, "label": self.labels[indices]}


def _get_images(source, indices):
    return source.get(indices)["image"]


def get_split(config, split: str):
    """The data source of `split`, built once per (data config, split).

    The train split is held in memory (`InMemorySource`) when ``recognizer.preload_train``
    is set, which is what makes accelerator runs fast (no per-step rendering or decoding).
    """
    preload = split == "train" and bool(config.recognizer.preload_train)
    key = (config.data.to_json(), split, preload)
    if key not in _SOURCES:
        source = get_source(config, split)
        if preload:
            t0 = time.perf_counter()
            source = InMemorySource(source, workers=config.recognizer.preload_workers)
            print(f"recognizer: {split} split ({len(source)} images) loaded into memory in "
                  f"{time.perf_counter() - t0:.1f}s", flush=True)
        _SOURCES[key] = source
    return _SOURCES[key]
