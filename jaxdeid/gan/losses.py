"""GAN losses: StyleGAN2's (used for pretraining) and the forms printed in the paper's eq. (6).

Conventions: ``*_logits`` are D's raw outputs (before any sigmoid), shape [B];
losses are batch means. D sees images in [0, 1] (project convention); the R1
gradient is taken with respect to the images in StyleGAN2's internal range
[-1, 1], so ``r1_gamma`` keeps NVIDIA's meaning.

Path-length regularisation (StyleGAN2 §3.2) is omitted: it smooths the W→image
map for better interpolation/projection, but is not needed for image quality,
and the paper does not mention it.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


def generator_loss(fake_logits: Array) -> Array:
    """StyleGAN2's non-saturating logistic loss for G: E[softplus(−D(G(z)))] = −E[log σ(D(G(z)))]."""
    return jnp.mean(jax.nn.softplus(-fake_logits))


def discriminator_loss(real_logits: Array, fake_logits: Array) -> Array:
    """Logistic loss for D: E[softplus(D(G(z)))] + E[softplus(−D(x))] (reals → +, fakes → −)."""
    return jnp.mean(jax.nn.softplus(fake_logits)) + jnp.mean(jax.nn.softplus(-real_logits))


def r1_penalty(d_fn: Callable[[Array], Array], real_images: Array) -> Array:
    """R1 (Mescheder et al. 2018): E_x ‖∇_x D(x)‖² on real images.

    Args:
      d_fn: images in [0, 1] [B,R,R,3] → logits [B].
      real_images: [B,R,R,3] in [0, 1].
    The gradient is taken w.r.t. the centred images x' = 2x − 1 (what NVIDIA's D
    sees), i.e. ∇_{x'} D = ½ ∇_x D. Summing D over the batch gives every sample's
    own gradient because D's samples interact only through minibatch stddev, as in
    the reference implementation.
    """
    centred = real_images * 2.0 - 1.0
    grads = jax.grad(lambda c: jnp.sum(d_fn((c + 1.0) * 0.5)))(centred)
    return jnp.mean(jnp.sum(jnp.square(grads), axis=(1, 2, 3)))


def lazy_r1_loss(d_fn: Callable[[Array], Array], real_images: Array, r1_gamma: float, r1_interval: int) -> Array:
    """The lazily applied R1 term: (γ/2)·R1, multiplied by the interval (StyleGAN2 §3.1) because it
    is evaluated only every `r1_interval` steps, so its average strength matches γ/2 per step."""
    return 0.5 * r1_gamma * r1_interval * r1_penalty(d_fn, real_images)


# --------------------------------------------------------------------------- paper eq. (6), as printed
#
# The paper prints  L_D = softplus(D(G(z))) + softplus(−D(x)) + r1_gamma·½·Σ‖∇_x D(x)‖²
# and               L_G = −softplus(D(G(z))).
# Note on the sign (docs/method.md §1): −softplus(l) = log(1 − σ(l)), so minimising the printed
# L_G is Goodfellow's original *saturating* minimax generator loss. It moves D(G(z))
# in the same direction (up) as StyleGAN2's non-saturating softplus(−D(G(z))), but
# its gradient −σ(l) vanishes exactly when D confidently rejects the fakes (l ≪ 0)
# and it is unbounded below. We therefore pretrain with StyleGAN2's usual losses
# above and use these printed forms only where the paper's eq. (8) fine-tuning loss
# L_F = L_G + χ1·L_D + ... is built (the de-identification stage).

def paper_eq6_generator_loss(fake_logits: Array) -> Array:
    """L_G = −softplus(D(G(z))), exactly as printed in eq. (6) (see the sign note above)."""
    return -jnp.mean(jax.nn.softplus(fake_logits))


def paper_eq6_discriminator_loss(real_logits: Array, fake_logits: Array, r1: Array | float = 0.0,
                                 r1_gamma: float = 0.0) -> Array:
    """L_D = softplus(D(G(z))) + softplus(−D(x)) + r1_gamma·½·R1, as printed in eq. (6).

    `r1` is `r1_penalty(...)` (or 0 to leave the penalty out).
    """
    return discriminator_loss(real_logits, fake_logits) + 0.5 * r1_gamma * r1
