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

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ..gan.losses import paper_eq6_discriminator_loss, paper_eq6_generator_loss, r1_penalty
from ..metrics import ssim
from ..store import resolve

TASK_NAME = "deid_finetune"


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


# --------------------------------------------------------------------------- `jaxdeid train deid`


def make_task(config, allow_untrained: bool = False):
    """The ``deid_finetune`` Task: fine-tunes our StyleGAN2 generator with L_F (eq. 8).

    State: the generator G (EMA copy kept for inference), its discriminator D, and the
    Adam states; initialised from the pretrained ``gan_stylegan2`` checkpoint (the
    paper fine-tunes a trained generator; from scratch only with ``allow_untrained``).
    Frozen, from their checkpoints: the StyleGAN2 encoder and the white-box judges. A
    missing one raises FileNotFoundError at the first step, naming its training command:
    a generator fine-tuned against random judges would be reported as "L_F fine-tuned"
    while it learned nothing about evading recognition. ``allow_untrained`` initialises
    missing ones at random instead (tests and demos only).

    One step: x̂ = a batch of normal-light faces (the enhanced faces' domain);
    w = E(x̂); w' = w + σ·n (config.deid.finetune_sigma); y' = G(w').
    G descends L_F; D descends L_D (eq. 6 as printed, R1 on reals).
    """
    from ..data import batch_indices, get_source
    from ..gan import init_generator, make_discriminator, make_generator
    from ..gan import load_trained as load_gan
    from ..train import Task
    from ..train.loop import ema_update
    from ..train.optim import make_optimizer
    from .pipeline import _init_one, _load_one, train_command

    gan_cfg, dc = config.gan, config.deid
    G, D = make_generator(gan_cfg, "stylegan2"), make_discriminator(gan_cfg, "stylegan2")
    opt_G = make_optimizer(dc.train, b1=gan_cfg.adam_beta1, b2=gan_cfg.adam_beta2, clip=None)
    opt_D = make_optimizer(dc.train, b1=gan_cfg.adam_beta1, b2=gan_cfg.adam_beta2, clip=None)
    batch_size, resolution = int(dc.train.batch_size), int(config.data.resolution)
    judges = tuple(config.recognizer.judges)
    frozen: dict[str, Any] = {}

    def frozen_networks():
        # Loaded lazily (first step) so `load_finetuned_generator` never needs them.
        if not frozen:
            from ..recognizers.model import make_recognizer
            from .step import make_encoder_module
            frozen["encoder_module"] = make_encoder_module(config, "stylegan2")
            frozen["judge_modules"] = {a: make_recognizer(config, a) for a in judges}
            names = ["encoder"] + [f"judges/{a}" for a in judges]
            variables, missing = {}, []
            for name in names:
                try:
                    variables[name] = _load_one(config, "stylegan2", name)
                except FileNotFoundError:
                    missing.append(name)
            if missing and not allow_untrained:   # fail before initialising anything
                listing = "\n".join(f"  {n:<22} {train_command(config, 'ours', n)}" for n in missing)
                raise FileNotFoundError(f"L_F fine-tuning needs these trained networks under {config.workdir}; "
                                        f"train them first:\n{listing}\n(or pass --allow-untrained: tests/demos only)")
            for name in missing:
                variables[name] = _init_one(config, "stylegan2", name, jax.random.fold_in(
                    jax.random.PRNGKey(int(config.seed)), names.index(name)))
            frozen["variables"], frozen["untrained"] = variables, missing
        return frozen

    # Loaded eagerly, not inside `init`: restoring a checkpoint runs `init` under
    # jax.eval_shape, where a nested Orbax restore would only see tracers.
    try:
        pretrained = load_gan(config, "stylegan2")
    except FileNotFoundError:
        if not allow_untrained:
            raise FileNotFoundError(f"L_F fine-tunes a trained StyleGAN2 generator; none under {config.workdir}: "
                                    f"{train_command(config, 'ours', 'generator')}") from None
        pretrained = None

    def init(key):
        k_g, k_d = jax.random.split(key)
        g_vars = pretrained if pretrained is not None else init_generator(G, k_g)
        d_vars = dict(D.init(k_d, jnp.zeros((1, resolution, resolution, 3), jnp.float32)))
        return {"G": g_vars, "G_ema": jax.tree_util.tree_map(jnp.array, g_vars), "D": d_vars,
                "opt_G": opt_G.init(g_vars["params"]), "opt_D": opt_D.init(d_vars["params"])}

    holder: dict[str, Any] = {}

    def batch_fn(position):
        if "source" not in holder:
            holder["source"] = get_source(config, "train")
        src = holder["source"]
        images = src.get(batch_indices(len(src), batch_size, int(config.seed), position))["image"]
        frozen_networks()   # loaded before the step is traced: the step closes over them as constants
        return {"image": np.asarray(images, np.float32)}

    def embed_all(variables, faces):
        net = frozen
        return jnp.stack([net["judge_modules"][a].apply(variables[f"judges/{a}"], faces, train=False)
                          for a in judges])

    def train_step(state, batch, key):
        original, variables = batch["image"], frozen_networks()["variables"]
        latents = jax.lax.stop_gradient(frozen["encoder_module"].apply(variables["encoder"], original))
        moved = latents + dc.finetune_sigma * jax.random.normal(key, latents.shape)
        references = jax.lax.stop_gradient(embed_all(variables, original))
        d_fn = lambda v: (lambda images: D.apply(v, images))

        def g_loss(g_params):
            g_vars = {**state["G"], "params": g_params}
            private = G.apply(g_vars, moved, method="synthesize", noise_mode="const")
            reconstruction = G.apply(g_vars, latents, method="synthesize", noise_mode="const")
            terms = finetune_terms(
                fake_logits=D.apply(state["D"], private), real_logits=D.apply(state["D"], original),
                r1=0.0, r1_gamma=0.0, private=private, original=original, reconstruction=reconstruction,
                private_embeddings=embed_all(variables, jnp.clip(private, 0.0, 1.0)),
                original_embeddings=references, threshold=float(config.recognizer.threshold),
                la_margin=float(dc.la_margin), chi=dc.chi)
            return terms["L_F"], (terms, private)

        (_, (terms, private)), g_grads = jax.value_and_grad(g_loss, has_aux=True)(state["G"]["params"])
        g_updates, opt_G_state = opt_G.update(g_grads, state["opt_G"], state["G"]["params"])
        g_params = jax.tree_util.tree_map(lambda p, u: p + u, state["G"]["params"], g_updates)

        def d_loss(d_params):
            d_vars = {**state["D"], "params": d_params}
            r1 = r1_penalty(d_fn(d_vars), original)
            return paper_eq6_discriminator_loss(D.apply(d_vars, original),
                                                D.apply(d_vars, jax.lax.stop_gradient(private)),
                                                r1, float(gan_cfg.r1_gamma))

        d_value, d_grads = jax.value_and_grad(d_loss)(state["D"]["params"])
        d_updates, opt_D_state = opt_D.update(d_grads, state["opt_D"], state["D"]["params"])
        d_params = jax.tree_util.tree_map(lambda p, u: p + u, state["D"]["params"], d_updates)
        new_G = {**state["G"], "params": g_params}
        new_state = {"G": new_G, "G_ema": ema_update(state["G_ema"], new_G, 0.999), "D": {**state["D"], "params": d_params},
                     "opt_G": opt_G_state, "opt_D": opt_D_state}
        metrics = {"loss": terms["L_F"], "loss_D": d_value, **{f"loss/{k}": v for k, v in terms.items()}}
        return new_state, metrics

    return Task(name=TASK_NAME, init=init, train_step=train_step, batch_fn=batch_fn)


