"""The similarity-judgment loss L_A (eq. 7) and the fine-tuning loss L_F (eq. 8).

L_A — the paper writes L_A = E ℓ_f(x̂, y, y') (eq. 7) without saying what ℓ_f is:
"the recognizer says same person -> high loss -> more noise". We define it as a
hinge on every white-box judge's cosine similarity between the private face y' and
the original face x̂:

    L_A = mean over judges j and samples b of relu(cos_j(y'_b, x̂_b) − (τ − m))

with τ = config.recognizer.threshold (0.3, docs/method.md §4.1) and m = config.deid.la_margin.
It is zero exactly when every judge rejects the private face with margin m — the
same event that stops the noise loop (with m = 0) — and otherwise grows linearly
with how strongly the judges still match, so its gradient always points away from
the identity while it is active and vanishes once the job is done (a plain mean
similarity would keep pushing faces apart long after they are unrecognisable, at
the cost of L_s and L_C).

L_F = L_G + χ1·L_D + χ2·L_s + χ3·L_A + χ4·L_C (eq. 8), χ = config.deid.chi = (1.0, 0.5, 0.3, 0.1):
  * L_G, L_D: the PRINTED eq. (6) forms, `jaxdeid.gan.losses.paper_eq6_*`.
    Sign note (docs/method.md §1): printed L_G = −softplus(D(G(z))) and printed L_D contains
    +softplus(D(G(z))). With χ1 = 1 the two D(G(z)) terms cancel exactly inside L_F,
    so ∂L_F/∂θ_G gets NO adversarial signal; L_F's G-gradient comes from L_s, L_A and
    L_C only. We implement the sum as printed (it is what `loss/L_F` logs) and train
    D by descending L_D in the same step, as a GAN must; we do not silently "fix"
    the sign. `finetune_terms` returns every term so the cancellation is visible.
  * L_s = ½(1 − SSIM(y', x̂)) (eq. 3): the private face keeps the original's structure.
  * L_C = MSE(x̂, G(E(x̂))) (eq. 5): the generator still reconstructs the encoded face.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..gan.losses import paper_eq6_discriminator_loss, paper_eq6_generator_loss
from ..metrics import ssim


def similarity_judgment_loss(private_embeddings: jax.Array, original_embeddings: jax.Array,
                             threshold: float, margin: float) -> jax.Array:
    """L_A (eq. 7, module docstring): hinge on every judge's cosine similarity.

    Args:
      private_embeddings: [J, B, E] unit-norm embeddings of the private faces, one row per judge.
      original_embeddings: [J, B, E] the same judges' embeddings of the original faces.
      threshold: the recognizers' decision threshold τ (similarity >= τ means "same person").
      margin: m; the loss is zero once every similarity is below τ − m.
    """
    cos = jnp.sum(private_embeddings * original_embeddings, axis=-1)
    return jnp.mean(jax.nn.relu(cos - (threshold - margin)))


def structure_loss(private: jax.Array, original: jax.Array) -> jax.Array:
    """L_s = ½(1 − SSIM) (eq. 3), batch mean."""
    return jnp.mean(0.5 * (1.0 - ssim(private, original)))


def reconstruction_loss(reconstruction: jax.Array, original: jax.Array) -> jax.Array:
    """L_C = MSE(x̂, G(E(x̂))) (eq. 5)."""
    return jnp.mean(jnp.square(reconstruction - original))


def finetune_terms(*, fake_logits: jax.Array, real_logits: jax.Array, r1: jax.Array | float, r1_gamma: float,
                   private: jax.Array, original: jax.Array, reconstruction: jax.Array,
                   private_embeddings: jax.Array, original_embeddings: jax.Array,
                   threshold: float, la_margin: float, chi) -> dict[str, jax.Array]:
    """Every term of eq. (8) and their weighted sum L_F (as printed; see the sign note)."""
    chi_d, chi_s, chi_a, chi_c = (float(c) for c in chi)
    terms = {
        "L_G": paper_eq6_generator_loss(fake_logits),
        "L_D": paper_eq6_discriminator_loss(real_logits, fake_logits, r1, r1_gamma),
        "L_s": structure_loss(private, original),
        "L_A": similarity_judgment_loss(private_embeddings, original_embeddings, threshold, la_margin),
        "L_C": reconstruction_loss(reconstruction, original),
    }
    terms["L_F"] = (terms["L_G"] + chi_d * terms["L_D"] + chi_s * terms["L_s"] + chi_a * terms["L_A"]
                    + chi_c * terms["L_C"])
    return terms


def fine_tuning_loss(**kwargs) -> jax.Array:
    """L_F (eq. 8) = L_G + χ1·L_D + χ2·L_s + χ3·L_A + χ4·L_C; arguments as `finetune_terms`."""
    return finetune_terms(**kwargs)["L_F"]
