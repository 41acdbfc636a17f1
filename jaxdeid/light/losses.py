"""Losses of the light networks, paper eqs. (2)-(4): L_E = L_W = chi1 * MSE + chi2 * (1 - SSIM) / 2."""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp


def mse_loss(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """L_J, eq. (2): mean squared error over pixels, channels and the batch."""
    return jnp.mean((outputs - targets) ** 2)


def ssim_loss(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """L_s, eq. (3): (1 - SSIM) / 2, SSIM with the usual 11x11 Gaussian window (sigma 1.5), averaged over the batch."""
    return 0.5 * (1.0 - jnp.mean(dm_pix.ssim(outputs, targets, max_val=1.0)))


def light_loss(outputs: jax.Array, targets: jax.Array, chi_mse: float = 1.0,
               chi_ssim: float = 0.5) -> tuple[jax.Array, dict[str, jax.Array]]:
    """L_E (enhancement) = L_W (attenuation), eq. (4), with chi1 = 1.0 and chi2 = 0.5 by default.

    Returns the total loss and its two terms (for logging).
    """
    mse = mse_loss(outputs, targets)
    structural = ssim_loss(outputs, targets)
    return chi_mse * mse + chi_ssim * structural, {"mse": mse, "ssim_loss": structural}
