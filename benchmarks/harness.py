"""Measuring a jitted function: compile time, XLA cost analysis, memory, throughput.

Benchmarks compile once outside the timed region (compile time is reported
separately), then time steady-state calls with `block_until_ready`. FLOPs come
from XLA's own cost analysis of the compiled executable, so "achieved FLOP/s" is
the compiler's count divided by measured time, not a hand estimate.

Compile log and persistent cache (benchmarks/gpu.sh). On a fresh GPU host compilation,
not execution, is most of a benchmark run (H200: the paper preset's fused private step
compiles in ~36 s and runs in ~1 s; the small preset's in 16-22 s and 0.2 s), and the
whole suite does not compile within the GPU script's 8 minutes. With
``JAX_COMPILATION_CACHE_DIR`` and ``JAXDEID_BENCH_COMPILE_LOG`` set, every cold
compilation is appended to the log, keyed by a hash of the lowered program, and its
executable lands in JAX's persistent cache. A later process that loads the same program
from the cache reports as ``compile_s`` the cold compile time from the log
(``compile_source`` says whose, ``compile_cached_s`` what loading took): a second gpu.sh
call resuming the first's rows, or the timed pass after the optional warm-up phase
(benchmarks/warm_cache.py, ``JAXDEID_BENCH_WARMUP=1``: compile and run once in
concurrent processes, time nothing). A cache hit that nobody logged claims no cold time
(``compile_s`` None).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import time
from typing import Any, Callable

import jax
import numpy as np

from jaxdeid.results import git_commit, library_versions


def _first(analysis):
    # cost_analysis() returns a dict on new jax versions and a one-element list on older ones.
    if isinstance(analysis, (list, tuple)):
        return analysis[0] if analysis else {}
    return analysis or {}


def warmup_mode() -> bool:
    """True in benchmarks/gpu.sh's warm-up phase: compile and run once, time nothing."""
    return os.environ.get("JAXDEID_BENCH_WARMUP", "") not in ("", "0")


def program_key(lowered) -> str:
    """A hash of a lowered program's text (no source locations): the same in every process."""
    return hashlib.sha256(lowered.as_text().encode()).hexdigest()[:32]


_CACHE_HITS = [0]   # persistent-compilation-cache hits in this process (JAX monitoring events)


def _count_cache_hits(event: str, *_args, **_kwargs) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _CACHE_HITS[0] += 1


jax.monitoring.register_event_listener(_count_cache_hits)


def cache_hits() -> int:
    """How many executables this process has loaded from the persistent compilation cache so far."""
    return _CACHE_HITS[0]


def _compile_log() -> dict[str, tuple[float, str]]:
    """{program key: (cold compile seconds, phase)} from the log (first cold compile of each)."""
    path = os.environ.get("JAXDEID_BENCH_COMPILE_LOG")
    if not path or not os.path.exists(path):
        return {}
    log: dict[str, tuple[float, str]] = {}
    for line in open(path):
        if line.strip():
            entry = json.loads(line)
            if not entry.get("from_cache"):
                log.setdefault(entry["key"], (float(entry["compile_s"]), entry.get("phase", "warm-up")))
    return log


_SOURCES = {"warm-up": "warm-up phase (concurrent processes)", "timed": "an earlier benchmark process"}


def compile_time(key: str, measured_s: float, from_cache: bool = False) -> dict[str, Any]:
    """compile_s for a program whose compilation here took `measured_s` (module docstring).

    `from_cache`: this compilation loaded (some of) its executables from the persistent
    cache. With JAXDEID_BENCH_COMPILE_LOG set, every cold compilation is appended to the
    log (and, in the warm-up phase, every compilation), and a compilation served by the
    cache reports the cold compile logged for the same program: one of the warm-up
    phase, or of an earlier gpu.sh call sharing JAXDEID_BENCH_STATE whose row was cut off.
    """
    path = os.environ.get("JAXDEID_BENCH_COMPILE_LOG")
    logged = _compile_log().get(key) if path and from_cache and not warmup_mode() else None
    if path and (warmup_mode() or not from_cache):
        with open(path, "a") as f:
            f.write(json.dumps({"key": key, "compile_s": measured_s, "from_cache": from_cache,
                                "phase": "warm-up" if warmup_mode() else "timed"}) + "\n")
    if logged is not None:
        return {"compile_s": logged[0], "compile_source": _SOURCES[logged[1]], "compile_cached_s": measured_s}
    if from_cache:
        return {"compile_s": None, "compile_source": "persistent cache (cold compile not logged)",
                "compile_cached_s": measured_s}
    return {"compile_s": measured_s, "compile_source": "this process"}


