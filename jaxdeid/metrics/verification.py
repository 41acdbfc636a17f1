"""Face verification (1:1): pairs, TPR / FPR / accuracy at a threshold, ROC, AUC, TAR@FAR.

Protocol (docs/method.md §4.1-4.3): a recognizer embeds both images of a pair; the pair is
*accepted* ("same person") when the cosine similarity of the L2-normalised embeddings is
>= the threshold (0.3, paper §4.1, Table 1). Over balanced genuine (same identity) and
impostor (different identities) pairs:

    TPR = accepted genuine / genuine          (paper eq. 9, TP / (TP + FN))
    FPR = accepted impostor / impostor        (paper eq. 9, FP / (FP + TN))
    accuracy = (accepted genuine + rejected impostor) / all pairs   (Table 1's "acc")

Everything here runs on the host in numpy: pair counts and ROC lengths are data
dependent, and these are evaluation-time reductions over already-computed scores.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .registry import register_metric

DEFAULT_THRESHOLD = 0.3  # docs/method.md §4.1; also cfg.recognizer.threshold


def _identity_groups(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(identities, counts, starts, order): the indices of identity k are order[starts[k]:starts[k]+counts[k]]."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    order = np.argsort(labels, kind="stable")
    identities, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    return identities, counts, starts, order


def _pick(rng: np.random.Generator, counts: np.ndarray, starts: np.ndarray, order: np.ndarray,
          which: np.ndarray) -> np.ndarray:
    """One uniformly random example index from each identity position in ``which``."""
    offsets = np.floor(rng.random(len(which)) * counts[which]).astype(np.int64)
    return order[starts[which] + offsets]


def make_pairs(labels: np.ndarray, num_pairs: int, seed: int,
               reference_labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic balanced pairs: ``(genuine [num_pairs, 2], impostor [num_pairs, 2])`` int64.

    Identities are drawn uniformly (not weighted by image count, so identities with many
    images do not dominate), then images uniformly within an identity; draws are with
    replacement, so a pair can repeat when the set is small. The same (labels, num_pairs,
    seed) always gives the same pairs.

    Within one set (``reference_labels`` None): both columns index ``labels``; a genuine
    pair is two *different* images of an identity with at least two images; an impostor
    pair is one image each of two different identities.

    Across two sets (e.g. private images vs. clean originals, Table 3): column 0 indexes
    ``labels`` (the probes), column 1 indexes ``reference_labels``. Genuine pairs use an
    identity present in both sets; impostor pairs a probe identity and a different
    reference identity. The two indices may refer to the same underlying photo (a private
    image against its own original), which is exactly the de-identification question.
    """
    if num_pairs < 0:
        raise ValueError(f"num_pairs must be >= 0, got {num_pairs}")
    rng = np.random.default_rng(seed)
    ids_a, counts_a, starts_a, order_a = _identity_groups(labels)
    if reference_labels is None:
        ids_b, counts_b, starts_b, order_b = ids_a, counts_a, starts_a, order_a
    else:
        ids_b, counts_b, starts_b, order_b = _identity_groups(reference_labels)

    # Genuine pairs.
    if reference_labels is None:
        eligible = np.flatnonzero(counts_a >= 2)
        if eligible.size == 0:
            raise ValueError("no identity has two or more images, so no genuine pair exists")
        which = eligible[rng.integers(0, eligible.size, num_pairs)]
        n = counts_a[which]
        first = np.floor(rng.random(num_pairs) * n).astype(np.int64)
        second = np.floor(rng.random(num_pairs) * (n - 1)).astype(np.int64)
        second += second >= first  # skip the first image: two distinct images
        genuine = np.stack([order_a[starts_a[which] + first], order_a[starts_a[which] + second]], axis=1)
    else:
        common, pos_a, pos_b = np.intersect1d(ids_a, ids_b, assume_unique=True, return_indices=True)
        if common.size == 0:
            raise ValueError("the probe and reference sets share no identity, so no genuine pair exists")
        k = rng.integers(0, common.size, num_pairs)
        genuine = np.stack([_pick(rng, counts_a, starts_a, order_a, pos_a[k]),
                            _pick(rng, counts_b, starts_b, order_b, pos_b[k])], axis=1)

    # Impostor pairs: a probe identity, then a reference identity other than it.
    which_a = rng.integers(0, ids_a.size, num_pairs)
    own_in_b = np.minimum(np.searchsorted(ids_b, ids_a[which_a]), ids_b.size - 1)  # where the probe's identity would sit
    has_own = ids_b[own_in_b] == ids_a[which_a]
    choices = ids_b.size - has_own
    if num_pairs and np.any(choices == 0):
        raise ValueError("fewer than two identities, so no impostor pair exists")
    which_b = np.floor(rng.random(num_pairs) * choices).astype(np.int64)
    which_b += has_own & (which_b >= own_in_b)  # skip the probe's own identity
    impostor = np.stack([_pick(rng, counts_a, starts_a, order_a, which_a),
                         _pick(rng, counts_b, starts_b, order_b, which_b)], axis=1)
    return genuine.astype(np.int64), impostor.astype(np.int64)


