"""Image and embedding similarity: SSIM, PSNR and cosine similarity (paper Fig. 5, docs/method.md §4.1).

All functions are pure jnp and jit-able. Images are float NHWC in [0, 1] (a single HWC
image also works); each function returns one value per image / embedding.

SSIM and PSNR are dm-pix's implementations with a dynamic range of 1. dm-pix's SSIM is the
Wang et al. (2004) definition: an 11-tap Gaussian window with sigma 1.5, K1 = 0.01,
K2 = 0.03, population (not sample) covariances, averaged over the "valid" region (pixels
whose window lies inside the image) and over channels. That equals
``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1, channel_axis=-1)``, which tests/test_metrics.py
checks to within 1e-4.
"""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp

from .registry import register_metric

_COSINE_EPS = 1e-12  # guards 0/0 for an all-zero vector (similarity 0 instead of NaN)


@register_metric("ssim", kind="pairwise", higher_is_better=True)
@jax.jit
def ssim(a: jax.Array, b: jax.Array) -> jax.Array:
    """Structural similarity per image, [B, H, W, C] x2 -> [B]; 1 means identical.

    Symmetric. Images must be at least 11 px on each side (the Gaussian window).
    """
    return dm_pix.ssim(a, b, max_val=1.0, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03)


@register_metric("psnr", kind="pairwise", higher_is_better=True)
@jax.jit
def psnr(a: jax.Array, b: jax.Array) -> jax.Array:
    """Peak signal-to-noise ratio in dB per image, [B, H, W, C] x2 -> [B]; max value 1.

    ``-10 log10(MSE)``; +inf for identical images (callers that average should expect it).
    """
    return dm_pix.psnr(a, b)


@register_metric("cosine_similarity", kind="pairwise", higher_is_better=True)
@jax.jit
def cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
    """Cosine of the angle between embeddings along the last axis, [..., D] x2 -> [...].

    Equals the dot product of the L2-normalised vectors, which is the score every
    recognizer threshold (0.3, docs/method.md §4.1) is applied to. An all-zero vector has
    similarity 0 with everything.
    """
    a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), _COSINE_EPS)
    b = b / jnp.maximum(jnp.linalg.norm(b, axis=-1, keepdims=True), _COSINE_EPS)
    return jnp.sum(a * b, axis=-1)


@register_metric("image_cosine_similarity", kind="pairwise", higher_is_better=True)
@jax.jit
def image_cosine_similarity(private: jax.Array, original: jax.Array) -> jax.Array:
    """The paper's "CS" (Fig. 5): cosine similarity of flattened pixel vectors, per image.

    ``private`` is the generated low-light private image x' and ``original`` the low-light
    input x it was made from, both [B, H, W, C] in [0, 1] (the value is symmetric, so the
    order only documents intent). The paper says CS "calculates the angle between two
    vectors"; we take the raw pixels without mean removal, as printed. Because pixels are
    non-negative the value lies in [0, 1] and is high for any two images of similar
    brightness layout, so it is best read comparatively (method vs. baselines), as the
    paper does.
    """
    batch_shape = private.shape[:-3]
    flat_private = private.reshape(batch_shape + (-1,))
    flat_original = original.reshape(batch_shape + (-1,))
    return cosine_similarity(flat_private, flat_original)
