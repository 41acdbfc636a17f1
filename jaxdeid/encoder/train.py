"""Training and loading the latent encoders through the shared loop (task ``encoder_<arch>``).

One encoder per generator: the baselines invert their own generators (docs/method.md §4.5).
The generator is frozen; the encoder learns

    L_C = MSE(x, G(E(x)))                                    (paper eq. 5)
          + ssim_weight · ½(1 − SSIM(G(E(x)), x))            (optional, as L_s of eq. 3)
          + identity_weight · (1 − cos(R(x), R(G(E(x)))))     (optional, R a trained recognizer)

on normal-light training faces.

    jaxdeid train gan --arch stylegan2 --preset small       # first: the generator
    jaxdeid train encoder --arch stylegan2 --preset small
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..data import batch_indices, get_source
from ..gan import ARCHS as GENERATOR_ARCHS, average_latent, init_generator, make_generator, synthesis_options
from ..gan.pggan import lod_schedule
from ..gan.samples import grid_image, save_png
from ..gan.train import load_trained as load_generator
from ..metrics import get_metric
from ..recognizers import make_recognizer
from ..recognizers.model import init_variables
from ..recognizers.train import load_trained as load_recognizer
from ..store import resolve
from ..train import Task, TrainingReport, make_optimizer, run
from .encoder import LatentEncoder, make_encoder, with_w_avg

# The validation figure (inversion SSIM / PSNR) comes from registered metrics (`jaxdeid.metrics.registry`).
ssim, psnr = get_metric("ssim"), get_metric("psnr")

ARCHS = GENERATOR_ARCHS   # one encoder per generator


def task_name(arch: str) -> str:
    if arch not in ARCHS:
        raise ValueError(f"unknown generator arch {arch!r}; choose one of {ARCHS}")
    return f"encoder_{arch}"


def generator_lod(config, arch: str) -> float:
    """PGGAN's level of detail reached by its training (0 = full resolution); 0 for the StyleGANs."""
    if arch != "pggan" or config.gan.train_final_resolution:
        return 0.0

    images_seen = float(config.gan.train.steps) * float(config.gan.train.batch_size)
    return float(lod_schedule(images_seen, config.gan.img_resolution, config.gan.pggan_stable_images,
                              config.gan.pggan_fade_images))


def make_synthesize(G, arch: str, lod: float) -> Callable:
    """``synthesize(g_vars, latents) -> images`` with constant noise (deterministic, unclipped for gradients)."""
    extra = synthesis_options(arch, lod)

    def synthesize(g_vars, latents, clip: bool = False):
        return G.apply(g_vars, latents, method="synthesize", noise_mode="const", clip=clip, **extra)

    return synthesize


def _resize_to(images: jax.Array, resolution: int) -> jax.Array:
    if images.shape[1] == resolution and images.shape[2] == resolution:
        return images
    return jax.image.resize(images, (images.shape[0], resolution, resolution, images.shape[3]), "linear")


def _make_task(config, arch: str, generator_init: Callable[[jax.Array], dict], source=None, eval_source=None,
               identity: Any = None) -> Task:

    ec, train_cfg = config.encoder, config.encoder.train
    G = make_generator(config.gan, arch)
    E = make_encoder(config, G)
    synthesize = make_synthesize(G, arch, generator_lod(config, arch))
    optimizer = make_optimizer(train_cfg)
    resolution = int(config.gan.img_resolution)
    sources: dict[str, Any] = {"train": source, "val": eval_source}
    recognizer = None
    if ec.identity_weight > 0:
        recognizer = make_recognizer(config, ec.identity_arch)

    def get(split):
        if sources[split] is None:
            sources[split] = get_source(config, split)
        return sources[split]

    def init(key):
        k_encoder, k_generator = jax.random.split(key)
        # Copies: the loop donates the state's buffers, which must not delete the caller's generator.
        g_vars = jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), generator_init(k_generator))
        variables = E.init(k_encoder, jnp.zeros((1, resolution, resolution, 3), jnp.float32), train=False)
        variables = with_w_avg(dict(variables), average_latent(G, g_vars))
        state = {"params": variables["params"], "batch_stats": variables["batch_stats"],
                 "latent_avg": variables["latent_avg"], "opt_state": optimizer.init(variables["params"]),
                 # The frozen generator this encoder inverts, kept with it (never optimised).
                 "generator": g_vars}
        if recognizer is not None:
            state["identity"] = jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), identity)
        return state

    def batch_fn(position):
        train = get("train")
        indices = batch_indices(len(train), train_cfg.batch_size, config.seed, position)
        return {"image": np.asarray(train.get(indices)["image"], np.float32)}

    def loss_terms(params, state, faces, train: bool):
        variables = {"params": params, "batch_stats": state["batch_stats"], "latent_avg": state["latent_avg"]}
        if train:
            latents, updates = E.apply(variables, faces, train=True, mutable=["batch_stats"])
            batch_stats = updates["batch_stats"]
        else:
            latents, batch_stats = E.apply(variables, faces, train=False), state["batch_stats"]
        recon = synthesize(jax.lax.stop_gradient(state["generator"]), latents)
        terms = {"mse": jnp.mean((recon - faces) ** 2)}            # eq. (5)
        loss = terms["mse"]
        if ec.ssim_weight > 0:
            terms["ssim_loss"] = jnp.mean(0.5 * (1.0 - ssim(recon, faces)))
            loss = loss + ec.ssim_weight * terms["ssim_loss"]
        if recognizer is not None:
            r_vars = jax.lax.stop_gradient(state["identity"])
            same = jnp.sum(recognizer.apply(r_vars, faces, train=False) * recognizer.apply(r_vars, recon, train=False),
                           axis=-1)
            terms["identity_loss"] = jnp.mean(1.0 - same)
            loss = loss + ec.identity_weight * terms["identity_loss"]
        terms["loss"] = loss
        return loss, (terms, batch_stats, recon)

    def train_step(state, batch, key):
        del key  # the step is deterministic: constant noise in G, no augmentation
        faces = _resize_to(batch["image"], resolution)
        grad_fn = jax.value_and_grad(lambda p: loss_terms(p, state, faces, True), has_aux=True)
        (_, (terms, batch_stats, _)), grads = grad_fn(state["params"])
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        return {**state, "params": optax.apply_updates(state["params"], updates), "batch_stats": batch_stats,
                "opt_state": opt_state}, terms

    @jax.jit
    def eval_step(state, faces):
        faces = _resize_to(faces, resolution)
        _, (terms, _, recon) = loss_terms(state["params"], state, faces, False)
        recon = jnp.clip(recon, 0.0, 1.0)
        return terms["mse"], ssim(recon, faces), psnr(recon, faces)

    def eval_fn(state):
        val = get("val")
        count = min(len(val), int(ec.eval_images))
        if count == 0:
            return {}
        mse, s, p = eval_step(state, np.asarray(val.get(np.arange(count))["image"], np.float32))
        return {"mse": float(mse), "ssim": float(jnp.mean(s)), "psnr": float(jnp.mean(p))}

    return Task(name=task_name(arch), init=init, train_step=train_step, batch_fn=batch_fn, eval_fn=eval_fn)


