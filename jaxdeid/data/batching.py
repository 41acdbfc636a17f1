"""Deterministic batching for JAX: which examples go into batch number `position`.

Every sampler here is a *pure function of (seed, position)*. The shared training
loop (`jaxdeid.train.run`) checkpoints only the integer data position, so a run
killed at step k and restarted sees exactly the batches it would have seen.

* `batch_indices`: the usual epoch-wise sampling without replacement. The stream
  of examples is epoch 0's permutation, then epoch 1's, ...; batch ``p`` is items
  ``p*B .. p*B+B-1`` of that stream, so a batch may straddle two epochs.
* `pk_batch_indices`: P identities × K images each, for online semi-hard triplet mining
  (recognizers, docs/method.md §1 row 7). Identities are drawn epoch-wise like examples, so
  every person is visited equally often (up to the ``len(ids) % P`` who sit out
  each epoch, a different few every time); images per identity without
  replacement when it has at least K, with replacement otherwise.
* `make_batch_fn` / `iterate_batches`: turn a source (`get_source`) into the
  ``batch_fn(position)`` the training loop wants, or into a prefetching iterator.

We do not use grain: its samplers need a record-count-driven pipeline and it brings
no speed here (decoding is PIL/NumPy in threads, rendering is NumPy), while this
module is ~100 lines and exactly resumable by construction.
"""

from __future__ import annotations

import concurrent.futures
import zlib
from typing import Callable, Iterator

import numpy as np

# Distinct stream tags so the example sampler and the P×K sampler never share draws.
_TAG_EPOCH = 0x5EED
_TAG_PK = 0x7A1B


def _epoch_permutation(n: int, seed: int, epoch: int, tag: int = _TAG_EPOCH) -> np.ndarray:
    return np.random.default_rng([tag, int(seed) & 0xFFFFFFFF, int(epoch)]).permutation(n)


def batch_indices(n: int, batch_size: int, seed: int, position: int) -> np.ndarray:
    """Indices (int64 [batch_size]) of batch number `position` of an epoch-wise shuffled stream."""
    if n <= 0:
        raise ValueError("batch_indices: the data set is empty (n = 0)")
    if batch_size <= 0 or position < 0:
        raise ValueError(f"batch_indices: need batch_size > 0 and position >= 0, got {batch_size}, {position}")
    start = int(position) * int(batch_size)
    stop = start + int(batch_size)
    out = np.empty(batch_size, np.int64)
    filled = 0
    for epoch in range(start // n, (stop - 1) // n + 1):
        perm = _epoch_permutation(n, seed, epoch)
        lo = max(start, epoch * n) - epoch * n
        hi = min(stop, (epoch + 1) * n) - epoch * n
        out[filled:filled + hi - lo] = perm[lo:hi]
        filled += hi - lo
    return out


_GROUP_CACHE: dict[tuple, tuple[np.ndarray, list[np.ndarray]]] = {}


def _groups(labels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """(identity ids present, example indices per identity), memoised by content."""
    labels = np.ascontiguousarray(labels)
    key = (labels.shape, labels.dtype.str, zlib.crc32(labels.view(np.uint8)))
    hit = _GROUP_CACHE.get(key)
    if hit is None:
        order = np.argsort(labels, kind="stable")
        ids, starts = np.unique(labels[order], return_index=True)
        hit = (ids, np.split(order.astype(np.int64), starts[1:]))
        if len(_GROUP_CACHE) > 16:
            _GROUP_CACHE.clear()
        _GROUP_CACHE[key] = hit
    return hit


def pk_batch_indices(labels, num_identities_per_batch: int, images_per_identity: int,
                     seed: int, position: int) -> np.ndarray:
    """P identities × K images each (int64 [P*K], identity-major) for triplet training.

    The P identities of batch ``position`` are distinct (drawn epoch-wise over the
    identities present in `labels`, ``len(ids) // P`` batches per epoch); an identity with fewer than K images is
    sampled with replacement, so every batch has exactly P*K entries.
    """
    labels = np.asarray(labels)
    P, K = int(num_identities_per_batch), int(images_per_identity)
    ids, members = _groups(labels)
    if P > len(ids):
        raise ValueError(f"pk_batch_indices: P={P} identities per batch but the split has only {len(ids)}")
    if P <= 0 or K <= 0:
        raise ValueError(f"pk_batch_indices: need P > 0 and K > 0, got P={P}, K={K}")
    # Identity epochs are cut into whole batches (the last len(ids) % P of each epoch's
    # permutation sit out that epoch), so a batch never straddles two epochs and its P
    # people are always distinct.
    per_epoch = len(ids) // P
    epoch, slot = divmod(int(position), per_epoch)
    chosen = _epoch_permutation(len(ids), seed, epoch, tag=_TAG_PK)[slot * P:(slot + 1) * P]
    rng = np.random.default_rng([_TAG_PK, int(seed) & 0xFFFFFFFF, int(position)])
    out = np.empty(P * K, np.int64)
    for slot, group in enumerate(chosen):
        pool = members[group]
        out[slot * K:(slot + 1) * K] = rng.choice(pool, size=K, replace=len(pool) < K)
    return out


def make_batch_fn(source, batch_size: int, seed: int, *, pk: tuple[int, int] | None = None,
                  scenes: bool = False) -> Callable[[int], dict[str, np.ndarray]]:
    """``batch_fn(position) -> dict of numpy arrays`` for `jaxdeid.train.Task`.

    `pk=(P, K)` samples P×K identity batches (batch_size is then ignored);
    `scenes=True` returns ``source.scenes(...)`` (full frames with boxes).
    """
    fetch = source.scenes if scenes else source.get

    def batch_fn(position: int) -> dict[str, np.ndarray]:
        if pk is not None:
            indices = pk_batch_indices(source.labels, pk[0], pk[1], seed, position)
        else:
            indices = batch_indices(len(source), batch_size, seed, position)
        return fetch(indices)

    return batch_fn


def iterate_batches(batch_fn: Callable[[int], dict], start_position: int = 0, stop_position: int | None = None,
                    *, prefetch: int = 2) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Yields ``(position, batch)`` from `start_position`, preparing the next batches in threads.

    Decoding (PIL, zlib) and NumPy rendering release the GIL, so a couple of
    background threads keep the accelerator fed without a separate process.
    """
    position = int(start_position)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, prefetch)) as pool:
        pending: list[tuple[int, concurrent.futures.Future]] = []
        while True:
            while len(pending) < max(1, prefetch) and (stop_position is None or
                                                       position + len(pending) < stop_position):
                p = position + len(pending)
                pending.append((p, pool.submit(batch_fn, p)))
            if not pending:
                return
            p, future = pending.pop(0)
            yield p, future.result()
            position = p + 1
