"""Training the light networks through the shared loop (`jaxdeid.train`).

Pairs come from the data API: normal-light faces ``get_source(config, "train")`` at
``config.data.resolution``, darkened on the fly with LLNet's synthesis
(`jaxdeid.data.lowlight.darken`, docs/method.md §2) inside the jitted step. The darkening key
of batch ``p`` is ``fold_in(fold_in(PRNGKey(seed), TRAIN_PAIRS_TAG), p)``, so the pair
at a data position is a pure function of (seed, position) and a resumed run sees
exactly the same pairs.

* enhancement (``light_enhance``):   low -> normal,  loss L_E (eq. 4);
* attenuation (``light_attenuate``): normal -> low,  loss L_W = L_E. The attenuation
  network is also given the low-light target's mean luminance (``level``; see
  `retinex` for why), unless ``config.light.attenuate_level_input`` is False.

The attenuation target contains one random noise realisation that no function of
the normal image can predict; MSE therefore drives the output to the *expected*
low-light image at that brightness (the noise averaged out, including the slight
brightening that clipping the noise at 0 causes), which is what lets its mean
luminance match the target's. `jaxdeid.light.evaluate` scores it against both the
noisy target and its noise-free twin.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..data import batch_indices, get_source
from ..data.lowlight import darken
from ..store import resolve
from ..train import Task, TrainingReport, make_optimizer, run
from .losses import light_loss
from .retinex import RetinexNet, make_model, mean_luminance

DIRECTIONS = ("enhance", "attenuate")

# Distinct PRNG streams (folded into the seed key) so training, in-loop eval and test pairs never share draws.
TRAIN_PAIRS_TAG = 0x11E7
EVAL_PAIRS_TAG = 0xE7A1
TEST_PAIRS_TAG = 0x7E57


def task_name(direction: str) -> str:
    return f"light_{direction}"


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")


def darken_batch(key: jax.Array, normal: jax.Array, lowlight_cfg) -> jax.Array:
    """LLNet low-light version of a batch (one gamma / noise level per image)."""

    return darken(key, normal, lowlight_cfg)


def darken_each(keys: jax.Array, normal: jax.Array, lowlight_cfg, *, return_params: bool = False):
    """Darkens image i with ``keys[i]``, so an image's low-light version does not depend on batching.

    Returns ``(low, low_noise_free)``: the LLNet image and its noise-free twin ``normal ** gamma``
    with the same gamma (what a deterministic attenuation can be expected to predict); with
    `return_params` also each image's ``(gamma, sigma)`` [B] (for scores by darkness).
    """

    def one(key, image):
        low, gamma, sigma = darken(key, image[None], lowlight_cfg, return_params=True)
        return low[0], jnp.clip(image, 0.0, 1.0) ** gamma[0], gamma[0], sigma[0]

    low, low_clean, gamma, sigma = jax.vmap(one)(keys, normal)
    return (low, low_clean, gamma, sigma) if return_params else (low, low_clean)


def pair_keys(seed: int, tag: int, example_ids) -> jax.Array:
    """One PRNG key per example id, for deterministic evaluation pairs."""
    base = jax.random.fold_in(jax.random.PRNGKey(seed), tag)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(example_ids, jnp.uint32))


def network_io(direction: str, normal: jax.Array, low: jax.Array):
    """(input, target, level) of a direction: what the network sees and what it must produce."""
    if direction == "enhance":
        return low, normal, None
    return normal, low, mean_luminance(low)


def make_apply(model: RetinexNet) -> Callable:
    """``apply(params, images, level) -> output``, ignoring `level` when the model does not take one."""
    def apply(params, images, level=None):
        if model.level_input:
            return model.apply({"params": params}, images, level)
        return model.apply({"params": params}, images)
    return apply


def make_task(config, direction: str) -> Task:
    """The `Task` (``light_enhance`` / ``light_attenuate``) for `jaxdeid.train.run`.

    The data source is opened lazily, on the first batch, so building the task to
    restore a checkpoint (`load_trained`) never touches the data set.
    """
    _check_direction(direction)
    light, train_cfg = config.light, config.light.train
    resolution = int(config.data.resolution)
    model = make_model(config, direction)
    apply = make_apply(model)
    optimizer = make_optimizer(train_cfg)
    lowlight_cfg = config.lowlight
    seed = int(config.seed)
    train_key = jax.random.fold_in(jax.random.PRNGKey(seed), TRAIN_PAIRS_TAG)

    def init(key):
        images = jnp.zeros((1, resolution, resolution, 3), jnp.float32)
        args = (images, jnp.zeros((1,), jnp.float32)) if model.level_input else (images,)
        params = model.init(key, *args)["params"]
        return {"params": params, "opt_state": optimizer.init(params)}

    @functools.lru_cache(maxsize=None)
    def source(split):

        return get_source(config, split)

    def batch_fn(position):

        train = source("train")
        indices = batch_indices(len(train), int(train_cfg.batch_size), seed, position)
        return {"normal": train.get(indices)["image"], "position": np.uint32(position)}

    def loss_fn(params, normal, low):
        inputs, targets, level = network_io(direction, normal, low)
        outputs = apply(params, inputs, level)
        return light_loss(outputs, targets, light.chi_mse, light.chi_ssim)

    def train_step(state, batch, key):
        del key  # the only randomness is the darkening, keyed by the data position (exact resumption)
        normal = jnp.asarray(batch["normal"])
        low = darken_batch(jax.random.fold_in(train_key, batch["position"]), normal, lowlight_cfg)
        (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], normal, low)
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "opt_state": opt_state}, {"loss": loss, **terms}

    eval_cache = {}

    def eval_fn(state):
        if "batch" not in eval_cache:
            val = source("val")
            count = min(int(light.eval_images), len(val))
            normal = jnp.asarray(val.get(np.arange(count))["image"])
            low, low_clean = darken_each(pair_keys(seed, EVAL_PAIRS_TAG, np.arange(count)), normal, lowlight_cfg)
            eval_cache["batch"] = (normal, low, low_clean)

            def scores(params, normal, low, low_clean):
                inputs, targets, level = network_io(direction, normal, low)
                outputs = jnp.clip(apply(params, inputs, level), 0.0, 1.0)
                loss, _ = light_loss(outputs, targets, light.chi_mse, light.chi_ssim)
                # SSIM/PSNR against what the network can be expected to produce: the normal image
                # (enhancement), or the low-light target's noise-free twin (attenuation: no function
                # of the normal image predicts the noise draw), as the test-split scores do.
                reference = targets if direction == "enhance" else low_clean
                return loss, jnp.mean(dm_pix.ssim(outputs, reference, max_val=1.0)), \
                    jnp.mean(dm_pix.psnr(outputs, reference))

            eval_cache["step"] = jax.jit(scores)
        loss, ssim, psnr = eval_cache["step"](state["params"], *eval_cache["batch"])
        return {"loss": float(loss), "ssim": float(ssim), "psnr": float(psnr)}

    return Task(name=task_name(direction), init=init, train_step=train_step, batch_fn=batch_fn, eval_fn=eval_fn)


def train(config, direction: str, *, steps: int | None = None, log=None):
    """Trains (or resumes) one light network; returns ``(state, records)`` of `jaxdeid.train.run`."""
    task = make_task(config, direction)
    return run(task, config.light.train, config.workdir, seed=int(config.seed), steps=steps,
               desc=f"light {direction} ({config.preset})", log=log)


def fit(config, direction: str) -> TrainingReport:
    """`jaxdeid train enhance` / `jaxdeid train attenuate` (components 1 and 6)."""
    _, records = train(config, direction)
    return TrainingReport(task_name(direction), Path(config.workdir), records,
                          int(config.light.train.steps))


def inference_variables(state) -> dict:
    """The variables a trained light network runs with (its training state less the optimiser)."""
    return {"params": state["params"]}


def load_trained(config, direction: str) -> tuple[RetinexNet, dict]:
    """``(model, variables)`` of the trained network, for ``model.apply(variables, x[, level])``.

    Weights by `jaxdeid.store.resolve`: a workdir checkpoint, else the shipped ones, else
    FileNotFoundError naming the command that trains it.
    """
    variables = resolve(config, make_task(config, direction), inference_variables,
                        f"jaxdeid train {direction} --preset {config.preset}")
    return make_model(config, direction), variables
