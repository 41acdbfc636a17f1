"""LLNet-style low-light synthesis (Lore et al. 2017; docs/method.md §2; paper §4.1).

A normal-light image x in [0, 1] becomes

    y = clip(x ** gamma + sigma * n, 0, 1),   gamma ~ U(gamma_min, gamma_max),
                                              sigma = sqrt(B) * sigma_max, B ~ U(0, 1),
                                              n ~ N(0, 1) per pixel and channel,

with one (gamma, B) per image: every axis but the last three (H, W, C) is a batch
axis. Parameters come from ``config.lowlight`` (gamma_min, gamma_max, sigma_max).

``darken`` is pure JAX (jit-able, differentiable in x); ``darken_np`` is its numpy
twin for data pipelines. Both can also return the drawn gamma and sigma.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _bounds(cfg):
    gamma_min, gamma_max, sigma_max = float(cfg.gamma_min), float(cfg.gamma_max), float(cfg.sigma_max)
    if not 0 < gamma_min <= gamma_max:
        raise ValueError(f"lowlight: need 0 < gamma_min <= gamma_max, got {gamma_min}, {gamma_max}")
    if sigma_max < 0:
        raise ValueError(f"lowlight: sigma_max must be >= 0, got {sigma_max}")
    return gamma_min, gamma_max, sigma_max


def darken(key: jax.Array, x: jax.Array, lowlight_cfg, return_params: bool = False):
    """Low-light version of `x` (float [..., H, W, C] in [0, 1]); one gamma and B per image.

    Returns y (same shape, x's float dtype), or ``(y, gamma, sigma)`` with gamma and sigma
    shaped like the batch axes ``x.shape[:-3]`` when `return_params` is true.
    """
    gamma_min, gamma_max, sigma_max = _bounds(lowlight_cfg)
    x = jnp.asarray(x)
    if x.ndim < 3:
        raise ValueError(f"darken expects [..., H, W, C], got shape {x.shape}")
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    x = x.astype(dtype)
    batch = x.shape[:-3]
    k_gamma, k_b, k_noise = jax.random.split(key, 3)
    gamma = jax.random.uniform(k_gamma, batch, dtype, gamma_min, gamma_max)
    b = jax.random.uniform(k_b, batch, dtype)
    sigma = jnp.sqrt(b) * sigma_max
    expand = (...,) + (None,) * 3
    # Clip before the power: x ** gamma of a tiny negative value would be NaN.
    dark = jnp.clip(x, 0.0, 1.0) ** gamma[expand]
    y = jnp.clip(dark + sigma[expand] * jax.random.normal(k_noise, x.shape, dtype), 0.0, 1.0)
    return (y, gamma, sigma) if return_params else y


def darken_np(rng: np.random.Generator, x: np.ndarray, lowlight_cfg, return_params: bool = False):
    """Numpy twin of `darken`: float32 [..., H, W, C] in [0, 1] -> low-light float32 image(s)."""
    gamma_min, gamma_max, sigma_max = _bounds(lowlight_cfg)
    x = np.asarray(x, np.float32)
    if x.ndim < 3:
        raise ValueError(f"darken_np expects [..., H, W, C], got shape {x.shape}")
    batch = x.shape[:-3]
    gamma = rng.uniform(gamma_min, gamma_max, batch).astype(np.float32)
    sigma = (np.sqrt(rng.uniform(0.0, 1.0, batch)) * sigma_max).astype(np.float32)
    expand = (...,) + (None,) * 3
    dark = np.clip(x, 0.0, 1.0) ** gamma[expand]
    noise = rng.standard_normal(x.shape, dtype=np.float32)
    y = np.clip(dark + sigma[expand] * noise, 0.0, 1.0).astype(np.float32)
    return (y, gamma, sigma) if return_params else y
