"""The verification protocol of docs/method.md §4 for one trained recognizer (Table 1).

Pairs (docs/method.md §4.3: "balanced genuine/impostor pairs of the split"):
  * train split: both images from the train split (two different photos for a
    genuine pair), via ``jaxdeid.metrics.make_pairs``.
  * val / test with ``data.split_by == "image"`` (the paper's random 98:1:1
    split over images): a held-out split holds about one image per identity, so
    pairs put a held-out *probe* (column 0) against a *reference* image from the
    train split. Genuine = same identity (necessarily a different photo),
    impostor = different identity. The probe is never seen in training.
  * val / test with ``split_by == "identity"`` (disjoint people): pairs within the split.

1:N identification: the gallery is one template per identity enrolled from at
most ``gallery_per_identity`` clean train images; probes are the held-out split.
Confidence intervals: percentile bootstrap over identities (``jaxdeid.metrics.stats``).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from .. import metrics
from .splits import get_split

Embed = Callable[[dict, jax.Array], jax.Array]


def embed_source(embed: Embed, variables: dict, source, indices: np.ndarray, batch_size: int) -> np.ndarray:
    """Embeddings [N, D] (float32, host) of ``source`` examples ``indices``.

    Every call of the jitted ``embed`` sees the same batch shape (the last batch is
    padded), so one compilation serves the whole split; results are fetched once.
    """
    indices = np.asarray(indices, np.int64)
    outputs = []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - len(chunk))])
        images = source.get(padded)["image"]
        outputs.append(embed(variables, images)[:len(chunk)])
    if not outputs:
        return np.zeros((0, 0), np.float32)
    return np.asarray(jax.device_get(jax.numpy.concatenate(outputs)), np.float32)


def _sources(config, split: str):
    probe = get_split(config, split)
    across = split != "train" and config.data.split_by == "image"
    reference = get_split(config, "train") if across else probe
    return probe, reference, across


def split_pairs(config, split: str, num_pairs: int, seed: int) -> dict[str, Any]:
    """Balanced pairs for `split` (module docstring): probe/reference sources and index pairs."""
    probe, reference, across = _sources(config, split)
    genuine, impostor = metrics.make_pairs(np.asarray(probe.labels), num_pairs, seed,
                                           reference_labels=np.asarray(reference.labels) if across else None)
    return {"probe": probe, "reference": reference, "genuine": genuine, "impostor": impostor}


def _pair_similarities(embed: Embed, variables: dict, pairs: dict, batch_size: int):
    """Cosine similarity of every pair, embedding each distinct image once."""
    both = np.concatenate([pairs["genuine"], pairs["impostor"]])
    probe_ids, probe_pos = np.unique(both[:, 0], return_inverse=True)
    if pairs["reference"] is pairs["probe"]:
        all_ids, pos = np.unique(both.reshape(-1), return_inverse=True)
        emb = embed_source(embed, variables, pairs["probe"], all_ids, batch_size)
        pos = pos.reshape(-1, 2)
        a, b = emb[pos[:, 0]], emb[pos[:, 1]]
    else:
        ref_ids, ref_pos = np.unique(both[:, 1], return_inverse=True)
        a = embed_source(embed, variables, pairs["probe"], probe_ids, batch_size)[probe_pos]
        b = embed_source(embed, variables, pairs["reference"], ref_ids, batch_size)[ref_pos]
    similarities = np.sum(a.astype(np.float64) * b, axis=-1)
    is_genuine = np.concatenate([np.ones(len(pairs["genuine"]), bool), np.zeros(len(pairs["impostor"]), bool)])
    pair_identities = np.asarray(pairs["probe"].labels)[both[:, 0]]
    return similarities, is_genuine, pair_identities


def verify_split(config, embed: Embed, variables: dict, split: str, *, num_pairs: int, seed: int,
                 with_ci: bool = False) -> dict[str, Any]:
    """1:1 verification at ``config.recognizer.threshold`` on balanced pairs of `split`.

    Returns ``accuracy``, ``tpr``, ``fpr`` (+ ``ci`` = {key: (low, high)} when `with_ci`)
    and the raw ``similarities``, ``is_genuine`` and ``pair_identities`` for ROC curves.
    """
    rc = config.recognizer
    pairs = split_pairs(config, split, num_pairs, seed)
    similarities, is_genuine, pair_identities = _pair_similarities(embed, variables, pairs, rc.eval_batch_size)
    out = dict(metrics.get_metric("verification")(similarities, is_genuine, rc.threshold))
    out.update(similarities=similarities, is_genuine=is_genuine, pair_identities=pair_identities)
    if with_ci:
        out["ci"] = metrics.verification_ci(similarities, is_genuine, pair_identities, threshold=rc.threshold,
                                            num_resamples=rc.bootstrap_samples, seed=seed)
    return out


def identify_split(config, embed: Embed, variables: dict, split: str, *, seed: int) -> dict[str, Any]:
    """1:N identification (docs/method.md §4.2) of the `split` images against a gallery enrolled from train images."""
    rc = config.recognizer
    probe, train = get_split(config, split), get_split(config, "train")
    labels = np.asarray(train.labels)
    rng = np.random.default_rng(seed)
    enrolled = np.concatenate([rng.permutation(np.flatnonzero(labels == k))[:rc.gallery_per_identity]
                               for k in np.unique(labels)])
    gallery_emb = embed_source(embed, variables, train, np.sort(enrolled), rc.eval_batch_size)
    gallery, gallery_labels = metrics.enroll_gallery(gallery_emb, labels[np.sort(enrolled)])
    probe_emb = embed_source(embed, variables, probe, np.arange(len(probe)), rc.eval_batch_size)
    probe_labels = np.asarray(probe.labels)
    rates = dict(metrics.get_metric("identification")(probe_emb, probe_labels, gallery, gallery_labels, rc.threshold))
    rates["ci"] = metrics.identification_ci(probe_emb, probe_labels, gallery, gallery_labels, threshold=rc.threshold,
                                            num_resamples=rc.bootstrap_samples, seed=seed)
    return rates


def evaluate_recognizer(config, embed: Embed, variables: dict, *, seed: int | None = None) -> dict[str, Any]:
    """Everything Table 1 reports for one recognizer, plus ROC / TAR@FAR / 1:N and 95 % bootstrap CIs.

    Returns ``train`` and ``test`` verification dicts (see `verify_split`), ``roc``
    (test ROC curve + AUC), ``tar_at_far`` (test) and ``identification`` (test 1:N).
    """
    rc = config.recognizer
    seed = config.seed if seed is None else seed
    train = verify_split(config, embed, variables, "train", num_pairs=rc.eval_pairs, seed=seed, with_ci=True)
    test = verify_split(config, embed, variables, "test", num_pairs=rc.eval_pairs, seed=seed + 1, with_ci=True)
    return {
        "train": train,
        "test": test,
        "roc": metrics.get_metric("roc")(test["similarities"], test["is_genuine"]),
        "tar_at_far": metrics.get_metric("tar_at_far")(test["similarities"], test["is_genuine"], far_targets=tuple(rc.far_targets)),
        "identification": identify_split(config, embed, variables, "test", seed=seed),
    }
