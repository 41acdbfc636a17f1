"""Throughput of the private step: fused single jit vs staged, per stage, the baselines,
bf16 against float32, and scale-out over 1, 2 and 4 devices.

Each method's row also records quality on the fixed evaluation batch (extra_info):
SSIM / PSNR / CS of the private frames against the low-light input frames, and the
white-box 1:1 rates of the judges at their threshold: TPR, the fraction of (private,
original) pairs of the same person a judge still accepts (the step's own similarities),
and FPR, the fraction of impostor pairs it accepts: each private face against the
original face of every other person of the batch (every frame is a different identity). With untrained (randomly initialised) networks —
always the case at the paper preset, and whenever no checkpoint exists — the quality
numbers only show the code path runs; ``trained`` in extra_info says which (random
weights are `quick_random_variables`: numpy draws at the exact shapes, no initialiser
to compile).

Every frame of the evaluation batch holds a face, and these rows time the whole
pipeline: every detection counts as a face (``crop.score_threshold=0``), and when the
detector is untrained, or finds no usable box in some frame, its size head is biased to
face-sized boxes (``faces_forced`` in extra_info), so the noise loop always runs (with
random judges, to ``deid.max_iters``) instead of a weak detector sending frames to the
cheap no-face fallback. With ``faces_forced`` the quality numbers describe that setting.

FLOPs of the noise loop: XLA's cost analysis counts a while-loop body ONCE, whatever
its trip count. The private-step rows therefore add (iterations run - 1) x the FLOPs
of one loop iteration (perturb, synthesize, attenuate, judge; lowered, not compiled),
so FLOPs/image and achieved FLOP/s are what the step really executed;
``flops_per_image_static`` keeps XLA's raw count and ``loop_iterations`` the trip count.

bf16 (``private_step_fused_bf16``): ``deid.compute_dtype=bfloat16`` on the same batch,
key and weights as the float32 row; its extra_info holds the accuracy loss against
float32: ``bf16_frames_max_abs_diff`` / ``bf16_frames_mean_abs_diff`` (private frames,
[0, 1] scale), the same for the released faces (``bf16_faces_*``, meaningful also when
every sample fell back), ``bf16_similarity_mean_abs_diff`` (judge cosine similarities, where both
found a face) and ``bf16_success_flip_fraction`` (samples whose success flag differs) and
``bf16_box_max_abs_diff_px`` (largest move of a detected box edge, frame pixels).

Scale-out (``private_step_scale_out``): `make_jitted_private_step` with the batch split
over the first 1, 2 and 4 devices (benchmarks/conftest.py makes 4 host-platform CPU
devices; on a machine with several GPUs the same rows are GPUs, plus one row over all
of them when there are more than 4). Host-platform devices share the same CPU cores,
so on the CPU these rows show the cost of partitioning, not a speed-up.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from harness import bench_config, compile_and_analyse, lowered_flops, run_benchmark, timed_compilation

from jaxdeid.deid.methods import METHODS
from jaxdeid.eval.protocol import unseen_lowlight_frames

# Every frame of the evaluation batch holds one face, and the benchmark times the whole
# pipeline, so every detection counts as a face (score threshold 0): a weak or untrained
# detector would otherwise report "no face" and the step would skip the noise loop.
FACE_OVERRIDES = ("crop.score_threshold=0.0",)


def _config(preset: str, *overrides: str):
    return bench_config(preset, *FACE_OVERRIDES, *overrides)


def _faces_found(config, method: str, params, preset: str) -> bool:
    """Whether the detector finds a usable face in every frame of the largest evaluation batch."""
    from jaxdeid.deid.step import make_stages

    stages = make_stages(config, method)

    def found(params, frames):
        return stages.found(*stages.detect(params, stages.enhance(params, frames)))

    frames = jnp.asarray(_eval_frames(preset, _batches(preset)[-1]))
    return bool(np.all(np.asarray(jax.jit(found)(params, frames))))


_VARIABLES: dict = {}  # (preset, workdir, network, method or None) -> (nested variables, trained)


def _load_or_random(config, method: str) -> tuple[dict, list[str]]:
    """Trained variables where a checkpoint exists, else `quick_random_variables` (untrained).

    Random weights come from numpy at the shapes `jax.eval_shape` finds, not from each
    module's jitted initialiser: at the paper preset on a fresh GPU host, compiling some
    thirty initialisers (every network of every method) would eat a large part of the
    time budget of benchmarks/gpu.sh, and a benchmark only needs the right shapes.
    The methods share (the same arrays of) every network that does not depend on their
    generator: light networks, detector and judges.
    """
    import zlib

    from jaxdeid.deid.pipeline import load_params, network_names, quick_random_variables
    params: dict = {}
    untrained: list[str] = []
    for name in network_names(config, method):
        # Encoder and generator are the method's own (ours may load the L_F-fine-tuned G).
        key = (config.preset, config.workdir, name, method if name in ("encoder", "generator") else None)
        if key not in _VARIABLES:
            try:
                _VARIABLES[key] = (load_params(config, method, names=[name])[0], True)
            except FileNotFoundError:
                variables = quick_random_variables(config, method, name, seed=zlib.crc32(name.encode()))
                nested = {"judges": {name.split("/", 1)[1]: variables}} if name.startswith("judges/") else \
                    {name: variables}
                _VARIABLES[key] = (nested, False)
        loaded, trained = _VARIABLES[key]
        if not trained:
            untrained.append(name)
        loaded = dict(loaded)
        params.setdefault("judges", {}).update(loaded.pop("judges", {}))
        params.update(loaded)
    return params, untrained


@functools.lru_cache(maxsize=None)
def _setup(preset: str, method: str):
    """(config, params, trained, faces_forced) of `method`; see the module docstring for faces_forced."""
    from jaxdeid.deid.pipeline import with_face_sized_boxes

    config = _config(preset)
    params, untrained = _load_or_random(config, method)
    forced = "detector" in untrained or not _faces_found(config, method, params, preset)
    if forced:
        params = with_face_sized_boxes(params, config)
    return config, params, not untrained, forced


@functools.lru_cache(maxsize=None)
def _eval_frames(preset: str, batch: int) -> np.ndarray:
    """The protocol's fixed low-light batch of unseen identities, once per (preset, batch)."""
    return unseen_lowlight_frames(bench_config(preset), batch)