def make_task(config, arch: str = "stylegan2", generator_variables: dict | None = None, *, source=None,
              eval_source=None) -> Task:
    """The ``encoder_<arch>`` task: trains an encoder against a frozen generator.

    Args:
      config: the full project config.
      arch: the generator (``stylegan2``, ``stylegan1`` or ``pggan``).
      generator_variables: the generator's variables (``{"params", "buffers"}``); default: the
        trained EMA generator, ``jaxdeid.gan.train.load_trained(config, arch)``.
      source / eval_source: face sources with ``get(indices)`` (default: the train / val splits).
    """
    task_name(arch)
    if generator_variables is None:
        generator_variables = load_generator(config, arch)
    identity = None
    if config.encoder.identity_weight > 0:
        identity = load_recognizer(config, config.encoder.identity_arch).variables
    return _make_task(config, arch, lambda key: generator_variables, source, eval_source, identity)


def _restore_task(config, arch: str) -> Task:

    G = make_generator(config.gan, arch)
    identity = None
    if config.encoder.identity_weight > 0:  # only its shapes are needed to restore
        identity = jax.eval_shape(lambda k: init_variables(make_recognizer(config, config.encoder.identity_arch), k,
                                                           config.data.resolution), jax.random.PRNGKey(0))
        identity = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), identity)
    # Restoring needs only the state's structure: a freshly initialised generator has it.
    return _make_task(config, arch, lambda key: init_generator(G, key), identity=identity)


def inference_variables(state) -> dict:
    """The encoder's inference variables (backbone + mapping head, BatchNorm statistics, the latent average)."""
    return {"params": state["params"], "batch_stats": state["batch_stats"], "latent_avg": state["latent_avg"]}


def load_trained(config, arch: str = "stylegan2", *, with_generator: bool = False):
    """The trained encoder: ``(encoder, variables)``, so ``encoder.apply(variables, faces)`` gives latents.

    With ``with_generator=True`` also returns the variables of its generator, resolved by the
    same rule (``jaxdeid.gan.train.load_trained``): ``(encoder, variables, generator_variables)``.
    Weights by `jaxdeid.store.resolve`; FileNotFoundError names the command to run when none exist.
    """
    variables = resolve(config, _restore_task(config, arch), inference_variables,
                        f"jaxdeid train encoder --arch {arch} --preset {config.preset} "
                        f"(after `jaxdeid train gan --arch {arch}`)")
    encoder: LatentEncoder = make_encoder(config, arch)
    if with_generator:
        return encoder, variables, load_generator(config, arch)
    return encoder, variables


def write_reconstructions(config, arch: str, encoder, variables, generator_variables, path, count: int = 8) -> Path:
    """PNG grid: val faces (top row) and their reconstructions G(E(x)) (bottom row)."""

    val = get_source(config, "val")
    count = min(count, len(val))
    faces = _resize_to(jnp.asarray(val.get(np.arange(count))["image"], jnp.float32), int(config.gan.img_resolution))
    synthesize = make_synthesize(make_generator(config.gan, arch), arch, generator_lod(config, arch))
    recon = jax.jit(lambda e, g, x: synthesize(g, encoder.apply(e, x), clip=True))(variables, generator_variables,
                                                                                 faces)
    return save_png(grid_image(np.concatenate([np.asarray(faces), np.asarray(recon)]), columns=count), path)


def fit(config, args) -> TrainingReport:
    """`jaxdeid train encoder --arch ...`: trains (or resumes) and writes a reconstruction grid."""
    arch = args.arch
    task = make_task(config, arch)
    _, records = run(task, config.encoder.train, config.workdir, seed=config.seed, desc=task.name)
    encoder, variables, g_vars = load_trained(config, arch, with_generator=True)
    path = write_reconstructions(config, arch, encoder, variables, g_vars,
                                 Path(config.workdir) / task.name / "reconstructions.png")
    return TrainingReport(task.name, Path(config.workdir), records, int(config.encoder.train.steps),
                          (path,))