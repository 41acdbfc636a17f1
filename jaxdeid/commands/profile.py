"""`jaxdeid profile`: where one private step's time goes, stage by stage, from a `jax.profiler` trace.

    jaxdeid profile --preset smoke --batch 4 [--method ours] [--dtype bfloat16] [--out DIR]

Builds the fused private step (`jaxdeid.deid.step.make_private_step`) of a preset,
compiles it, warms it up, and captures a profiler trace of ``--calls`` timed calls on a
fixed low-light batch (SynthFaces test identities, darkened as the benchmarks do) into
``--out`` (default ``runs/profile/<preset>_b<B>``). It prints a table computed from that
trace (`jaxdeid.profiling`): milliseconds per call of enhance, detect + crop, encode, the
judges on the original faces, each noise-loop stage (also per iteration), release, and
what lies between stages, with each one's share; the loop's iteration count as the step
reported it; and the measured wall time per call. The same numbers go to
``<out>/stages.json``.

Weights: ``--weights random`` (default) draws every network at its exact shapes without
compiling initialisers (`jaxdeid.deid.pipeline.quick_random_params`, as the benchmarks
do), counts every detection as a face (``crop.score_threshold=0``) and makes the
detector's boxes face-sized (`with_face_sized_boxes`), so the noise loop always runs (with
random judges, to ``deid.max_iters``). ``--weights trained`` loads every network from
the workdir / weights store and fails, naming the training commands, if one is missing.

Exit status: 0 profiled, 1 failed (e.g. missing checkpoints with --weights trained), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..deid.methods import METHODS, uses_light_networks
from ..deid.pipeline import load_params, quick_random_params, with_face_sized_boxes
from ..deid.step import COMPUTE_DTYPES, make_private_step
from ..eval.protocol import unseen_lowlight_frames
from ..profiling import format_table, load_trace_events, parse_hlo, private_step_rows, stage_table, trace_calls
from .common import EXIT_OK, add_config_flags, config_from_args
from .deidentify import positive_int

STEP_NAME = "private_step"   # each traced call's step annotation

_VIEWING = """\
What is written under --out:
  plugins/profile/<time>/perfetto_trace.json.gz   open at https://ui.perfetto.dev ("Open trace file"):
      each call's XLA ops on the host's CPU threads (a GPU's on its streams), named by HLO
      instruction; each call is a "private_step" step.
  plugins/profile/<time>/*.xplane.pb              TensorBoard: `tensorboard --logdir OUT`, Profile tab
      (needs the tensorboard-plugin-profile package): trace viewer and op statistics, where an
      op's jax name (the stage's named scope) is shown.
  stages.json                                     the printed table as JSON.
Stages are the jax.named_scope names of jaxdeid/deid/step.py; jaxdeid/profiling.py explains how
the trace's time is attributed to them."""


def register(subparsers):
    p = subparsers.add_parser(
        "profile", help="profile the jitted private step: a jax.profiler trace and a per-stage time table",
        description=__doc__.split("\n\n")[0], epilog=_VIEWING,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(p)
    p.add_argument("--batch", type=positive_int, default=None,
                   help="frames per call (default: the preset's largest benchmark batch, config.bench.batch_sizes)")
    p.add_argument("--method", default="ours", choices=METHODS, help="ours (default) or a baseline generator")
    p.add_argument("--dtype", default=None, choices=COMPUTE_DTYPES,
                   help="compute dtype of the networks (config.deid.compute_dtype; default: the config's)")
    p.add_argument("--weights", default="random", choices=("random", "trained"),
                   help="random (default): shape-exact random networks, every frame a face; "
                        "trained: checkpoints / weights store, every network required")
    p.add_argument("--calls", type=positive_int, default=3, help="timed calls inside the trace (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls after compiling, before the trace (default 1)")
    p.add_argument("--out", default=None, help="trace folder (default: runs/profile/<preset>_b<batch>)")
    p.set_defaults(func=main)


def main(args) -> int:
    # Random networks: every detection counts as a face, so the noise loop runs (module docstring).
    # The user's --set comes after and wins; --dtype after that.
    forced = ["crop.score_threshold=0.0"] if args.weights == "random" else []
    args.overrides = forced + list(args.overrides) + ([f"deid.compute_dtype={args.dtype}"] if args.dtype else [])
    config = config_from_args(args)
    batch = args.batch or int(config.bench.batch_sizes[-1])
    out = Path(args.out or Path("runs") / "profile" / f"{config.preset}_b{batch}")
    dtype = str(config.deid.get("compute_dtype", "float32"))

    if args.weights == "random":
        params = with_face_sized_boxes(quick_random_params(config, args.method, seed=int(config.seed)), config)
        weights = ("random (quick_random_params; crop.score_threshold=0 and face-sized boxes, so the noise loop "
                   "runs every time)")
    else:
        params, _ = load_params(config, args.method)   # FileNotFoundError lists the training commands
        weights = f"trained (checkpoints under {config.workdir} / the weights store)"
    x = jnp.asarray(unseen_lowlight_frames(config, batch))
    key = jax.random.PRNGKey(int(config.seed))

    print(f"jaxdeid profile: {args.method}, {config.preset} preset, batch {batch}, {dtype}, "
          f"on {jax.default_backend()} ({jax.devices()[0].device_kind})")
    print(f"weights: {weights}")
    start = time.perf_counter()
    compiled = jax.jit(make_private_step(config, args.method)).lower(params, x, key).compile()
    print(f"compiled in {time.perf_counter() - start:.1f} s")
    for _ in range(max(args.warmup, 0)):
        jax.block_until_ready(compiled(params, x, key))

    traced = trace_calls(compiled, (params, x, key), out, args.calls, name=STEP_NAME)
    _, diagnostics = traced.outputs
    # The loop runs while any sample is not done, so its trip count is the largest per-sample count.
    iterations = int(np.max(np.asarray(diagnostics["iterations"])))
    rows = private_step_rows(config.recognizer.judges, light=uses_light_networks(args.method), bf16=dtype != "float32")
    table = stage_table(load_trace_events(traced.trace_file), parse_hlo(compiled.as_text()), rows,
                        iterations=iterations, wall_s=float(np.mean(traced.wall_s)), step_name=STEP_NAME)
    print(f"trace: {traced.trace_file}")
    print(f"  Perfetto: open it at https://ui.perfetto.dev; TensorBoard: tensorboard --logdir {out} (Profile tab)")
    print(format_table(table))
    report = {"preset": config.preset, "method": args.method, "batch": batch, "dtype": dtype,
              "weights": args.weights, "device": jax.devices()[0].device_kind, "trace_file": str(traced.trace_file),
              "wall_s": traced.wall_s, **table.as_dict()}
    (out / "stages.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"table: {out / 'stages.json'}")
    return EXIT_OK
