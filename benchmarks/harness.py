"""Measuring a jitted function: compile time, XLA cost analysis, memory, throughput.

Benchmarks compile once outside the timed region (compile time is reported
separately), then time steady-state calls with `block_until_ready`. FLOPs come
from XLA's own cost analysis of the compiled executable, so "achieved FLOP/s" is
the compiler's count divided by measured time, not a hand estimate.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import jax


def _first(analysis):
    # cost_analysis() returns a dict on new jax versions and a one-element list on older ones.
    if isinstance(analysis, (list, tuple)):
        return analysis[0] if analysis else {}
    return analysis or {}


def compile_and_analyse(fn: Callable, *args, **jit_kwargs) -> tuple[Callable, dict[str, Any]]:
    """AOT-compiles ``jax.jit(fn)`` for `args`; returns the executable and its static profile."""
    t0 = time.perf_counter()
    lowered = jax.jit(fn, **jit_kwargs).lower(*args)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    cost = _first(compiled.cost_analysis())
    info: dict[str, Any] = {"compile_s": compile_s, "flops": float(cost.get("flops", float("nan")))}
    try:
        mem = compiled.memory_analysis()
        # Peak = arguments + outputs + XLA temporaries, minus buffers aliased between them.
        info["peak_bytes"] = int(mem.argument_size_in_bytes + mem.output_size_in_bytes
                                 + mem.temp_size_in_bytes - mem.alias_size_in_bytes)
    except Exception:  # some backends do not implement memory_analysis
        info["peak_bytes"] = None
    return compiled, info


def device_peak_bytes() -> int | None:
    """Runtime peak memory of device 0 where the backend reports it (GPUs do; the CPU does not)."""
    stats = jax.devices()[0].memory_stats() if hasattr(jax.devices()[0], "memory_stats") else None
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def bench_config(preset: str, *overrides: str):
    """`get_config(preset)` for benchmarks: data rendered on the fly, nothing prepared or preloaded.

    A benchmark times the step, not the data pipeline: the small/paper presets' tfds
    storage would render and write the whole data set before the first batch, and the
    recognizers' preloading would hold the whole train split in memory.
    JAXDEID_BENCH_SET adds overrides of your own, separated by ";" (e.g.
    ``workdir=/nowhere`` benchmarks random weights although checkpoints exist).
    """
    from jaxdeid.configs import get_config

    extra = [o for o in os.environ.get("JAXDEID_BENCH_SET", "").split(";") if o.strip()]
    return get_config(preset, ["data.storage=direct", "recognizer.preload_train=False", *overrides, *extra])


def lowered_flops(fn: Callable, *args) -> float:
    """XLA's FLOP count of ``jax.jit(fn)`` for `args` (arrays or ShapeDtypeStructs), without compiling."""
    return float(_first(jax.jit(fn).lower(*args).cost_analysis()).get("flops", float("nan")))


def bench_rounds(default: int) -> int:
    """JAXDEID_BENCH_ROUNDS overrides the number of timed rounds (CI runs a reduced mode)."""
    return int(os.environ.get("JAXDEID_BENCH_ROUNDS", default))


def run_benchmark(benchmark, compiled: Callable, args: tuple, *, images: int, info: dict[str, Any],
                  name: str, preset: str, rounds: int = 5, num_devices: int = 1, dtype: str = "float32",
                  warm: bool = False, **extra: Any) -> None:
    """Times `compiled(*args)` with pytest-benchmark and records everything report.py needs.

    `num_devices` is how many devices the step is spread over (the scale-out rows; every
    other row runs on device 0 even when more are visible); `dtype` the compute dtype.
    `warm`: `compiled` has already run on these shapes, so the untimed warm-up calls are
    skipped (a paper-preset private step takes seconds per call on a GPU).
    """

    def call():
        return jax.block_until_ready(compiled(*args))

    if not warm:
        call()  # warm-up outside the timer (first execution allocates)
    benchmark.pedantic(call, rounds=bench_rounds(rounds), iterations=1, warmup_rounds=0 if warm else 1)
    mean_s = benchmark.stats.stats.mean
    benchmark.extra_info.update({
        "name": name,
        "preset": preset,
        "batch": images,
        "images_per_s": images / mean_s,
        "compile_s": info["compile_s"],
        "flops_per_image": info["flops"] / images,
        "achieved_flops": info["flops"] / mean_s,
        # The executable's own footprint (XLA memory analysis) where known: the device's
        # peak_bytes_in_use is a process-lifetime maximum, so on a GPU every later row would
        # inherit the largest earlier one; it is kept apart as device_peak_bytes.
        "peak_bytes": info["peak_bytes"] if info["peak_bytes"] is not None else device_peak_bytes(),
        "device_peak_bytes": device_peak_bytes(),
        "device": jax.devices()[0].device_kind,
        "num_devices": num_devices,
        "dtype": dtype,
        "jax_version": jax.__version__,
        **extra,
    })
    _append_jsonl(benchmark)


def _append_jsonl(benchmark) -> None:
    """With JAXDEID_BENCH_JSONL set, appends this row to that file as soon as it is measured.

    pytest-benchmark writes its JSON only when the session ends; benchmarks/gpu.sh runs
    each pytest call under a timeout, and a call killed mid-compile would otherwise lose
    every row it had finished. Each line has the shape of one entry of the JSON's
    "benchmarks" list (name, fullname, stats, extra_info), which report.py reads.
    """
    path = os.environ.get("JAXDEID_BENCH_JSONL")
    if not path:
        return
    stats = benchmark.stats.stats
    record = {"name": benchmark.name, "fullname": benchmark.fullname,
              "stats": {k: float(getattr(stats, k)) for k in ("min", "max", "mean", "stddev", "median")}
              | {"rounds": int(stats.rounds)},
              "extra_info": dict(benchmark.extra_info)}
    with open(path, "a") as f:
        f.write(json.dumps(record, default=float) + "\n")
