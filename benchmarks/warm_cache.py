"""Warm-up phase of benchmarks/gpu.sh: compile every benchmark in concurrent processes.

    python3 benchmarks/warm_cache.py --presets paper,small --jobs 6 --seconds 180 \
        --logs /tmp/warm [pytest node ids ...]

Why: on a fresh GPU host, compiling the benchmarks one after another takes longer than
the GPU script's 8 minutes (H200, paper preset: ~36 s per fused private step, over a
minute for some training steps), while running them takes seconds. XLA compiles each
program on the host's CPU cores, so compiling them side by side in several processes
uses the 16 cores of a GPU host that one process leaves idle.

Each process runs a group of benchmarks with ``JAXDEID_BENCH_WARMUP=1`` (compile, run
once, time nothing; benchmarks/harness.py) and fills JAX's persistent compilation cache
(``JAX_COMPILATION_CACHE_DIR``, which the caller sets) and the compile-time log
(``JAXDEID_BENCH_COMPILE_LOG``). A group holds the benchmarks that share compiled
programs within one process (ours' float32 fused step serves the fused and scale-out
rows); bf16 and the smaller batches, which compile programs of their own, get groups of
their own (the bf16 group compiles the float32 step again for its comparison:
CPU time spent in parallel, not wall time). Groups start most expensive first; at the deadline
the running ones are stopped, and whatever did not get compiled here is compiled by the
timed pass itself. Exit status 0 whatever the groups did: the timed pass decides.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Tests that reuse ours' float32 fused step of the same preset (test_private_step.py: _fused / _setup).
OURS_FAMILY = ("test_private_step_scale_out",)
# Start order within a preset, most expensive first (H200 compile times, benchmarks/gpu.sh header).
COST_ORDER = ("ours", "pggan", "stylegan1", "stylegan2", "staged", "train_gan", "train_recognizer", "train",
              "stages")


def group_of(node_id: str, presets: list[str]) -> tuple[str, str]:
    """(preset, group) of a pytest node id such as ``...::test_private_step_fused[paper-ours]``."""
    function, _, params = node_id.split("::")[-1].partition("[")
    tokens = params.rstrip("]").split("-") if params else []
    preset = next((t for t in tokens if t in presets), presets[0])
    rest = [t for t in tokens if t != preset]
    # bf16 and the smaller batches compile programs of their own: groups of their own, so
    # they compile beside ours' float32 step instead of after it.
    if function == "test_private_step_fused_bf16":
        return preset, "ours_bf16"
    if function == "test_private_step_fused_batch_sizes":
        return preset, f"ours_batch{rest[0] if rest else ''}"
    if function in OURS_FAMILY or (function == "test_private_step_fused" and rest == ["ours"]):
        return preset, "ours"
    if function == "test_private_step_fused":
        return preset, rest[0] if rest else "ours"
    if function == "test_private_step_staged":
        return preset, "staged"
    if function == "test_stage":
        return preset, "stages"
    return preset, rest[0] if rest else function


def _cost_rank(preset: str, group: str, presets: list[str]) -> tuple[int, int]:
    prefix = next((i for i, p in enumerate(COST_ORDER) if group == p or group.startswith(p + "_")),
                  len(COST_ORDER))
    return presets.index(preset) if preset in presets else len(presets), prefix


def collect(nodes: list[str], presets: str) -> list[str]:
    """The node ids pytest expands `nodes` into for `presets` (parametrized ids included)."""
    env = {**os.environ, "JAXDEID_BENCH_PRESETS": presets}
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *nodes],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    return [line.strip() for line in out.stdout.splitlines() if "::" in line]


def plan(node_ids: list[str], presets: list[str]) -> list[tuple[str, str, list[str]]]:
    """[(preset, group, node ids)], most expensive first."""
    groups: dict[tuple[str, str], list[str]] = {}
    for node in node_ids:
        groups.setdefault(group_of(node, presets), []).append(node)
    order = sorted(groups, key=lambda k: _cost_rank(k[0], k[1], presets))
    return [(p, g, groups[(p, g)]) for p, g in order]


def run_group(preset: str, group: str, nodes: list[str], deadline: float, logs: Path, env: dict) -> tuple[int, float]:
    """Runs one group's benchmarks in warm-up mode until done or the deadline; (exit status, seconds)."""
    t0 = time.time()
    left = deadline - t0
    if left < 5:
        return -1, 0.0
    log = open(logs / f"warm_{preset}_{group}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-disable",
                             *nodes], cwd=ROOT, env={**env, "JAXDEID_BENCH_PRESETS": preset},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        status = proc.wait(timeout=left)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)   # mid-compile: nothing to save, the cache keeps what finished
        status = proc.wait()
    log.close()
    return status, time.time() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("nodes", nargs="*", default=["benchmarks"], help="pytest node ids (default: benchmarks)")
    parser.add_argument("--presets", default="paper,small")
    parser.add_argument("--jobs", type=int, default=8, help="concurrent processes (a GPU host has 16 cores)")
    parser.add_argument("--seconds", type=float, default=180.0, help="wall-clock budget of the whole phase")
    parser.add_argument("--logs", default=".", help="folder for one log per group")
    args = parser.parse_args(argv)
    start = time.time()
    deadline = start + args.seconds
    presets = [p for p in args.presets.split(",") if p]
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        print("warm_cache: JAX_COMPILATION_CACHE_DIR is not set: the timed pass could not reuse anything")
        return 0
    env = {**os.environ, "JAXDEID_BENCH_WARMUP": "1"}
    # Each process takes a share of the GPU's memory instead of JAX's default 75 %. XLA's
    # autotuner picks each convolution's algorithm at compile time among those whose scratch
    # fits, and the cached executable keeps that choice: a small share could cost speed in the
    # timed pass. Check: the paper bf16 fused step ran 30.4 images/s on the H200 compiled with
    # the full 75 % (commit 1ac820b, no warm-up); a warm-up run should match it.
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / max(args.jobs, 1):.3f}")
    groups = plan(collect(args.nodes, args.presets), presets)
    print(f"warm_cache: {len(groups)} groups, {args.jobs} at a time, {args.seconds:.0f} s "
          f"(collected in {time.time() - start:.0f} s)", flush=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(run_group, p, g, nodes, deadline, logs, env): (p, g, len(nodes))
                   for p, g, nodes in groups}
        for future in concurrent.futures.as_completed(futures):
            preset, group, count = futures[future]
            status, seconds = future.result()
            what = {0: "compiled", -1: "not started (deadline)", -9: "stopped at the deadline"}.get(status,
                                                                                                f"exit {status}")
            print(f"  {preset:6s} {group:28s} {count:2d} benchmarks: {what} after {seconds:.0f} s", flush=True)
    print(f"warm_cache: done after {time.time() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