@functools.lru_cache(maxsize=None)
def _judge_similarity_matrices(preset: str):
    """jit: (params, private faces, original faces) -> [judges, B, B] cosine similarities.

    The judges are the same networks for every method (`_load_or_random`), so one
    compiled program serves all four rows of a preset.
    """
    from jaxdeid.deid.step import make_stages
    from jaxdeid.metrics import cosine_similarity

    stages = make_stages(_config(preset), "ours")
    archs = tuple(a for a, _ in stages.networks.judges)

    def matrices(params, private, original):
        return jnp.stack([cosine_similarity(stages.embed(params, a, private)[:, None],
                                            stages.embed(params, a, original)[None, :]) for a in archs])

    return jax.jit(matrices)


def _quality(config, preset: str, params, frames_in, frames_out, diagnostics) -> dict:
    from jaxdeid.metrics import image_cosine_similarity, psnr, ssim, verification_rates

    sims = np.asarray(diagnostics["similarities"])
    cross = np.asarray(_judge_similarity_matrices(preset)(params, diagnostics["private_faces"],
                                                           diagnostics["original_faces"]))
    impostor = cross[:, ~np.eye(cross.shape[1], dtype=bool)].ravel()
    return {
        "ssim": float(jnp.mean(ssim(frames_out, frames_in))),
        "psnr": float(jnp.mean(jnp.clip(psnr(frames_out, frames_in), None, 100.0))),
        "cs": float(jnp.mean(image_cosine_similarity(frames_out, frames_in))),
        "tpr": float(np.mean(sims >= config.recognizer.threshold)),
        "fpr": float(verification_rates(impostor, np.zeros(impostor.shape, bool),
                                        config.recognizer.threshold)["fpr"]),
        "success": float(np.mean(np.asarray(diagnostics["success"]))),
        "iterations": float(np.mean(np.asarray(diagnostics["iterations"]))),
    }


def _batches(preset):
    return bench_config(preset).bench.batch_sizes


def _loop_iteration_flops(config, method: str, params, batch: int) -> float:
    """FLOPs of ONE noise-loop iteration at `batch` (what XLA's count of the loop leaves out)."""
    from jaxdeid.deid.step import make_stages

    stages = make_stages(config, method)
    archs = tuple(a for a, _ in stages.networks.judges)
    res = int(config.data.resolution)
    faces = jax.ShapeDtypeStruct((batch, res, res, 3), jnp.float32)
    latents = jax.eval_shape(stages.encode, params, faces)

    def one_iteration(params, latents, level, key):
        w = stages.perturb(latents, key, 0, jnp.ones((batch,), bool))
        synthesized = stages.synthesize(params, w)
        private = stages.attenuate(params, synthesized, level)
        judged = jnp.concatenate([private, synthesized]) if stages.judge_both_views else private
        return [stages.embed(params, a, judged) for a in archs]

    return lowered_flops(one_iteration, params, latents, jax.ShapeDtypeStruct((batch,), jnp.float32),
                         jax.random.PRNGKey(0))


