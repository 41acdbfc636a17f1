"""Bootstrap confidence intervals over identities (docs/method.md §4.7).

Pairs and probes of one person are correlated (same face, same recognizer quirks), so
resampling individual pairs would understate the uncertainty. We resample *identities*
with replacement and recompute the metric from all the items (pairs or probes) of the
drawn identities, an identity drawn twice contributing its items twice. The interval is
the percentile interval of the resampled metric. Everything is deterministic from a seed.

Which identity owns an item: a probe belongs to its label; a verification pair belongs to
the identity of its first image (column 0 of ``make_pairs``), so an impostor pair moves
with its probe's identity.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .verification import DEFAULT_THRESHOLD, verification_rates
from .identification import identify

Statistic = Callable[[np.ndarray], "float | np.ndarray"]


def bootstrap_distribution(statistic: Statistic, item_identities: np.ndarray, num_resamples: int = 1000,
                           seed: int = 0) -> np.ndarray:
    """The metric on ``num_resamples`` identity resamples: [num_resamples, ...] float64.

    ``statistic(indices)`` gets int64 indices into the items (with repeats) and returns a
    float or a 1-D array of floats (several metrics from one resample).
    """
    item_identities = np.asarray(item_identities).reshape(-1)
    order = np.argsort(item_identities, kind="stable")
    _, starts, counts = np.unique(item_identities[order], return_index=True, return_counts=True)
    groups = [order[s:s + c] for s, c in zip(starts, counts)]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(num_resamples):
        drawn = rng.integers(0, len(groups), len(groups))
        indices = np.concatenate([groups[k] for k in drawn])
        values.append(np.asarray(statistic(indices), np.float64))
    return np.stack(values)


def bootstrap_ci(statistic: Statistic, item_identities: np.ndarray, num_resamples: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> tuple[float, float] | tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval ``(low, high)`` over identities; 95 % by default.

    Resamples where the statistic is undefined (NaN, e.g. no genuine pair drawn) are left
    out; if all are, the interval is (nan, nan). Vector statistics give vector bounds.
    """
    values = bootstrap_distribution(statistic, item_identities, num_resamples, seed)
    tail = 100.0 * (1.0 - confidence) / 2.0
    if np.all(np.isnan(values)):
        nan = np.full(values.shape[1:], np.nan)
        low, high = nan, nan
    else:
        low, high = np.nanpercentile(values, [tail, 100.0 - tail], axis=0)
    if np.ndim(low) == 0:
        return float(low), float(high)
    return low, high


def verification_ci(similarities: np.ndarray, is_genuine: np.ndarray, pair_identities: np.ndarray,
                    threshold: float = DEFAULT_THRESHOLD, keys: Sequence[str] = ("tpr", "fpr", "accuracy"),
                    num_resamples: int = 1000, seed: int = 0,
                    confidence: float = 0.95) -> dict[str, tuple[float, float]]:
    """Bootstrap intervals for ``verification_rates`` keys; ``pair_identities`` = identity of each pair's first image."""
    similarities, is_genuine = np.asarray(similarities), np.asarray(is_genuine, bool)

    def statistic(indices: np.ndarray) -> np.ndarray:
        rates = verification_rates(similarities[indices], is_genuine[indices], threshold)
        return np.array([rates[k] for k in keys], np.float64)

    low, high = bootstrap_ci(statistic, pair_identities, num_resamples, seed, confidence)
    return {k: (float(lo), float(hi)) for k, lo, hi in zip(keys, low, high)}


def identification_ci(probe_embeddings: np.ndarray, probe_labels: np.ndarray, gallery: np.ndarray,
                      gallery_labels: np.ndarray, threshold: float = DEFAULT_THRESHOLD,
                      keys: Sequence[str] = ("tpr_1n", "fpr_1n"), num_resamples: int = 1000, seed: int = 0,
                      confidence: float = 0.95) -> dict[str, tuple[float, float]]:
    """Bootstrap intervals for ``identification_rates`` keys, resampling probe identities (gallery fixed).

    The gallery search runs once; each resample only re-averages the per-probe outcomes.
    """
    probe_labels = np.asarray(probe_labels).reshape(-1)
    best_label, _, assigned = identify(probe_embeddings, gallery, gallery_labels, threshold)
    correct = best_label == probe_labels
    outcomes = {"tpr_1n": assigned & correct, "fpr_1n": assigned & ~correct, "reject_1n": ~assigned,
                "rank1": correct}
    per_probe = np.stack([outcomes[k] for k in keys], axis=1).astype(np.float64)

    def statistic(indices: np.ndarray) -> np.ndarray:
        return per_probe[indices].mean(axis=0)

    low, high = bootstrap_ci(statistic, probe_labels, num_resamples, seed, confidence)
    return {k: (float(lo), float(hi)) for k, lo, hi in zip(keys, low, high)}
