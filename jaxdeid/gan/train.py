"""GAN training for all three generators through the shared loop (`jaxdeid train gan --arch ...`).

One training step = one G update then one D update (StyleGAN2's alternating
phases, in one jitted function with no host syncs):

1. G: minimise softplus(−D(G(z))) with fresh z (style mixing for the StyleGANs,
   random noise inputs); the mapping network's w_avg buffer is updated.
2. D: minimise softplus(D(G(z))) + softplus(−D(x)) on the updated G's fakes and a
   batch of real normal-light faces; every `r1_interval`-th step the lazy R1 term
   (γ/2)·interval·‖∇D(x)‖² is added to the same D update (`lax.cond`, so the other
   steps do not pay for the double backward). NVIDIA applies it in a separate
   optimiser step with adjusted Adam hyper-parameters; folding it into the main
   D step keeps "one step = one G and one D update".
3. EMA: G_ema ← β·G_ema + (1−β)·G with β = 0.5^(batch / ema_half_life_images);
   buffers are copied.

Adam with betas (0, 0.99) (StyleGAN2) and a constant learning rate for both
networks. PGGAN's level of detail comes from the images seen so far unless
``train_final_resolution`` pins it to the full resolution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..data import batch_indices, get_source
from ..store import resolve
from ..train import Task, TrainingReport, make_optimizer, run
from . import init_generator, make_discriminator, make_generator, pggan, synthesis_options
from .losses import discriminator_loss, generator_loss, lazy_r1_loss, r1_penalty
from .pggan import images_at_lod, lod_schedule, max_lod
from .samples import fixed_latents, grid_image, save_png


def task_name(arch: str) -> str:
    return f"gan_{arch}"


def ema_beta(gan_cfg) -> float:
    """Per-step EMA decay giving a half-life of `ema_half_life_images` training images."""
    return 0.5 ** (gan_cfg.train.batch_size / max(gan_cfg.ema_half_life_images, 1e-8))


def mix_styles(G, variables, ws: jax.Array, key: jax.Array, prob: float) -> jax.Array:
    """Style-mixing regularisation (StyleGAN §3.1): with probability `prob` the layers from a random
    cutoff on take the styles of a second latent (one cutoff per batch, as in the reference)."""
    if prob <= 0 or G.num_ws == 1:
        return ws
    k_cut, k_use, k_z = jax.random.split(key, 3)
    cutoff = jax.random.randint(k_cut, (), 1, G.num_ws)
    cutoff = jnp.where(jax.random.uniform(k_use) < prob, cutoff, G.num_ws)
    z2 = jax.random.normal(k_z, (ws.shape[0], G.z_dim))
    ws2 = G.apply(variables, z2, method="map")
    layer = jnp.arange(G.num_ws)[None, :, None]
    return jnp.where(layer < cutoff, ws, ws2)


def _default_source(config):
    return get_source(config, "train")


def make_task(config, arch: str | None = None, source: Any = None) -> Task:
    """The `gan_<arch>` Task for `jaxdeid.train.run`.

    Args:
      config: full project config (uses ``config.gan`` and ``config.data``).
      arch: stylegan2 | stylegan1 | pggan (default ``config.gan.arch``).
      source: real-image source with ``len()`` and ``get(indices) -> {"image": ...}``;
        default ``jaxdeid.data.get_source(config, "train")`` (normal-light faces), opened lazily
        so that `load_trained` does not need the data.
    """
    gan = config.gan
    arch = arch or gan.arch
    if gan.img_resolution != config.data.resolution:
        raise ValueError(f"gan.img_resolution ({gan.img_resolution}) must equal data.resolution "
                         f"({config.data.resolution}); set both")
    G, D = make_generator(gan, arch), make_discriminator(gan, arch)
    batch_size = int(gan.train.batch_size)
    opt_G = make_optimizer(gan.train, b1=gan.adam_beta1, b2=gan.adam_beta2, clip=None)
    opt_D = make_optimizer(gan.train, b1=gan.adam_beta1, b2=gan.adam_beta2, clip=None)
    beta = ema_beta(gan)
    mixing = float(gan.style_mixing_prob) if arch != "pggan" else 0.0
    progressive = arch == "pggan" and not gan.train_final_resolution
    data_seed = int(config.seed)

    def init(key):
        k_g, k_d = jax.random.split(key)
        g_vars = init_generator(G, k_g)
        d_vars = dict(D.init(k_d, jnp.zeros((batch_size, gan.img_resolution, gan.img_resolution, 3))))
        return {"G": g_vars, "G_ema": jax.tree_util.tree_map(jnp.array, g_vars), "D": d_vars,
                "opt_G": opt_G.init(g_vars["params"]), "opt_D": opt_D.init(d_vars["params"]),
                "step": jnp.zeros((), jnp.int32)}

    holder = {"source": source}

    def batch_fn(position: int):
        if holder["source"] is None:
            holder["source"] = _default_source(config)
        src = holder["source"]
        images = src.get(batch_indices(len(src), batch_size, data_seed, position))["image"]
        return {"image": np.asarray(images, np.float32)}

    def lod_at(step):
        if not progressive:
            return jnp.zeros((), jnp.float32)
        return lod_schedule(step.astype(jnp.float32) * batch_size, gan.img_resolution,
                            gan.pggan_stable_images, gan.pggan_fade_images)

    def generate(g_params, buffers, key, lod):
        """Fakes in [0, 1] for training (random noise, style mixing) and the updated buffers."""
        k_z, k_mix, k_noise = jax.random.split(key, 3)
        variables = {"params": g_params, "buffers": buffers}
        z = jax.random.normal(k_z, (batch_size, G.z_dim))
        ws, updated = G.apply(variables, z, method="map", update_w_avg=True, mutable=["buffers"])
        ws = mix_styles(G, variables, ws, k_mix, mixing)
        extra = synthesis_options(arch, lod)
        images = G.apply(variables, ws, method="synthesize", noise_mode="random", rngs={"noise": k_noise}, **extra)
        return images, updated.get("buffers", buffers)

    def discriminate(d_params, images, lod):
        extra = synthesis_options(arch, lod)
        return D.apply({"params": d_params}, images, **extra)

    def train_step(state, batch, key):
        k_g, k_d = jax.random.split(key)
        step, lod = state["step"], lod_at(state["step"])
        reals = batch["image"]
        if arch == "pggan":
            reals = images_at_lod(reals, lod)

        # --- G phase: non-saturating logistic loss.
        def g_loss_fn(g_params):
            fakes, buffers = generate(g_params, state["G"]["buffers"], k_g, lod)
            return generator_loss(discriminate(state["D"]["params"], fakes, lod)), buffers

        (loss_G, g_buffers), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(state["G"]["params"])
        g_updates, opt_G_state = opt_G.update(g_grads, state["opt_G"], state["G"]["params"])
        g_params = optax.apply_updates(state["G"]["params"], g_updates)

        # --- D phase: logistic loss on the updated G's fakes, + lazy R1 every r1_interval steps.
        fakes = jax.lax.stop_gradient(generate(g_params, g_buffers, k_d, lod)[0])
        do_r1 = (step % gan.r1_interval) == 0

        def d_loss_fn(d_params):
            real_logits = discriminate(d_params, reals, lod)
            fake_logits = discriminate(d_params, fakes, lod)
            main = discriminator_loss(real_logits, fake_logits)
            reg = jax.lax.cond(
                do_r1,
                lambda p: lazy_r1_loss(lambda x: discriminate(p, x, lod), reals, gan.r1_gamma, gan.r1_interval),
                lambda p: jnp.zeros((), jnp.float32), d_params)
            return main + reg, (main, reg, real_logits.mean(), fake_logits.mean())

        (_, (loss_D, r1_term, real_score, fake_score)), d_grads = jax.value_and_grad(
            d_loss_fn, has_aux=True)(state["D"]["params"])
        d_updates, opt_D_state = opt_D.update(d_grads, state["opt_D"], state["D"]["params"])
        d_params = optax.apply_updates(state["D"]["params"], d_updates)

        # --- EMA of G (params averaged, buffers copied).
        ema_params = jax.tree_util.tree_map(lambda e, p: beta * e + (1.0 - beta) * p,
                                            state["G_ema"]["params"], g_params)
        new_state = {"G": {"params": g_params, "buffers": g_buffers},
                     "G_ema": {"params": ema_params, "buffers": g_buffers},
                     "D": {"params": d_params}, "opt_G": opt_G_state, "opt_D": opt_D_state, "step": step + 1}
        metrics = {"loss_G": loss_G, "loss_D": loss_D, "r1_term": r1_term, "D_real": real_score,
                   "D_fake": fake_score, "lod": lod}
        return new_state, metrics

    sample_z = fixed_latents(gan.z_dim, gan.sample_grid, seed=1234)

    @jax.jit
    def _samples(g_vars, lod):
        extra = synthesis_options(arch, lod)
        ws = G.apply(g_vars, sample_z, method="map")
        return G.apply(g_vars, ws, method="synthesize", noise_mode="const", clip=True, **extra)

    def eval_fn(state):
        step = int(state["step"])
        images = np.asarray(_samples(state["G_ema"], lod_at(state["step"])))
        save_png(grid_image(images), Path(config.workdir) / task_name(arch) / f"samples_{step:07d}.png")
        # Mean per-pixel std across the fixed-z samples: near 0 signals mode collapse.
        return {"sample_diversity": float(images.std(axis=0).mean())}

    # init is jitted: run() calls it directly, and eager flax init dispatches (and compiles) op by op.
    return Task(name=task_name(arch), init=jax.jit(init), train_step=train_step, batch_fn=batch_fn, eval_fn=eval_fn)


def write_sample_grid(variables, path, n: int = 16, *, G, seed: int = 1234, truncation_psi: float = 1.0,
                      lod: float = 0.0) -> Path:
    """Writes a PNG grid of `n` samples of generator `G` (fixed z from `seed`, const noise) to `path`."""
    z = fixed_latents(G.z_dim, n, seed=seed)
    extra = {"lod": lod} if isinstance(G, pggan.Generator) else {}

    @jax.jit
    def sample(v, z):
        ws = G.apply(v, z, method="map", truncation_psi=truncation_psi)
        return G.apply(v, ws, method="synthesize", noise_mode="const", clip=True, **extra)

    return save_png(grid_image(np.asarray(sample(variables, z))), path)


def inference_variables(state) -> dict:
    """The EMA generator ({"params", "buffers"}): the only part of a GAN's state that ships."""
    return state["G_ema"]