def pair_scores(embeddings: np.ndarray, genuine: np.ndarray, impostor: np.ndarray,
                reference_embeddings: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of ``make_pairs`` output: ``(similarities [2n], is_genuine [2n])``.

    Column 0 of each pair indexes ``embeddings``; column 1 indexes
    ``reference_embeddings`` (defaults to ``embeddings``).
    """
    reference = embeddings if reference_embeddings is None else reference_embeddings
    a = _l2_normalise(np.asarray(embeddings, np.float64))
    b = _l2_normalise(np.asarray(reference, np.float64))
    pairs = np.concatenate([genuine, impostor], axis=0)
    similarities = np.sum(a[pairs[:, 0]] * b[pairs[:, 1]], axis=-1)
    is_genuine = np.concatenate([np.ones(len(genuine), bool), np.zeros(len(impostor), bool)])
    return similarities, is_genuine


def _l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def _check_scores(similarities: np.ndarray, is_genuine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    similarities = np.asarray(similarities, np.float64).reshape(-1)
    is_genuine = np.asarray(is_genuine, bool).reshape(-1)
    if similarities.shape != is_genuine.shape:
        raise ValueError(f"{similarities.shape[0]} similarities but {is_genuine.shape[0]} genuine flags")
    return similarities, is_genuine


@register_metric("verification", kind="verification", higher_is_better=None)
def verification_rates(similarities: np.ndarray, is_genuine: np.ndarray,
                       threshold: float = DEFAULT_THRESHOLD) -> dict[str, float | int]:
    """1:1 verification at a cosine threshold: TPR, FPR, accuracy and the confusion counts.

    A pair is accepted when similarity >= threshold. ``accuracy`` is over all pairs given,
    which is the balanced accuracy of Table 1 when genuine and impostor counts are equal
    (``make_pairs``). A rate whose denominator is zero is NaN.
    """
    similarities, is_genuine = _check_scores(similarities, is_genuine)
    accepted = similarities >= threshold
    tp = int(np.sum(accepted & is_genuine))
    fn = int(np.sum(~accepted & is_genuine))
    fp = int(np.sum(accepted & ~is_genuine))
    tn = int(np.sum(~accepted & ~is_genuine))
    return {
        "tpr": tp / (tp + fn) if tp + fn else float("nan"),
        "fpr": fp / (fp + tn) if fp + tn else float("nan"),
        "accuracy": (tp + tn) / len(similarities) if len(similarities) else float("nan"),
        "threshold": float(threshold),
        "tp": tp, "fn": fn, "fp": fp, "tn": tn,
    }


def roc_curve(similarities: np.ndarray, is_genuine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC over every distinct threshold: ``(fpr, tpr, thresholds)``, all of one length.

    ``thresholds`` run from +inf (accept nothing: the point (0, 0)) down to the smallest
    similarity (accept everything: (1, 1)); point i accepts similarity >= thresholds[i].
    Tied scores form one point, so the curve never depends on the order of ties.
    FPR and TPR are non-decreasing.
    """
    similarities, is_genuine = _check_scores(similarities, is_genuine)
    num_genuine, num_impostor = int(is_genuine.sum()), int((~is_genuine).sum())
    if num_genuine == 0 or num_impostor == 0:
        raise ValueError(f"an ROC needs both kinds of pairs; got {num_genuine} genuine, {num_impostor} impostor")
    order = np.argsort(-similarities, kind="stable")
    sorted_scores = similarities[order]
    true_positives = np.cumsum(is_genuine[order])
    false_positives = np.cumsum(~is_genuine[order])
    # The last position of each run of equal scores is where that threshold's counts are complete.
    last_of_tie = np.r_[np.flatnonzero(np.diff(sorted_scores) != 0), len(sorted_scores) - 1]
    tpr = np.r_[0.0, true_positives[last_of_tie] / num_genuine]
    fpr = np.r_[0.0, false_positives[last_of_tie] / num_impostor]
    thresholds = np.r_[np.inf, sorted_scores[last_of_tie]]
    return fpr, tpr, thresholds


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under a curve given as points with non-decreasing ``fpr`` (trapezoid rule)."""
    fpr, tpr = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


@register_metric("roc", kind="verification", higher_is_better=None)
def roc(similarities: np.ndarray, is_genuine: np.ndarray) -> dict[str, np.ndarray | float]:
    """ROC curve and its AUC: ``{"fpr", "tpr", "thresholds", "auc"}`` (see ``roc_curve``)."""
    fpr, tpr, thresholds = roc_curve(similarities, is_genuine)
    return {"fpr": fpr, "tpr": tpr, "thresholds": thresholds, "auc": auc(fpr, tpr)}


@register_metric("tar_at_far", kind="verification", higher_is_better=None)
def tar_at_far(similarities: np.ndarray, is_genuine: np.ndarray,
               far_targets: Sequence[float] = (1e-3, 1e-2, 1e-1)) -> dict[float, dict[str, float | bool]]:
    """True-accept rate at fixed false-accept rates: ``{target: {"tar", "far", "threshold", "resolved"}}``.

    For each target, the operating point of ``roc_curve`` with the highest TAR whose
    achieved FAR is <= target (no interpolation between points, so the reported FAR is one
    actually reached). ``resolved`` is False when the target is below 1 / #impostor pairs:
    then only FAR = 0 is measurable and the number says little about the target.
    """
    fpr, tpr, thresholds = roc_curve(similarities, is_genuine)
    num_impostor = int((~np.asarray(is_genuine, bool)).sum())
    result: dict[float, dict[str, float | bool]] = {}
    for target in far_targets:
        # fpr is non-decreasing, so the last point within the target has the highest TAR.
        i = int(np.searchsorted(fpr, target, side="right")) - 1
        result[float(target)] = {"tar": float(tpr[i]), "far": float(fpr[i]), "threshold": float(thresholds[i]),
                                 "resolved": bool(target * num_impostor >= 1.0)}
    return result
