"""The ``deid_finetune`` task: our StyleGAN2 generator fine-tuned with L_F (eq. 8), `jaxdeid train deid`.

The losses themselves are pure functions in `losses`. The task needs other trained
networks (the pretrained generator, its encoder, the white-box judges); it receives
them as a `FrozenNetworks` (the component registry's loaders), so this module
depends on no loader and the registry can list it as one more component.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from ..data import batch_indices, get_source
from ..encoder import make_encoder
from ..gan import init_generator, make_discriminator, make_generator
from ..gan.losses import paper_eq6_discriminator_loss, r1_penalty
from ..recognizers.model import make_recognizer
from ..train import Task, TrainingReport, make_optimizer, run
from ..train.loop import ema_update
from .losses import finetune_terms

TASK_NAME = "deid_finetune"


class FrozenNetworks(Protocol):
    """The trained networks the fine-tuning reads, by role ("generator", "encoder", "judges/<arch>")."""

    def load(self, role: str) -> Any: ...           # inference variables; FileNotFoundError when untrained
    def init(self, role: str, key: jax.Array) -> Any: ...   # random inference variables (allow_untrained)
    def train_command(self, role: str) -> str: ...  # the command that trains it


def inference_variables(state) -> Any:
    """The fine-tuned EMA generator: the only part of the task's state that ships."""
    return state["G_ema"]


def make_task(config, networks: FrozenNetworks, allow_untrained: bool = False) -> Task:
    """The ``deid_finetune`` Task: fine-tunes our StyleGAN2 generator with L_F (eq. 8).

    State: the generator G (EMA copy kept for inference), its discriminator D, and the
    Adam states; initialised from the pretrained ``gan_stylegan2`` checkpoint (the
    paper fine-tunes a trained generator; from scratch only with ``allow_untrained``).
    Frozen, from ``networks`` (the registry's loaders, `jaxdeid.components.MethodNetworks`):
    the StyleGAN2 encoder and the white-box judges. A missing one raises FileNotFoundError at the
    first step, naming its training command:
    a generator fine-tuned against random judges would be reported as "L_F fine-tuned"
    while it learned nothing about evading recognition. ``allow_untrained`` initialises
    missing ones at random instead (tests and demos only).

    One step: x̂ = a batch of normal-light faces (the enhanced faces' domain);
    w = E(x̂); w' = w + σ·n (config.deid.finetune_sigma); y' = G(w').
    G descends L_F; D descends L_D (eq. 6 as printed, R1 on reals).
    """
    gan_cfg, dc = config.gan, config.deid
    G, D = make_generator(gan_cfg, "stylegan2"), make_discriminator(gan_cfg, "stylegan2")
    opt_G = make_optimizer(dc.train, b1=gan_cfg.adam_beta1, b2=gan_cfg.adam_beta2, clip=None)
    opt_D = make_optimizer(dc.train, b1=gan_cfg.adam_beta1, b2=gan_cfg.adam_beta2, clip=None)
    batch_size, resolution = int(dc.train.batch_size), int(config.data.resolution)
    judges = tuple(config.recognizer.judges)
    frozen: dict[str, Any] = {}

    def frozen_networks():
        # Loaded lazily (first step): restoring the fine-tuned generator
        # (`components.finetuned_generator`) never needs them.
        if not frozen:
            frozen["encoder_module"] = make_encoder(config, "stylegan2")
            frozen["judge_modules"] = {a: make_recognizer(config, a) for a in judges}
            names = ["encoder"] + [f"judges/{a}" for a in judges]
            variables, missing = {}, []
            for name in names:
                try:
                    variables[name] = networks.load(name)
                except FileNotFoundError:
                    missing.append(name)
            if missing and not allow_untrained:   # fail before initialising anything
                listing = "\n".join(f"  {n:<22} {networks.train_command(n)}" for n in missing)
                raise FileNotFoundError(f"L_F fine-tuning needs these trained networks under {config.workdir}; "
                                        f"train them first:\n{listing}\n(or pass --allow-untrained: tests/demos only)")
            for name in missing:
                variables[name] = networks.init(name, jax.random.fold_in(jax.random.PRNGKey(int(config.seed)),
                                                                          names.index(name)))
            frozen["variables"], frozen["untrained"] = variables, missing
        return frozen

    # Loaded eagerly, not inside `init`: restoring a checkpoint runs `init` under
    # jax.eval_shape, where a nested Orbax restore would only see tracers.
    try:
        pretrained = networks.load("generator")
    except FileNotFoundError:
        if not allow_untrained:
            raise FileNotFoundError(f"L_F fine-tunes a trained StyleGAN2 generator; none under {config.workdir}: "
                                    f"{networks.train_command('generator')}") from None
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
        new_state = {"G": new_G, "G_ema": ema_update(state["G_ema"], new_G, 0.999),
                     "D": {**state["D"], "params": d_params},
                     "opt_G": opt_G_state, "opt_D": opt_D_state}
        metrics = {"loss": terms["L_F"], "loss_D": d_value, **{f"loss/{k}": v for k, v in terms.items()}}
        return new_state, metrics

    return Task(name=TASK_NAME, init=init, train_step=train_step, batch_fn=batch_fn)


def fit(config, args, networks: FrozenNetworks) -> TrainingReport:
    """`jaxdeid train deid`: fine-tunes the StyleGAN2 generator with L_F (eq. 8)."""
    task = make_task(config, networks, allow_untrained=bool(getattr(args, "allow_untrained", False)))
    _, records = run(task, config.deid.train, config.workdir, seed=int(config.seed), desc=TASK_NAME)
    return TrainingReport(TASK_NAME, Path(config.workdir), records, int(config.deid.train.steps))