"""Face identification (1:N) against an enrolled gallery (docs/method.md §4.2, Table 3).

Gallery: one template per identity, the mean of that identity's L2-normalised embeddings
of *clean, normal-light* images, re-normalised to unit length (``enroll_gallery``).

Decision for a probe (e.g. a private image x'): compute its cosine similarity to every
template; take the best-matching identity; the probe is *assigned* to it when that best
similarity is >= the threshold (0.3), otherwise *rejected* (matched to no one). Every probe
therefore lands in exactly one of three outcomes, and the reported rates partition 1:

    tpr_1n    = probes assigned to their own identity          / probes
    fpr_1n    = probes assigned to some other identity          / probes
    reject_1n = probes whose best similarity is below threshold / probes

Why this reading fits Table 3 (TPR 0.10-0.15 with FPR 0.82-0.89, rows summing to about
1): in 1:N search with a lenient threshold nearly every probe still clears 0.3 against
*some* template. De-identification pushes the face away from its owner, so the best match
becomes another person: the probe moves from the TP outcome to the FP outcome and the two
rates trade off, summing to about 1 - reject. In 1:1 verification, by contrast, a private
image does not become *more* similar to a random impostor, so verification FPR stays near
the clean FPR of Table 1 (0.03-0.17) and cannot reach 0.85. (One row of Table 3 sums to
1.03, so the paper's exact denominators are not fully recoverable; this is our reading.)

For the clean test set the same numbers are ordinary open-set identification rates.
"""

from __future__ import annotations

import numpy as np

from .registry import register_metric
from .verification import DEFAULT_THRESHOLD, _l2_normalise

_PROBE_CHUNK = 4096  # probes per similarity block; bounds memory at chunk x gallery size


def enroll_gallery(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One unit-length template per identity: ``(gallery [K, D] float32, gallery_labels [K] int64)``.

    Each template is the mean of the identity's L2-normalised embeddings, re-normalised
    (normalising first stops one high-norm image from dominating the mean).
    ``gallery_labels`` are the sorted distinct labels.
    """
    embeddings = np.asarray(embeddings, np.float64)
    labels = np.asarray(labels).reshape(-1)
    if embeddings.ndim != 2 or embeddings.shape[0] != labels.shape[0]:
        raise ValueError(f"need embeddings [N, D] and labels [N]; got {embeddings.shape} and {labels.shape}")
    gallery_labels, which = np.unique(labels, return_inverse=True)
    sums = np.zeros((gallery_labels.size, embeddings.shape[1]))
    np.add.at(sums, which, _l2_normalise(embeddings))
    return _l2_normalise(sums).astype(np.float32), gallery_labels.astype(np.int64)


def identify(probe_embeddings: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray,
             threshold: float = DEFAULT_THRESHOLD) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best gallery match per probe: ``(best_label [P], best_similarity [P], assigned [P] bool)``.

    ``assigned`` is best_similarity >= threshold; ``best_label`` is the nearest identity
    whether or not it was assigned (rank-1 search result).
    """
    probes = _l2_normalise(np.asarray(probe_embeddings, np.float64))
    templates = _l2_normalise(np.asarray(gallery, np.float64))
    best_index = np.empty(len(probes), np.int64)
    best_similarity = np.empty(len(probes), np.float64)
    for start in range(0, len(probes), _PROBE_CHUNK):
        similarities = probes[start:start + _PROBE_CHUNK] @ templates.T
        best_index[start:start + _PROBE_CHUNK] = np.argmax(similarities, axis=1)
        best_similarity[start:start + _PROBE_CHUNK] = np.max(similarities, axis=1)
    return np.asarray(gallery_labels)[best_index], best_similarity, best_similarity >= threshold


@register_metric("identification", kind="identification", higher_is_better=None)
def identification_rates(probe_embeddings: np.ndarray, probe_labels: np.ndarray, gallery: np.ndarray,
                         gallery_labels: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> dict[str, float | int]:
    """1:N rates (module docstring): ``tpr_1n``, ``fpr_1n``, ``reject_1n`` (summing to 1) and ``rank1``.

    ``rank1`` is closed-set accuracy, the nearest template being the probe's own identity,
    ignoring the threshold. A probe whose identity is not enrolled can only be a false
    positive or a rejection.
    """
    probe_labels = np.asarray(probe_labels).reshape(-1)
    best_label, _, assigned = identify(probe_embeddings, gallery, gallery_labels, threshold)
    correct = best_label == probe_labels
    num_probes = len(probe_labels)
    if num_probes == 0:
        raise ValueError("no probes")
    return {
        "tpr_1n": float(np.mean(assigned & correct)),
        "fpr_1n": float(np.mean(assigned & ~correct)),
        "reject_1n": float(np.mean(~assigned)),
        "rank1": float(np.mean(correct)),
        "threshold": float(threshold),
        "num_probes": int(num_probes),
        "num_identities": int(len(gallery_labels)),
    }
