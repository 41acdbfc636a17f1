"""Times this project's StyleGAN2 beside NVIDIA's stylegan2-ada-pytorch on one CPU, one after another.

    python benchmarks/reference_stylegan2_ada.py --reference-python /path/to/venv/bin/python \\
        --reference-path /path/to/stylegan2-ada-pytorch [--min-seconds 10] [--out results]

The reference is not a dependency of this project: bring a Python environment with
``torch`` (plus ``numpy``, ``scipy`` and ``requests``, which its modules import) and a
checkout of the reference repository, unmodified. Its custom CUDA ops fall back to
their reference (pure PyTorch) implementations on the CPU.

For each configuration of `reference_configs.CONFIGS`, three child processes run one
after another, so all three see the machine in nearly the same state; each takes every
measurement of the configuration (synthesis from given w at batch 1, 16 and 64; the
discriminator's forward + backward of a softplus loss at batch 16):

* ``reference``: stylegan2-ada-pytorch, float32, ``torch.set_num_threads(--threads)``;
  synthesis timed with the fused and the unfused modulated convolution, the faster kept;
* ``ours_xla_default``: this project with XLA's own CPU settings (``JAXDEID_XLA_DEFAULTS=0``);
* ``ours``: this project as installed, with the settings of ``jaxdeid/xla_settings.py``.

Each child builds its networks at the configuration and reports their parameter counts
(the parent requires reference and ours to be equal), warms up with one call
(compilation excluded, reported apart), then times calls until at least ``--min-seconds`` and at least
``--min-calls`` calls have run. Writes ``results/reference_stylegan2_ada_<device>.{json,md}``
with provenance (this project's commit, versions, and the reference's torch version).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

IMPLEMENTATIONS = ("reference", "ours_xla_default", "ours")


def _time_calls(call, min_seconds: float, min_calls: int) -> tuple[float, int]:
    """Mean seconds per call after one warm-up call, over >= min_seconds and >= min_calls calls."""
    call()
    calls, start = 0, time.perf_counter()
    while True:
        call()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and calls >= min_calls:
            return elapsed / calls, calls


def _child_reference(args, spec: dict) -> list[dict]:
    import torch

    sys.path.insert(0, args.reference_path)   # the reference checkout, as its own scripts expect
    from training.networks import Discriminator, Generator

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    res, base, channel_max, latent = args.res, args.base, spec["channel_max"], spec["latent"]
    results = []
    for what, batch in spec["measurements"]:
        if what == "d_step":
            net = Discriminator(c_dim=0, img_resolution=res, img_channels=3, channel_base=base,
                                channel_max=channel_max)
            images = torch.rand(batch, 3, res, res, requires_grad=True)

            def step():
                net.zero_grad(set_to_none=True)
                images.grad = None
                torch.nn.functional.softplus(net(images * 2 - 1, None)).sum().backward()

            variants = {"": _time_calls(step, args.min_seconds, args.min_calls)}
        else:
            net = Generator(z_dim=latent, c_dim=0, w_dim=latent, img_resolution=res, img_channels=3,
                            mapping_kwargs=dict(num_layers=spec["mapping_layers"]),
                            synthesis_kwargs=dict(channel_base=base, channel_max=channel_max))
            ws = torch.randn(batch, net.num_ws, latent)
            variants = {}
            for fused in (True, False):
                def step(fused=fused):
                    with torch.no_grad():
                        net.synthesis(ws, noise_mode="const", fused_modconv=fused)

                variants["fused" if fused else "unfused"] = _time_calls(step, args.min_seconds, args.min_calls)
        best = min(variants, key=lambda v: variants[v][0])
        result = {"what": what, "batch": batch, "params": sum(p.numel() for p in net.parameters()),
                  "seconds_per_call": variants[best][0], "calls": variants[best][1],
                  "torch": torch.__version__, "threads": torch.get_num_threads()}
        if best:
            result.update(variant=best, images_per_s_by_variant={v: batch / s for v, (s, _) in variants.items()})
        results.append(result)
    return results


def _child_ours(args, spec: dict) -> list[dict]:
    import jax
    from reference_configs import discriminator_step, synthesis

    results = []
    for what, batch in spec["measurements"]:
        build = discriminator_step if what == "d_step" else synthesis
        fn, inputs, params = build(args.res, args.base, batch)
        t0 = time.perf_counter()
        compiled = jax.jit(fn).lower(*inputs).compile()
        compile_s = time.perf_counter() - t0
        seconds, calls = _time_calls(lambda: jax.block_until_ready(compiled(*inputs)),
                                     args.min_seconds, args.min_calls)
        results.append({"what": what, "batch": batch, "params": params, "seconds_per_call": seconds,
                        "calls": calls, "compile_s": compile_s, "jax": jax.__version__,
                        "xla_flags": os.environ.get("XLA_FLAGS", "")})
    return results


def _run_child(implementation: str, res: int, base: int, spec: dict, args) -> list[dict]:
    """Every measurement of `spec` at one configuration, in a fresh process of `implementation`.

    `spec` (the measurements and the network knobs of reference_configs.py) travels on the
    command line: the reference's Python need not have jax or this project to import them.
    """
    command = [sys.executable if implementation != "reference" else args.reference_python, str(Path(__file__)),
               "--child", implementation, "--spec", json.dumps(spec), "--res", str(res), "--base", str(base),
               "--min-seconds", str(args.min_seconds), "--min-calls", str(args.min_calls),
               "--threads", str(args.threads), "--reference-path", args.reference_path or ""]
    env = dict(os.environ)
    # Each of ours starts from XLA's settings or the package's, nothing else (a user's own
    # XLA_FLAGS are not passed on), and runs on the CPU, like the reference, even on a GPU host.
    env.pop("XLA_FLAGS", None)
    env["JAX_PLATFORMS"] = "cpu"
    if implementation == "ours_xla_default":
        env["JAXDEID_XLA_DEFAULTS"] = "0"
    else:
        env.pop("JAXDEID_XLA_DEFAULTS", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).parent), env.get("PYTHONPATH")) if p)
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{implementation} {res}/{base} failed:\n{done.stderr[-3000:]}")
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for result in results:
        result["images_per_s"] = result["batch"] / result["seconds_per_call"]
    return results


def _markdown(rows: list[dict]) -> str:
    from jaxdeid.results import markdown_table

    def cell(row, impl):
        return f"{row[impl]['images_per_s']:.2f}"

    table = markdown_table(
        ["config", "measurement", "params (reference / ours)", "reference images/s", "ours, XLA default",
         "ours", "ours / reference", "before → after"],
        [[r["config"], r["measurement"], f"{r['reference']['params']:,} / {r['ours']['params']:,}",
          cell(r, "reference") + (f" ({r['reference']['variant']})" if "variant" in r["reference"] else ""),
          cell(r, "ours_xla_default"), cell(r, "ours"), f"**{r['ours_vs_reference']:.2f}×**",
          f"{r['after_vs_before']:.2f}×"] for r in rows])
    return (f"{table}\n\nimages/s, float32, on the same CPU cores; per configuration the three ran one after "
            "another, each in a fresh process (benchmarks/reference_stylegan2_ada.py). `ours, XLA default`: this project with XLA's own CPU "
            "settings; `ours`: with jaxdeid/xla_settings.py (YNNPACK off). Synthesis from given w with fixed noise; "
            "for the reference the faster of its fused and unfused modulated convolution (named). D: forward + "
            "backward of Σ softplus(D(x)) at batch 16, gradients for the parameters and the images.\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-python", help="Python with torch, for the reference")
    parser.add_argument("--reference-path", help="a checkout of stylegan2-ada-pytorch")
    parser.add_argument("--min-seconds", type=float, default=10.0, help="timed seconds per case, at least")
    parser.add_argument("--min-calls", type=int, default=3, help="timed calls per case, at least")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="torch threads; XLA uses every core this process may run on (the default)")
    parser.add_argument("--configs", default=None, help="e.g. 32/8192,64/8192 (default: all)")
    parser.add_argument("--out", default="results")
    parser.add_argument("--child", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--res", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--base", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.spec)
        result = _child_reference(args, spec) if args.child == "reference" else _child_ours(args, spec)
        print(json.dumps(result))
        return 0
    if not (args.reference_python and args.reference_path):
        parser.error("--reference-python and --reference-path are required")

    os.environ["JAX_PLATFORMS"] = "cpu"   # the provenance names the CPU that both ran on
    from reference_configs import CHANNEL_MAX, CONFIGS, LATENT, MAPPING_LAYERS, MEASUREMENTS, config_name

    from jaxdeid.results import device_description, provenance, write_json, write_markdown

    configs = [tuple(map(int, c.split("/"))) for c in args.configs.split(",")] if args.configs else CONFIGS
    spec = {"measurements": MEASUREMENTS, "channel_max": CHANNEL_MAX, "latent": LATENT,
            "mapping_layers": MAPPING_LAYERS}
    t0 = time.perf_counter()
    rows = []
    for res, base in configs:
        # One process per implementation and configuration, the three one after another.
        measured = {impl: _run_child(impl, res, base, spec, args) for impl in IMPLEMENTATIONS}
        for index, (what, batch) in enumerate(MEASUREMENTS):
            row = {"config": config_name(res, base), "measurement": f"{what.replace('_', ' ')} B{batch}",
                   "what": what, "batch": batch, **{impl: measured[impl][index] for impl in IMPLEMENTATIONS}}
            if row["reference"]["params"] != row["ours"]["params"]:
                raise RuntimeError(f"{row['config']} {what}: parameter counts differ "
                                   f"({row['reference']['params']} vs {row['ours']['params']})")
            row["ours_vs_reference"] = row["ours"]["images_per_s"] / row["reference"]["images_per_s"]
            row["after_vs_before"] = row["ours"]["images_per_s"] / row["ours_xla_default"]["images_per_s"]
            print(f"{row['config']:>10} {row['measurement']:<16} reference {row['reference']['images_per_s']:7.2f}  "
                  f"ours (XLA default) {row['ours_xla_default']['images_per_s']:7.2f}  ours "
                  f"{row['ours']['images_per_s']:7.2f}  = {row['ours_vs_reference']:.2f}× reference", flush=True)
            rows.append(row)
    prov = provenance("reference", 0, time.perf_counter() - t0, reference_torch=rows[0]["reference"]["torch"],
                      reference_threads=rows[0]["reference"]["threads"],
                      protocol={"min_seconds": args.min_seconds, "min_calls": args.min_calls, "warm_up_calls": 1})
    device = device_description().split(" (")[0].replace(" ", "-").lower()
    out = Path(args.out)
    write_json(out / f"reference_stylegan2_ada_{device}.json", {"rows": rows, "provenance": prov}, history=False)
    write_markdown(out / f"reference_stylegan2_ada_{device}.md",
                   "# StyleGAN2: this project beside stylegan2-ada-pytorch\n\n" + _markdown(rows), prov)
    print(f"wrote {out}/reference_stylegan2_ada_{device}.{{json,md}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
