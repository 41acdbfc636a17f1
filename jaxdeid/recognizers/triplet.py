"""Triplet loss on cosine distance with online semi-hard negative mining (FaceNet, Schroff et al. 2015).

For every (anchor, positive) pair of a P x K batch (P identities, K images
each), the negative is chosen *inside the batch* from the current embeddings:

  * semi-hard: the closest negative among those farther from the anchor than
    the positive (d_an > d_ap). If it lies within the margin it gives a
    positive loss; if even the closest such negative is beyond the margin the
    pair is already satisfied and contributes zero.
  * fallback, when every negative is closer than the positive (all "hard"): the
    farthest negative, i.e. the least hard one. Choosing the hardest negatives
    early in training collapses the embedding (FaceNet §3.2), so we do not.

Distances are cosine distances 1 - <a, b> on unit-norm embeddings.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cosine_distance_matrix(embeddings: jax.Array) -> jax.Array:
    """1 - cosine similarity for every pair of rows of unit-norm `embeddings` [B, D] -> [B, B]."""
    return 1.0 - embeddings @ embeddings.T


def semi_hard_negatives(distances: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The mined negative for every (anchor a, positive p) pair.

    Args:
      distances: [B, B] anchor-to-candidate distances.
      labels: [B] identity ids.
    Returns:
      negative: [B, B] int, ``negative[a, p]`` = index of the chosen negative.
      pair_mask: [B, B] bool, True where (a, p) is a valid anchor-positive pair
        (same identity, a != p, and at least one negative exists in the batch).
    """
    b = labels.shape[0]
    same = labels[:, None] == labels[None, :]
    is_negative = ~same                                                  # [a, n]
    d_ap = distances[:, :, None]                                         # [a, p, 1]
    d_an = distances[:, None, :]                                         # [a, 1, n]
    farther = is_negative[:, None, :] & (d_an > d_ap)                    # [a, p, n] semi-hard candidates
    big = jnp.asarray(jnp.inf, distances.dtype)
    closest_farther = jnp.argmin(jnp.where(farther, d_an, big), axis=-1)  # hardest of the semi-hard
    farthest_any = jnp.argmax(jnp.where(is_negative[:, None, :], d_an, -big), axis=-1)  # fallback: least hard
    negative = jnp.where(jnp.any(farther, axis=-1), closest_farther, farthest_any)
    pair_mask = same & ~jnp.eye(b, dtype=bool) & jnp.any(is_negative, axis=1)[:, None]
    return negative, pair_mask


def triplet_semihard_loss(embeddings: jax.Array, labels: jax.Array, margin: float) -> tuple[jax.Array, dict]:
    """Mean over all anchor-positive pairs of max(0, d_ap - d_an + margin), negatives mined semi-hard.

    Returns the loss and diagnostics: fraction of pairs with a positive loss, mean d_ap and d_an.
    """
    distances = cosine_distance_matrix(embeddings.astype(jnp.float32))
    # Mining is a selection, not part of the objective: no gradient flows through the choice.
    negative, pair_mask = semi_hard_negatives(jax.lax.stop_gradient(distances), labels)
    d_ap = distances
    d_an = distances[jnp.arange(labels.shape[0])[:, None], negative]   # d(a, negative[a, p])
    losses = jnp.maximum(d_ap - d_an + margin, 0.0)
    weight = pair_mask.astype(jnp.float32)
    count = jnp.maximum(weight.sum(), 1.0)
    loss = jnp.sum(losses * weight) / count
    aux = {
        "active_fraction": jnp.sum((losses > 0) * weight) / count,
        "d_ap": jnp.sum(d_ap * weight) / count,
        "d_an": jnp.sum(d_an * weight) / count,
    }
    return loss, aux
