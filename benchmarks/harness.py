"""Measuring a jitted function: compile time, XLA cost analysis, memory, throughput.

Benchmarks compile once outside the timed region (compile time is reported
separately), then time steady-state calls with `block_until_ready`. FLOPs come
from XLA's own cost analysis of the compiled executable, so "achieved FLOP/s" is
the compiler's count divided by measured time, not a hand estimate.
"""

from __future__ import annotations

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


def bench_rounds(default: int) -> int:
    """JAXDEID_BENCH_ROUNDS overrides the number of timed rounds (CI runs a reduced mode)."""
    return int(os.environ.get("JAXDEID_BENCH_ROUNDS", default))


def run_benchmark(benchmark, compiled: Callable, args: tuple, *, images: int, info: dict[str, Any],
                  name: str, preset: str, rounds: int = 5, **extra: Any) -> None:
    """Times `compiled(*args)` with pytest-benchmark and records everything report.py needs."""

    def call():
        return jax.block_until_ready(compiled(*args))

    call()  # warm-up outside the timer (first execution allocates)
    benchmark.pedantic(call, rounds=bench_rounds(rounds), iterations=1, warmup_rounds=1)
    mean_s = benchmark.stats.stats.mean
    benchmark.extra_info.update({
        "name": name,
        "preset": preset,
        "batch": images,
        "images_per_s": images / mean_s,
        "compile_s": info["compile_s"],
        "flops_per_image": info["flops"] / images,
        "achieved_flops": info["flops"] / mean_s,
        "peak_bytes": device_peak_bytes() or info["peak_bytes"],
        "device": jax.devices()[0].device_kind,
        "num_devices": jax.device_count(),
        "jax_version": jax.__version__,
        **extra,
    })
