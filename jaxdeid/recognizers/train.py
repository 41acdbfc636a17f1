"""Triplet training of one recognizer through the shared loop (`jaxdeid.train.run`).

    jaxdeid train recognizer --arch resnet50 --preset small

Batches are P identities x K images (``pk_batch_indices``), so every image has
in-batch positives and negatives for online semi-hard mining (`triplet.py`).
The state holds params, BatchNorm running statistics and the optimiser state;
the step, checkpoints and exact resumption are the loop's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..data import pk_batch_indices
from ..data.lowlight import darken
from ..store import resolve, trained_steps
from ..train import Task, TrainingReport, make_optimizer, run
from .evaluate import verify_split
from .model import ARCHS, init_variables, make_embed, make_recognizer
from .splits import get_split
from .triplet import triplet_semihard_loss


def task_name(arch: str) -> str:
    return f"recognizer_{arch}"


def _augment(key: jax.Array, images: jax.Array, rc, lowlight_cfg) -> jax.Array:
    """Random horizontal flips and (optionally) LLNet low-light synthesis, per image, on device."""
    flip_key, dark_key, pick_key = jax.random.split(key, 3)
    if rc.flip:
        flip = jax.random.bernoulli(flip_key, 0.5, (images.shape[0], 1, 1, 1))
        images = jnp.where(flip, images[:, :, ::-1, :], images)
    if rc.lowlight_prob > 0:
        dark = jax.random.bernoulli(pick_key, rc.lowlight_prob, (images.shape[0], 1, 1, 1))
        images = jnp.where(dark, darken(dark_key, images, lowlight_cfg), images)
    return images


def make_task(config, arch: str) -> Task:
    """The `Task` that trains recognizer `arch` (name ``recognizer_<arch>``) with the semi-hard triplet loss."""
    if arch not in ARCHS:
        raise ValueError(f"unknown recognizer arch {arch!r}; choose one of {ARCHS}")
    rc, tc = config.recognizer, config.recognizer.train
    module = make_recognizer(config, arch)
    optimizer = make_optimizer(tc, weight_decay=tc.weight_decay)
    resolution = config.data.resolution
    identities = tc.identities_per_batch
    per_identity = max(2, tc.batch_size // identities)

    def init(key: jax.Array) -> dict[str, Any]:
        variables = init_variables(module, key, resolution)
        return {"params": variables["params"], "batch_stats": variables["batch_stats"],
                "opt_state": optimizer.init(variables["params"])}

    def train_step(state, batch, key):
        aug_key, dropout_key = jax.random.split(key)
        images = _augment(aug_key, batch["image"], rc, config.lowlight)

        def loss_fn(params):
            embeddings, updates = module.apply({"params": params, "batch_stats": state["batch_stats"]}, images,
                                               train=True, mutable=["batch_stats"], rngs={"dropout": dropout_key})
            loss, aux = triplet_semihard_loss(embeddings, batch["label"], rc.margin)
            return loss, (aux, updates.get("batch_stats", state["batch_stats"]))

        (loss, (aux, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "batch_stats": batch_stats, "opt_state": opt_state}, {"loss": loss, **aux}

    def batch_fn(position: int):

        source = get_split(config, "train")
        indices = pk_batch_indices(source.labels, identities, per_identity, config.seed, position)
        batch = source.get(np.asarray(indices))
        return {"image": np.asarray(batch["image"], np.float32), "label": np.asarray(batch["label"], np.int32)}

    embed = make_embed(config, arch)

    def eval_fn(state) -> dict[str, float]:

        variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
        out = verify_split(config, embed, variables, "val", num_pairs=rc.val_pairs, seed=config.seed)
        return {"val_acc": out["accuracy"], "val_tpr": out["tpr"], "val_fpr": out["fpr"]}

    return Task(name=task_name(arch), init=init, train_step=train_step, batch_fn=batch_fn, eval_fn=eval_fn)


class TrainedRecognizer(NamedTuple):
    """A trained recognizer ready to use: ``embed(variables, images)`` is pure and jitted."""

    arch: str
    embed: Any          # embed(variables, images [B,R,R,3] in [0,1]) -> unit-norm [B, embed_dim]
    variables: dict     # {'params', 'batch_stats'}
    step: int           # training step of the checkpoint

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.embed(self.variables, images)


def inference_variables(state) -> dict:
    """A recognizer's inference variables ``{'params', 'batch_stats'}`` from its training state."""
    return {"params": state["params"], "batch_stats": state["batch_stats"]}


def load_trained(config, arch: str) -> TrainedRecognizer:
    """The latest checkpoint of recognizer `arch` under ``config.workdir``; FileNotFoundError if none."""
    task = make_task(config, arch)
    seed_flag = f" --seed {int(config.seed)}" if int(config.seed) else ""
    variables = resolve(config, task, inference_variables,
                        f"jaxdeid train recognizer --arch {arch} --preset {config.preset}{seed_flag}")
    return TrainedRecognizer(arch=arch, embed=make_embed(config, arch), variables=variables,
                             step=trained_steps(config, task.name))


def train(config, arch: str, steps: int | None = None) -> tuple[Any, list[dict]]:
    """Trains (or resumes) recognizer `arch`; returns the final state and the metric records."""
    task = make_task(config, arch)
    return run(task, config.recognizer.train, config.workdir, seed=config.seed, steps=steps,
               desc=f"recognizer {arch}")


def fit(config, args) -> TrainingReport:
    """`jaxdeid train recognizer --arch ARCH`."""
    _, records = train(config, args.arch)
    return TrainingReport(task_name(args.arch), Path(config.workdir), records,
                          int(config.recognizer.train.steps))