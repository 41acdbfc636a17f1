"""Throughput of the private step: fused single jit vs staged, per stage, and the baselines.

Each method's row also records quality on the fixed evaluation batch (extra_info):
SSIM / PSNR / CS of the private frames against the low-light input frames, and the
white-box 1:1 acceptance rate (TPR: fraction of (private, original) pairs a judge
still accepts at the threshold). With untrained (randomly initialised) networks —
always the case at the paper preset, and whenever no checkpoint exists — the quality
numbers only show the code path runs; ``trained`` in extra_info says which.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from harness import compile_and_analyse, run_benchmark
from jaxdeid.configs import get_config

METHODS = ("ours", "pggan", "stylegan1", "stylegan2")


@functools.lru_cache(maxsize=None)
def _setup(preset: str, method: str):
    from jaxdeid.deid.pipeline import load_params

    config = get_config(preset)
    params, untrained = load_params(config, method, allow_untrained=True, key=jax.random.PRNGKey(0))
    return config, params, not untrained


@functools.lru_cache(maxsize=None)
def _eval_frames(preset: str, batch: int) -> np.ndarray:
    """A fixed low-light evaluation batch: SynthFaces test-identity scenes, LLNet-darkened."""
    from jaxdeid.data.lowlight import darken_np
    from jaxdeid.data.synthfaces import render_scenes

    config = get_config(preset)
    ids = np.arange(batch) + 10_000_000  # identities outside every training split's range
    frames, _ = render_scenes(ids, np.zeros(batch, np.int64), config.data.scene_resolution, seed=1234)
    return darken_np(np.random.default_rng(0), frames.astype(np.float32) / 255.0, config.lowlight).astype(np.float32)


def _quality(config, frames_in, frames_out, diagnostics) -> dict:
    from jaxdeid.metrics import image_cosine_similarity, psnr, ssim

    sims = np.asarray(diagnostics["similarities"])
    return {
        "ssim": float(jnp.mean(ssim(frames_out, frames_in))),
        "psnr": float(jnp.mean(jnp.clip(psnr(frames_out, frames_in), None, 100.0))),
        "cs": float(jnp.mean(image_cosine_similarity(frames_out, frames_in))),
        "tpr": float(np.mean(sims >= config.recognizer.threshold)),
        "success": float(np.mean(np.asarray(diagnostics["success"]))),
        "iterations": float(np.mean(np.asarray(diagnostics["iterations"]))),
    }


def _batches(preset):
    return get_config(preset).bench.batch_sizes


@pytest.mark.parametrize("method", METHODS)
def test_private_step_fused(benchmark, preset, method):
    from jaxdeid.deid.step import make_private_step

    config, params, trained = _setup(preset, method)
    key = jax.random.PRNGKey(0)
    for batch in _batches(preset)[-1:]:
        x = jnp.asarray(_eval_frames(preset, batch))
        compiled, info = compile_and_analyse(make_private_step(config, method), params, x, key)
        frames, diagnostics = compiled(params, x, key)
        name = "private_step_fused" if method == "ours" else f"baseline_{method}_step"
        run_benchmark(benchmark, compiled, (params, x, key), images=batch, info=info, name=name, preset=preset,
                      rounds=config.bench.rounds, method=method, trained=trained,
                      **_quality(config, x, frames, diagnostics))


@pytest.mark.parametrize("batch_index", [0, -1])
def test_private_step_fused_batch_sizes(benchmark, preset, batch_index):
    """Ours at the smallest and largest batch (batch scaling)."""
    from jaxdeid.deid.step import make_private_step

    config, params, trained = _setup(preset, "ours")
    batch = _batches(preset)[batch_index]
    x = jnp.asarray(_eval_frames(preset, batch))
    key = jax.random.PRNGKey(0)
    compiled, info = compile_and_analyse(make_private_step(config, "ours"), params, x, key)
    run_benchmark(benchmark, compiled, (params, x, key), images=batch, info=info, name="private_step_fused",
                  preset=preset, rounds=config.bench.rounds, method="ours", trained=trained)


def test_private_step_staged(benchmark, preset):
    """The same computation, each network jitted on its own with host transfers between."""
    import time

    from jaxdeid.deid.step import make_staged_pipeline

    config, params, trained = _setup(preset, "ours")
    batch = _batches(preset)[-1]
    x = jnp.asarray(_eval_frames(preset, batch))
    key = jax.random.PRNGKey(0)
    staged = make_staged_pipeline(config, "ours")
    t0 = time.perf_counter()
    staged(params, x, key)  # first call compiles every stage
    info = {"compile_s": time.perf_counter() - t0, "flops": float("nan"), "peak_bytes": None}
    run_benchmark(benchmark, staged, (params, x, key), images=batch, info=info, name="private_step_staged",
                  preset=preset, rounds=config.bench.rounds, method="ours", trained=trained)


STAGES = ("enhance", "detect", "encode", "synthesize", "attenuate", "recognize")


@pytest.mark.parametrize("stage", STAGES)
def test_stage(benchmark, preset, stage):
    """Per-stage breakdown of ours (each stage jitted alone, at the largest batch)."""
    from jaxdeid.deid.step import make_stages

    config, params, _ = _setup(preset, "ours")
    stages = make_stages(config, "ours")
    batch = _batches(preset)[-1]
    frames = jnp.asarray(_eval_frames(preset, batch))
    res = config.data.resolution
    faces = jnp.full((batch, res, res, 3), 0.5, jnp.float32)
    latents = jax.eval_shape(stages.encode, params, faces)
    latents = jnp.zeros(latents.shape, latents.dtype)
    level = jnp.full((batch,), 0.1, jnp.float32)
    judge = config.recognizer.judges[0]
    fn, args = {
        "enhance": (stages.enhance, (params, frames)),
        "detect": (stages.detect, (params, frames)),
        "encode": (stages.encode, (params, faces)),
        "synthesize": (stages.synthesize, (params, latents)),
        "attenuate": (stages.attenuate, (params, faces, level)),
        "recognize": (lambda p, f: jnp.stack([stages.embed(p, a, f) for a in config.recognizer.judges]),
                      (params, faces)),
    }[stage]
    compiled, info = compile_and_analyse(fn, *args)
    run_benchmark(benchmark, compiled, args, images=batch, info=info, name=f"stage_{stage}", preset=preset,
                  rounds=config.bench.rounds, stage=stage, judge=judge)
