"""Throughput of every network's training step (the step the shared loop jits)."""

import jax
import pytest

from harness import bench_config, compile_and_analyse, run_benchmark


def _light(config):
    from jaxdeid.light.train import make_task
    return make_task(config, "enhance")


def _recognizer(arch):
    def build(config):
        from jaxdeid.recognizers.train import make_task
        return make_task(config, arch)
    return build


def _gan(arch):
    def build(config):
        from jaxdeid.gan.train import make_task
        return make_task(config, arch)
    return build


def _crop(config):
    from jaxdeid.crop.train import make_task
    return make_task(config)


TASKS = {
    "train_light_enhance": _light,
    "train_crop": _crop,
    **{f"train_recognizer_{a}": _recognizer(a) for a in ("vgg16", "resnet50", "mobilenetv3", "senet50")},
    **{f"train_gan_{a}": _gan(a) for a in ("stylegan2", "stylegan1", "pggan")},
}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_train_step(benchmark, preset, name):
    config = bench_config(preset)
    task = TASKS[name](config)
    key = jax.random.PRNGKey(0)
    state = task.init(key)
    batch = task.batch_fn(0)
    images = int(jax.tree_util.tree_leaves(batch)[0].shape[0])
    compiled, info = compile_and_analyse(task.train_step, state, batch, key)
    run_benchmark(benchmark, compiled, (state, batch, key), images=images, info=info, name=name,
                  preset=preset, rounds=config.bench.rounds, stage="train")
