"""XLA FLOP counts of what benchmarks/gpu.sh executes, per preset, without compiling anything.

    python3 benchmarks/estimate_gpu.py --preset paper [--preset small] [--tflops 100]

Every count is XLA's cost analysis of the *lowered* (traced, not compiled) function, at
shapes only (`jax.eval_shape` of the initialisers), so it runs on a laptop CPU. The
private step's while-loop body is counted once by XLA; the total multiplies it by the
iterations the loop runs with random weights: the cap, ``deid.max_iters`` (random
judges keep accepting the perturbed face, so the loop never stops early). The printed
time is FLOPs / ``--tflops`` (sustained FLOP/s assumed), i.e. execution only: compile
time is not in it (gpu.sh's header gives measured compile times).
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp


def _shapes(tree):
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def private_step_flops(config, method: str, batch: int) -> dict[str, float]:
    from harness import lowered_flops
    from jaxdeid.deid.pipeline import init_params
    from jaxdeid.deid.step import make_private_step
    from test_private_step import _loop_iteration_flops

    params = jax.eval_shape(lambda k: init_params(config, method, k), jax.random.PRNGKey(0))
    scene = int(config.data.scene_resolution)
    x = jax.ShapeDtypeStruct((batch, scene, scene, 3), jnp.float32)
    static = lowered_flops(make_private_step(config, method), params, x, jax.random.PRNGKey(0))
    # One noise-loop iteration, counted as the benchmark counts it (XLA counts the loop body once).
    body = _loop_iteration_flops(config, method, params, batch)
    iterations = int(config.deid.max_iters)
    return {"static": static, "loop_body": body, "iterations": iterations,
            "total": static + (iterations - 1) * body}


def train_step_flops(config, name: str) -> float:
    from harness import lowered_flops
    from test_train_steps import TASKS

    task = TASKS[name](config)
    state = jax.eval_shape(task.init, jax.random.PRNGKey(0))
    batch = _shapes(task.batch_fn(0))
    return lowered_flops(task.train_step, state, batch, jax.random.PRNGKey(0))


def main(argv=None) -> int:
    from harness import bench_config
    from test_train_steps import TASKS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", action="append", default=None)
    parser.add_argument("--tflops", type=float, default=100.0, help="sustained TFLOP/s assumed for the time")
    args = parser.parse_args(argv)
    rate = args.tflops * 1e12
    for preset in args.preset or ["paper"]:
        config = bench_config(preset)
        batch = config.bench.batch_sizes[-1]
        print(f"== {preset}: batch {batch}, deid.max_iters {config.deid.max_iters}")
        step_total = 0.0
        for method in ("ours", "pggan", "stylegan1", "stylegan2"):
            f = private_step_flops(config, method, batch)
            step_total += f["total"]
            print(f"private step {method:<10} static {f['static'] / 1e9:10.1f} GFLOP  loop body "
                  f"{f['loop_body'] / 1e9:10.1f} GFLOP  x{f['iterations']} -> {f['total'] / 1e9:10.1f} GFLOP "
                  f"= {f['total'] / rate:6.2f} s at {args.tflops:g} TFLOP/s", flush=True)
        for name in sorted(TASKS):
            flops = train_step_flops(config, name)
            print(f"{name:<30} {flops / 1e9:10.1f} GFLOP / step = {flops / rate * 1e3:8.2f} ms", flush=True)
        print(f"sum of one call of each private step: {step_total / rate:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