def load_finetuned_generator(config) -> Mapping[str, Any] | None:
    """The L_F fine-tuned EMA generator (``deid_finetune``, `jaxdeid.store.resolve`), or None when it was never trained."""
    # allow_untrained: only the state's structure is needed here, not the frozen networks.
    try:
        return resolve(config, make_task(config, allow_untrained=True), lambda state: state["G_ema"],
                       f"jaxdeid train deid --preset {config.preset}")
    except FileNotFoundError:
        return None


def train_deid(config, args) -> int:
    """`jaxdeid train deid`: fine-tunes the StyleGAN2 generator with L_F (eq. 8)."""
    from ..train import run

    task = make_task(config, allow_untrained=bool(getattr(args, "allow_untrained", False)))
    _, records = run(task, config.deid.train, config.workdir, seed=int(config.seed), desc=TASK_NAME)
    losses = [r for r in records if "loss" in r]
    if losses:
        last = losses[-1]
        print(f"{TASK_NAME}: step {last.get('step')} L_F {last['loss']:.4f} "
              f"(L_A {last.get('loss/L_A', float('nan')):.4f}, L_s {last.get('loss/L_s', float('nan')):.4f}, "
              f"L_C {last.get('loss/L_C', float('nan')):.4f})")
    return 0 if not losses or np.isfinite(losses[-1]["loss"]) else 1