def _with_loop_flops(info: dict, config, method: str, params, batch: int, diagnostics) -> dict:
    """`info` with flops = what the step executed (module docstring)."""
    iterations = int(np.max(np.asarray(diagnostics["iterations"]))) if batch else 0
    static = info["flops"]
    body = _loop_iteration_flops(config, method, params, batch)
    return {**info, "flops": static + (iterations - 1) * body, "flops_static": static, "loop_iterations": iterations}


@functools.lru_cache(maxsize=None)
def _fused(preset: str, method: str, batch: int, dtype: str = "float32"):
    """The fused step of `method` compiled and run once on the fixed batch (shared by several rows)."""
    from jaxdeid.deid.step import make_private_step

    _, params, trained, _ = _setup(preset, method)
    config = _config(preset, f"deid.compute_dtype={dtype}")
    x = jnp.asarray(_eval_frames(preset, batch))
    key = jax.random.PRNGKey(0)
    compiled, info = compile_and_analyse(make_private_step(config, method), params, x, key)
    frames, diagnostics = jax.tree_util.tree_map(np.asarray, compiled(params, x, key))
    info = _with_loop_flops(info, config, method, params, batch, diagnostics)
    return config, params, trained, x, key, compiled, info, frames, diagnostics


def _loop_extra(info: dict, batch: int, preset: str, method: str = "ours") -> dict:
    return {"flops_per_image_static": info["flops_static"] / batch, "loop_iterations": info["loop_iterations"],
            "faces_forced": _setup(preset, method)[3]}


@pytest.mark.parametrize("method", METHODS)
def test_private_step_fused(benchmark, preset, method):
    batch = _batches(preset)[-1]
    config, params, trained, x, key, compiled, info, frames, diagnostics = _fused(preset, method, batch)
    name = "private_step_fused" if method == "ours" else f"baseline_{method}_step"
    run_benchmark(benchmark, compiled, (params, x, key), images=batch, info=info, name=name, preset=preset,
                  rounds=config.bench.rounds, method=method, trained=trained, warm=True,
                  **_loop_extra(info, batch, preset, method),
                  **_quality(config, preset, params, x, frames, diagnostics))


def test_private_step_fused_bf16(benchmark, preset):
    """Ours with every network in bf16, and its accuracy loss against the float32 step."""
    batch = _batches(preset)[-1]
    *_, frames32, diag32 = _fused(preset, "ours", batch)
    config, params, trained, x, key, compiled, info, frames, diagnostics = _fused(preset, "ours", batch, "bfloat16")
    difference = np.abs(frames.astype(np.float64) - frames32)
    faces_difference = np.abs(np.asarray(diagnostics["private_faces"], np.float64) - diag32["private_faces"])
    sims, sims32 = np.asarray(diagnostics["similarities"]), np.asarray(diag32["similarities"])
    both = np.isfinite(sims) & np.isfinite(sims32)   # NaN: no face found
    loss = {
        "bf16_frames_max_abs_diff": float(difference.max()),
        "bf16_frames_mean_abs_diff": float(difference.mean()),
        # The released faces themselves (diagnostics), compared even where both steps fell
        # back to pixelation (random judges never let a face through, so all frames do):
        "bf16_faces_max_abs_diff": float(faces_difference.max()),
        "bf16_faces_mean_abs_diff": float(faces_difference.mean()),
        "bf16_similarity_mean_abs_diff": float(np.abs(sims - sims32)[both].mean()) if both.any() else float("nan"),
        "bf16_success_flip_fraction": float(np.mean(np.asarray(diagnostics["success"])
                                                    != np.asarray(diag32["success"]))),
        # A detector box moved by bf16 moves the pasted face / pixelated square's edges:
        # large local pixel differences with a tiny mean. In frame pixels:
        "bf16_box_max_abs_diff_px": float(np.max(np.abs(np.asarray(diagnostics["box"]) - np.asarray(diag32["box"])))
                                          * config.data.scene_resolution),
    }
    run_benchmark(benchmark, compiled, (params, x, key), images=batch, info=info, name="private_step_fused_bf16",
                  preset=preset, rounds=config.bench.rounds, dtype="bfloat16", method="ours", trained=trained,
                  warm=True, **_loop_extra(info, batch, preset), **_quality(config, preset, params, x, frames, diagnostics), **loss)