@contextlib.contextmanager
def timed_compilation(key: str):
    """Times the compilation(s) inside the block; the yielded dict then holds `compile_time`'s
    fields for `key`, with from_cache = whether the block loaded anything from the cache."""
    info: dict[str, Any] = {}
    hits, t0 = cache_hits(), time.perf_counter()
    yield info
    info.update(compile_time(key, time.perf_counter() - t0, from_cache=cache_hits() > hits))


def compile_and_analyse(fn: Callable, *args, flops_of: Callable | None = None,
                        **jit_kwargs) -> tuple[Callable, dict[str, Any]]:
    """AOT-compiles ``jax.jit(fn)`` for `args`; returns the executable and its static profile.

    FLOPs are `lowered_flops` of the program (of `flops_of`, the same computation without
    shardings, where `fn` is a sharded jit): the compiled executable's own cost analysis
    is not comparable across backends. On the GPU it leaves out what runs as library
    calls (cuDNN convolutions, cuBLAS matmuls): on the H200 it counted 9.9 MFLOP per image
    for the small crop network's training step, whose lowered program does 0.64 GFLOP.
    """
    lowered = jax.jit(fn, **jit_kwargs).lower(*args)
    key = program_key(lowered) if os.environ.get("JAXDEID_BENCH_COMPILE_LOG") else ""
    with timed_compilation(key) as compiled_info:
        compiled = lowered.compile()
    # On the CPU the program lowered above is already the one `lowered_flops` would lower again.
    on_cpu = flops_of is None and jax.default_backend() == "cpu"
    flops = float(_first(lowered.cost_analysis()).get("flops", float("nan"))) if on_cpu else \
        lowered_flops(flops_of or fn, *args)
    info: dict[str, Any] = {**compiled_info, "flops": flops}
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
    """XLA's FLOP count of ``jax.jit(fn)`` for `args` (arrays or ShapeDtypeStructs), without compiling.

    Lowered for the CPU whatever the default backend, so that every row of every machine
    is counted alike: the operations of the program as written (a convolution's or a
    matmul's 2 FLOPs per multiply-add; of a ``lax.cond`` the costlier branch), before any
    backend rewrites it. A lowered program's cost analysis is not implemented for GPUs
    behind the PJRT plugin, and a compiled GPU executable's leaves out library calls
    (`compile_and_analyse`); the CPU's costs no compilation.
    """
    try:
        cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
    except RuntimeError:   # JAX_PLATFORMS without cpu: lower for the default backend (may give NaN)
        cpu = None
    abstract = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype if hasattr(a, "dtype") else np.result_type(a),
                                       sharding=cpu), args)
    try:
        return float(_first(jax.jit(fn).lower(*abstract).cost_analysis()).get("flops", float("nan")))
    except NotImplementedError:   # no cost analysis of lowered programs on this backend
        return float("nan")


def bench_rounds(default: int) -> int:
    """JAXDEID_BENCH_ROUNDS overrides the number of timed rounds (CI runs a reduced mode)."""
    return int(os.environ.get("JAXDEID_BENCH_ROUNDS", default))


@functools.lru_cache(maxsize=None)
def _row_provenance() -> dict[str, Any]:
    # Once per process: `git_commit` runs git and `library_versions` reads package metadata.
    # XLA_FLAGS: the CPU's convolution algorithm depends on them (jaxdeid/xla_settings.py).
    return {"git_commit": git_commit(), "versions": library_versions(), "xla_flags": os.environ.get("XLA_FLAGS", "")}


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

    if warmup_mode():   # compiled (and cached) is all the warm-up phase is for
        return
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
        **{k: info[k] for k in ("compile_source", "compile_cached_s") if k in info},
        "flops_per_image": info["flops"] / images,
        "flops_counter": "lowered",   # how FLOPs were counted (compile_and_analyse); report.py checks it
        "achieved_flops": info["flops"] / mean_s,
        # The executable's own footprint (XLA memory analysis; None where there is no single
        # executable, e.g. the staged pipeline): the device's peak_bytes_in_use is a
        # process-lifetime maximum, so on a GPU every later row would inherit the largest
        # earlier one; it is kept apart as device_peak_bytes.
        "peak_bytes": info["peak_bytes"],
        "device_peak_bytes": device_peak_bytes(),
        "device": jax.devices()[0].device_kind,
        "num_devices": num_devices,
        "dtype": dtype,
        "jax_version": jax.__version__,
        # Each row names its own commit: report.py may merge rows of several runs into one file.
        **_row_provenance(),
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