def load_trained(config, arch: str | None = None) -> dict:
    """The EMA generator variables ({"params", "buffers"}) of the trained `gan_<arch>` (`jaxdeid.store.resolve`)."""
    arch = arch or config.gan.arch
    return resolve(config, make_task(config, arch), inference_variables,
                   f"jaxdeid train gan --arch {arch} --preset {config.preset}")


def fit(config, args) -> TrainingReport:
    """`jaxdeid train gan --arch ...`: trains (or resumes) and writes a final sample grid."""
    arch = args.arch
    config.gan.arch = arch
    task = make_task(config, arch)
    state, records = run(task, config.gan.train, config.workdir, seed=config.seed, desc=task.name)
    G = make_generator(config.gan, arch)
    lod = 0.0
    if arch == "pggan" and not config.gan.train_final_resolution:
        lod = float(lod_schedule(float(state["step"]) * config.gan.train.batch_size, config.gan.img_resolution,
                                 config.gan.pggan_stable_images, config.gan.pggan_fade_images))
    path = write_sample_grid(state["G_ema"], Path(config.workdir) / task.name / "samples_final.png",
                             config.gan.sample_grid, G=G, lod=lod)
    return TrainingReport(task.name, Path(config.workdir), records, int(config.gan.train.steps), (path,))


__all__ = ["make_task", "load_trained", "write_sample_grid", "fit", "mix_styles", "ema_beta",
           "task_name", "r1_penalty", "max_lod"]
