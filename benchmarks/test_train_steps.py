"""Throughput of every network's training step (the step the shared loop jits)."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from harness import bench_config, bench_rounds, compile_and_analyse, run_benchmark

from jaxdeid.components import COMPONENTS
from jaxdeid.deid.pipeline import quick_random_variables
from jaxdeid.encoder.train import make_task as make_encoder_task
from jaxdeid.gan import ARCHS as GAN_ARCHS
from jaxdeid.recognizers import ARCHS as RECOGNIZER_ARCHS


def _registry_task(kind, arch=None):
    """The training task of a registry component (the one `jaxdeid train` runs)."""
    return lambda config: COMPONENTS[kind].make_task(config, arch)


def _encoder(arch):
    def build(config):
        # The frozen generator it inverts: random weights at the right shapes (a benchmark
        # times the step, whatever the generator has learnt); the baseline method of the
        # same name uses exactly that generator.
        return make_encoder_task(config, arch, generator_variables=quick_random_variables(config, arch, "generator"))
    return build


TASKS = {
    "train_light_enhance": _registry_task("enhance"),
    "train_light_attenuate": _registry_task("attenuate"),
    "train_crop": _registry_task("crop"),
    **{f"train_recognizer_{a}": _registry_task("recognizer", a) for a in RECOGNIZER_ARCHS},
    **{f"train_gan_{a}": _registry_task("gan", a) for a in GAN_ARCHS},
    **{f"train_encoder_{a}": _encoder(a) for a in GAN_ARCHS},
    "train_deid_finetune": _registry_task("deid"),
}


def _mean_call_s(compiled, args, rounds: int) -> float:
    jax.block_until_ready(compiled(*args))   # first execution allocates
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return float(np.mean(times))


@pytest.mark.parametrize("name", sorted(TASKS))
def test_train_step(benchmark, preset, name):
    config = bench_config(preset)
    task = TASKS[name](config)
    key = jax.random.PRNGKey(0)
    state = task.init(key)
    batch = task.batch_fn(0)
    images = int(jax.tree_util.tree_leaves(batch)[0].shape[0])
    compiled, info = compile_and_analyse(task.train_step, state, batch, key)
    extra = {}
    if name.startswith("train_gan_"):
        # The step runs the lazy R1 penalty when step % r1_interval == 0 (a lax.cond in the
        # same executable): the row times that step, whose FLOPs XLA counts; the common step
        # (step 1, no R1) is timed beside it for the cycle report.py derives.
        common = {**state, "step": jnp.ones_like(state["step"])}
        extra = {"r1_interval": int(config.gan.r1_interval),
                 "common_step_s": _mean_call_s(compiled, (common, batch, key), bench_rounds(config.bench.rounds))}
        state = {**state, "step": jnp.zeros_like(state["step"])}
    run_benchmark(benchmark, compiled, (state, batch, key), images=images, info=info, name=name,
                  preset=preset, rounds=config.bench.rounds, stage="train", **extra)