@pytest.mark.parametrize("batch_index", [0, 1])
def test_private_step_fused_batch_sizes(benchmark, preset, batch_index):
    """Ours at the smaller batch sizes (batch scaling; the largest is test_private_step_fused's row)."""
    if batch_index >= len(_batches(preset)) - 1:
        pytest.skip(f"batch {_batches(preset)[batch_index]} is the largest: test_private_step_fused[{preset}-ours]")
    batch = _batches(preset)[batch_index]
    config, params, trained, x, key, compiled, info, _, _ = _fused(preset, "ours", batch)
    run_benchmark(benchmark, compiled, (params, x, key), images=batch, info=info, name="private_step_fused",
                  preset=preset, rounds=config.bench.rounds, method="ours", trained=trained,
                  warm=True, **_loop_extra(info, batch, preset))


SCALE_OUT = (1, 2, 4, "all")


@pytest.mark.parametrize("devices", SCALE_OUT)
def test_private_step_scale_out(benchmark, preset, devices):
    """Data-parallel fused step (`make_jitted_private_step`) over 1, 2, 4 (and all, if > 4) devices."""
    from jaxdeid.deid.step import make_jitted_private_step, make_private_step

    available = jax.device_count()
    if available == 1:
        pytest.skip("one device: private_step_fused is the one-device row")
    if devices == "all":
        if available <= 4:
            pytest.skip(f"{available} device(s): covered by the 1/2/4 rows")
        devices = available
    if devices > available:
        pytest.skip(f"{devices} devices asked for, {available} visible")
    batch = _batches(preset)[-1]
    if batch % devices:
        pytest.skip(f"batch {batch} does not split over {devices} devices")
    config, params, trained, _ = _setup(preset, "ours")
    x = jnp.asarray(_eval_frames(preset, batch))
    key = jax.random.PRNGKey(0)
    step = make_jitted_private_step(config, "ours", num_devices=devices)
    placed = (*step.place(params, x), key)
    # FLOPs of the whole batch: the same computation, unsharded (compile_and_analyse).
    compiled, info = compile_and_analyse(step.jitted, *placed, flops_of=make_private_step(config, "ours"))
    _, diagnostics = compiled(*placed)
    info = _with_loop_flops(info, config, "ours", params, batch, diagnostics)
    run_benchmark(benchmark, compiled, placed, images=batch, info=info, name="private_step_scale_out",
                  preset=preset, rounds=config.bench.rounds, num_devices=devices, method="ours",
                  trained=trained, warm=True, **_loop_extra(info, batch, preset))


def test_private_step_staged(benchmark, preset):
    """The same computation, each network jitted on its own with host transfers between."""
    from jaxdeid.deid.step import make_private_step, make_staged_pipeline

    config, params, trained, _ = _setup(preset, "ours")
    batch = _batches(preset)[-1]
    x = jnp.asarray(_eval_frames(preset, batch))
    key = jax.random.PRNGKey(0)
    staged = make_staged_pipeline(config, "ours")
    with timed_compilation(f"staged:{preset}:{batch}:{config.deid.compute_dtype}") as compiled_s:
        _, diagnostics = staged(params, x, key)  # first call compiles every stage (and runs them once)
    # The same FLOPs as the fused step, loop included (the staged loop also runs every
    # sample until the last one is done): the fused step's static count plus the loop.
    static = lowered_flops(make_private_step(config, "ours"), params, x, key)
    info = _with_loop_flops({**compiled_s, "flops": static, "peak_bytes": None},
                            config, "ours", params, batch, diagnostics)
    run_benchmark(benchmark, staged, (params, x, key), images=batch, info=info, name="private_step_staged",
                  preset=preset, rounds=config.bench.rounds, method="ours", trained=trained,
                  warm=True, **_loop_extra(info, batch, preset))


STAGES = ("enhance", "detect", "encode", "synthesize", "attenuate", "recognize")


@pytest.mark.parametrize("stage", STAGES)
def test_stage(benchmark, preset, stage):
    """Per-stage breakdown of ours (each stage jitted alone, at the largest batch)."""
    from jaxdeid.deid.step import make_stages

    config, params, _, _ = _setup(preset, "ours")
    stages = make_stages(config, "ours")
    batch = _batches(preset)[-1]
    frames = jnp.asarray(_eval_frames(preset, batch))
    res = config.data.resolution
    faces = jnp.full((batch, res, res, 3), 0.5, jnp.float32)
    latents = jax.eval_shape(stages.encode, params, faces)
    latents = jnp.zeros(latents.shape, latents.dtype)
    level = jnp.full((batch,), 0.1, jnp.float32)
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
                  rounds=config.bench.rounds, stage=stage)
