"""Turns pytest-benchmark JSON into results/benchmarks.{json,md}.

    python -m pytest benchmarks --benchmark-json=/tmp/bench.json
    python benchmarks/report.py /tmp/bench.json [more.json|rows.jsonl ...] [--preset smoke] [--out results]

Several raw files (e.g. one per pytest call of benchmarks/gpu.sh) are merged into one
report; a ``.jsonl`` file holds rows appended one by one (harness.py, JAXDEID_BENCH_JSONL).

Writes, timm-style, one file pair named after the environment it ran in
(``benchmarks_<device>_jax<version>.{json,md}``) plus ``benchmarks.json`` /
``benchmarks.md`` for the newest run, and keeps the raw pytest-benchmark JSON
beside them. Derived columns (images/s, FLOP/s) are recomputed here from the raw
timings, never edited by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from jaxdeid.results import markdown_table, provenance, write_json, write_markdown

ROW_KEYS = ("name", "preset", "batch", "images_per_s", "compile_s", "flops_per_image", "achieved_flops",
            "peak_bytes", "device", "jax_version", "git_commit")
QUALITY_KEYS = ("tpr", "fpr", "ssim", "psnr", "cs")
# Extra per-row keys kept when present (num_devices and dtype are always filled in).
EXTRA_KEYS = ("stage", "method", "trained", "faces_forced", "success", "iterations", "loop_iterations",
              "flops_per_image_static", "device_peak_bytes", "compile_source", "compile_cached_s",
              "r1_interval", "common_step_s", "common_step_images_per_s", "lazy_r1_cycle_images_per_s",
              "config", "params")
BF16_LOSS_KEYS = ("bf16_frames_max_abs_diff", "bf16_frames_mean_abs_diff", "bf16_faces_max_abs_diff",
                  "bf16_faces_mean_abs_diff", "bf16_similarity_mean_abs_diff", "bf16_success_flip_fraction",
                  "bf16_box_max_abs_diff_px")


def jax_device_kind() -> str:
    import jax

    return jax.devices()[0].device_kind


def environment_tag(device: str, jax_version: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", f"{device}_jax{jax_version}").strip("-").lower()


def rows_from_raw(raw: dict, commit: str) -> list[dict]:
    rows = []
    for bench in raw.get("benchmarks", []):
        info = dict(bench.get("extra_info", {}))
        if "images_per_s" not in info:
            continue
        mean_s = bench["stats"]["mean"]
        batch = info["batch"]
        flops = info.get("flops_per_image", float("nan")) * batch
        row = {k: info.get(k) for k in ROW_KEYS}
        row.update(images_per_s=batch / mean_s, achieved_flops=flops / mean_s,
                   git_commit=info.get("git_commit") or bench.get("git_commit") or commit,
                   mean_s=mean_s, stddev_s=bench["stats"]["stddev"], rounds=bench["stats"]["rounds"])
        if info.get("common_step_s"):
            # GAN training: the row timed the lazy-R1 step; one cycle = (interval - 1) common steps + it.
            interval = int(info["r1_interval"])
            info["common_step_images_per_s"] = batch / info["common_step_s"]
            info["lazy_r1_cycle_images_per_s"] = batch * interval / ((interval - 1) * info["common_step_s"] + mean_s)
        if info.get("flops_counter") != "lowered" and (info.get("device") or "cpu") != "cpu":
            # Rows measured on a GPU before FLOPs were counted on the lowered program took the
            # compiled executable's count, which leaves out cuDNN/cuBLAS calls (harness.py:
            # compile_and_analyse): not shown rather than wrong.
            row.update(flops_per_image=None, achieved_flops=None, flops_not_comparable=True)
        row["num_devices"] = int(info.get("num_devices", 1))
        row["dtype"] = info.get("dtype", "float32")
        for k in QUALITY_KEYS + EXTRA_KEYS + BF16_LOSS_KEYS:
            if k in info:
                row[k] = info[k]
        rows.append(row)
    return rows


def load_raw(path: Path, commit: str | None = None) -> dict:
    """A pytest-benchmark JSON, or the JSON-lines rows harness.py appends (JAXDEID_BENCH_JSONL).

    `commit`: the commit the raw's rows were measured at, for rows that do not name their
    own (harness.py writes `git_commit` into every row; a raw file from before it did has
    no reliable commit: on a device copy, pytest-benchmark's commit_info is whatever HEAD
    the copied work tree had, not what ran).
    """
    if commit:
        raw = load_raw(path)
        for bench in raw.get("benchmarks", []):
            bench.setdefault("git_commit", commit)
        return raw
    if path.suffix == ".jsonl":
        import platform

        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return {"machine_info": {"node": platform.node(), "cpu": {"brand_raw": platform.processor() or "unknown"}},
                "benchmarks": rows}
    return json.loads(path.read_text())


def merge_raw(raws: list[dict]) -> dict:
    """One pytest-benchmark document from several (machine_info and the like from the first).

    A benchmark present in several inputs (a second gpu.sh call filling the rows a first one
    lost, fed the first call's merged raw JSON too) keeps its entry from the last input that
    has it, in the position of its first appearance.
    """
    merged = dict(raws[0])
    by_name: dict[str, dict] = {}
    for raw in raws:
        for bench in raw.get("benchmarks", []):
            by_name[bench.get("fullname") or bench["name"]] = bench
    merged["benchmarks"] = list(by_name.values())
    return merged


def _ours_fused(rows: list[dict]) -> list[dict]:
    """Ours' one-device float32 fused-step rows (one per preset and batch)."""
    return [r for r in rows if r["name"] == "private_step_fused" and r["dtype"] == "float32"
            and r["num_devices"] == 1 and r.get("method", "ours") == "ours"]


def bf16_vs_float32(rows: list[dict]) -> dict[str, dict]:
    """Per preset@batch: bf16 speed-up over the float32 fused step and the accuracy it costs."""
    out = {}
    for bf16 in (r for r in rows if r["name"] == "private_step_fused_bf16"):
        for f32 in _ours_fused(rows):
            if f32["preset"] == bf16["preset"] and f32["batch"] == bf16["batch"]:
                out[f"{bf16['preset']}@{bf16['batch']}"] = {
                    "speedup": bf16["images_per_s"] / f32["images_per_s"],
                    "bf16_images_per_s": bf16["images_per_s"], "float32_images_per_s": f32["images_per_s"],
                    **{k: bf16.get(k) for k in BF16_LOSS_KEYS}}
    return out


def scale_out(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per preset@batch: images/s of the data-parallel step on each device count."""
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["name"] == "private_step_scale_out":
            out.setdefault(f"{r['preset']}@{r['batch']}", {})[str(r["num_devices"])] = r["images_per_s"]
    return {k: dict(sorted(v.items(), key=lambda kv: int(kv[0]))) for k, v in out.items()}


def fused_vs_staged_pairs(rows: list[dict]) -> dict[str, tuple[int, float]]:
    """Per preset: (batch, images/s of the fused single-jit step over the staged pipeline),
    at the largest batch where both were measured in the same run."""
    pairs: dict[str, tuple[int, float]] = {}
    for fused in sorted(_ours_fused(rows), key=lambda r: r["batch"]):
        for staged in (r for r in rows if r["name"] == "private_step_staged"):
            if staged["preset"] == fused["preset"] and staged["batch"] == fused["batch"]:
                pairs[fused["preset"]] = (fused["batch"], fused["images_per_s"] / staged["images_per_s"])
    return pairs


def fused_vs_staged(rows: list[dict]) -> dict[str, float]:
    """{preset: fused / staged images/s} (issue 7's schema; the batch is in the Markdown)."""
    return {preset: ratio for preset, (_, ratio) in fused_vs_staged_pairs(rows).items()}


def _quality_section(rows: list[dict]) -> str:
    method_rows = [r for r in rows if r.get("method") and "tpr" in r and r["name"] != "private_step_scale_out"]
    if not method_rows:
        return "(no method row in this run)"
    table = markdown_table(
        ["method", "preset", "batch", "dtype", "trained", "images/s", "TPR", "FPR", "SSIM", "PSNR (dB)", "CS",
         "success"],
        [[r["method"], r["preset"], r["batch"], r["dtype"], "yes" if r.get("trained") else "no (random)",
          f"{r['images_per_s']:.2f}", _fmt_num(r.get("tpr"), ".3f"), _fmt_num(r.get("fpr"), ".3f"),
          _fmt_num(r.get("ssim"), ".3f"), _fmt_num(r.get("psnr"), ".2f"), _fmt_num(r.get("cs"), ".3f"),
          _fmt_num(r.get("success"), ".3f")] for r in method_rows])
    return (f"{table}\n\nOn the fixed evaluation batch (benchmarks/test_private_step.py): TPR = (private, original) "
            "pairs of the same person a judge still accepts, FPR = impostor pairs (a private face against another "
            "person's original) it accepts, both over the four judges at their threshold; SSIM / PSNR / CS of the "
            "private frames against the low-light input frames; success = samples released as private. With "
            "random weights these numbers only show that the code path runs.")


def _gan_section(rows: list[dict]) -> str:
    gan_rows = [r for r in rows if r.get("lazy_r1_cycle_images_per_s")]
    if not gan_rows:
        return "(no GAN training row in this run)"
    table = markdown_table(
        ["benchmark", "preset", "batch", "R1 step images/s (the row)", "common step images/s",
         "lazy-R1 cycle images/s"],
        [[r["name"], r["preset"], r["batch"], f"{r['images_per_s']:.2f}", f"{r['common_step_images_per_s']:.2f}",
          f"{r['lazy_r1_cycle_images_per_s']:.2f} (1 in {r['r1_interval']})"] for r in gan_rows])
    return (f"{table}\n\nA GAN training step adds the R1 penalty (a second backward pass through D) on one step "
            "in `r1_interval`, inside one compiled program (a `lax.cond`). Its row times, and its FLOPs count, "
            "the R1 step (XLA counts the costlier branch of a cond); the common step is the same executable at a "
            "step without R1; the cycle is what training sustains.")


def reference_pivot(rows: list[dict]) -> dict[str, dict[str, float]]:
    """{config: {"synthesis B<n>" | "D fwd+bwd B<n>": images/s}} of the reference-configuration rows."""
    pivot: dict[str, dict[str, float]] = {}
    for r in rows:
        if r.get("stage") == "reference":
            what = "synthesis" if r["name"].startswith("reference_synthesis") else "D fwd+bwd"
            pivot.setdefault(r["config"], {})[f"{what} B{r['batch']}"] = r["images_per_s"]
    return pivot


def _reference_section(rows: list[dict]) -> str:
    pivot = reference_pivot(rows)
    if not pivot:
        return "(no reference-configuration row in this run)"
    columns = sorted({c for cells in pivot.values() for c in cells}, key=lambda c: (c.startswith("D"), int(c.split("B")[-1])))
    table = markdown_table(["config (img_resolution / channel_base)", *[f"{c}, images/s" for c in columns]],
                           [[config, *[f"{cells[c]:.2f}" if c in cells else "—" for c in columns]]
                            for config, cells in pivot.items()])
    return (f"{table}\n\nStyleGAN2 at stylegan2-ada-pytorch's configurations (channel_max 512, z = w = 512, 8 "
            "mapping layers; benchmarks/reference_configs.py), float32. `benchmarks/reference_stylegan2_ada.py` "
            "times the reference implementation beside these, one after another on the same CPU "
            "(results/reference_stylegan2_ada_cpu.md).")


def _fmt_si(value, unit):
    if value is None or value != value:
        return "—"
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:.2f} {unit}"


def _bf16_section(pairs: dict[str, dict]) -> str:
    if not pairs:
        return "(no bf16 row in this run)"
    table = markdown_table(
        ["preset@batch", "float32 images/s", "bf16 images/s", "bf16 speed-up", "frames max abs Δ",
         "frames mean abs Δ", "faces max abs Δ", "faces mean abs Δ", "judge similarity mean abs Δ",
         "success flag flips", "box max abs Δ (px)"],
        [[k, f"{v['float32_images_per_s']:.2f}", f"{v['bf16_images_per_s']:.2f}", f"{v['speedup']:.2f}×",
          _fmt_num(v["bf16_frames_max_abs_diff"]), _fmt_num(v["bf16_frames_mean_abs_diff"]),
          _fmt_num(v.get("bf16_faces_max_abs_diff")), _fmt_num(v.get("bf16_faces_mean_abs_diff")),
          _fmt_num(v["bf16_similarity_mean_abs_diff"]), _fmt_num(v["bf16_success_flip_fraction"], ".1%"),
          _fmt_num(v.get("bf16_box_max_abs_diff_px"), ".2f")]
         for k, v in pairs.items()])
    return (f"{table}\n\n`deid.compute_dtype=bfloat16`: every network of the private step in bf16, the loop's "
            "bookkeeping in float32, on the same batch, key and weights as the float32 step. Frame differences "
            "are on the [0, 1] pixel scale (one uint8 level = 0.0039); \"faces\" are the released faces before "
            "paste-back, compared even where a sample fell back to pixelation; a detector box that bf16 moves by a "
            "pixel moves the edges of the pasted face or pixelated square, so the max is local and the mean "
            "is the typical change; flips = fraction of samples whose success flag differs. On GPUs "
            "\"float32\" convolutions and matmuls may already use TF32 (XLA's default precision); on CPUs "
            "bf16 speed depends on the CPU's bf16 support.")


def _scale_out_section(scaling: dict[str, dict[str, float]]) -> str:
    if not scaling:
        return "(no scale-out row in this run)"
    lines = []
    for key, per_devices in scaling.items():
        base = per_devices.get("1")
        lines.append(markdown_table(
            ["preset@batch", "devices", "images/s", "vs 1 device"],
            [[key, n, f"{ips:.2f}", f"{ips / base:.2f}×" if base else "—"] for n, ips in per_devices.items()]))
    return ("\n\n".join(lines) + "\n\nThe batch is split along the `data` mesh axis, parameters replicated "
            "(`make_jitted_private_step(config, num_devices=n)`). On the CPU the devices are host-platform "
            "devices (`--xla_force_host_platform_device_count=4`) sharing the same cores, so these rows show "
            "the cost of partitioning rather than a speed-up; with several GPUs they are real devices.")


def _fmt_num(value, fmt=".4f"):
    return "—" if value is None or value != value else format(value, fmt)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw_json", nargs="+",
                        help="pytest-benchmark --benchmark-json output(s) or .jsonl rows, merged; PATH@COMMIT "
                             "names the commit of a raw file whose rows do not carry their own")
    parser.add_argument("--preset", default="mixed", help="preset label for the provenance block")
    parser.add_argument("--out", default="results", help="results folder")
    parser.add_argument("--environment-only", action="store_true",
                        help="write only benchmarks_<environment>.* (not benchmarks.json/.md)")
    parser.add_argument("--expected", help="file of pytest node ids (one per line) the run set out to measure; "
                                           "those without a row are listed as not measured")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    inputs = [(Path(path), commit or None) for path, _, commit in (arg.partition("@") for arg in args.raw_json)]
    raws = [load_raw(path, commit) for path, commit in inputs if path.exists()]
    if not raws:
        print(f"{args.raw_json}: no such file", file=sys.stderr)
        return 1
    raw = merge_raw(raws)
    # The benchmark runs' own wall time (conftest.py records each pytest session's), not this script's.
    walls = [r.get("machine_info", {}).get("wall_s") for r in raws]
    prov = provenance(args.preset, 0, sum(w for w in walls if w) if any(walls) else float("nan"),
                      machine=raw.get("machine_info", {}).get("cpu", {}).get("brand_raw", "unknown"))
    rows = rows_from_raw(raw, prov["git_commit"])
    if not rows:
        print(f"{args.raw_json}: no benchmark rows with images_per_s", file=sys.stderr)
        return 1
    measured_on = sorted({r["device"] or "unknown" for r in rows})
    if measured_on != [jax_device_kind()]:
        # Rows measured on another machine (a GPU run's raw JSON merged here): the provenance
        # names that machine and its libraries, not the ones writing the report.
        prov["device"] = f"{', '.join(measured_on)} (rows); report written on {prov['device']}"
        recorded = {json.dumps(b.get("extra_info", {}).get("versions"), sort_keys=True) for b in raw["benchmarks"]}
        if len(recorded) == 1 and recorded != {"null"}:
            prov["versions"] = json.loads(recorded.pop())
        else:
            prov["versions"] = {"jax": ", ".join(sorted({r["jax_version"] or "?" for r in rows})),
                                "other libraries": "not recorded by every row"}
    payload = {"rows": rows, "fused_vs_staged": fused_vs_staged(rows), "bf16_vs_float32": bf16_vs_float32(rows),
               "scale_out": scale_out(rows), "provenance": prov}
    tag = environment_tag(rows[0]["device"] or "unknown", rows[0]["jax_version"] or "unknown")
    out = Path(args.out)
    table = markdown_table(
        ["benchmark", "preset", "batch", "devices", "dtype", "images/s", "compile s", "FLOPs/image",
         "achieved FLOP/s", "peak memory", "device", "jax", "commit"],
        [[r["name"], r["preset"], r["batch"], r["num_devices"], r["dtype"], f"{r['images_per_s']:.2f}",
          _fmt_num(r["compile_s"], ".2f"), _fmt_si(r["flops_per_image"], "FLOP"), _fmt_si(r["achieved_flops"], "FLOP/s"),
          _fmt_si(r["peak_bytes"], "B"), r["device"], r["jax_version"], (r["git_commit"] or "")[:10]]
         for r in rows])
    ratio_text = "\n".join(f"- `{preset}` (batch {batch}): fused / staged = **{ratio:.2f}×**"
                           for preset, (batch, ratio) in fused_vs_staged_pairs(rows).items()) or \
        "- (no fused/staged pair in this run)"
    sources = ", ".join(f"`{path.name}`" for path, _ in inputs)
    body = (f"# Benchmarks ({rows[0]['device']}, jax {rows[0]['jax_version']})\n\n"
            f"Generated by `benchmarks/report.py` from {sources}; do not edit by hand. FLOPs are XLA's cost "
            "analysis; the private-step rows include every noise-loop iteration run "
            "(benchmarks/test_private_step.py). `compile s` is the cold compilation of each row's program, "
            "measured in the row's own process or, where the row loaded it from JAX's persistent cache, in the "
            "process that compiled it (benchmarks/gpu.sh: an earlier call or its warm-up phase; each row's "
            "`compile_source` and `compile_cached_s`, the time to load it, are in the JSON); — where no cold "
            "compile was logged. Each row names the commit it was measured at.\n\n"
            f"{table}\n\n## Fused single-jit step vs staged pipeline (same run)\n\n{ratio_text}\n\n"
            f"## Speed and quality of the four methods\n\n{_quality_section(rows)}\n\n"
            f"## GAN training steps and lazy R1\n\n{_gan_section(rows)}\n\n"
            f"## StyleGAN2 at the reference configurations\n\n{_reference_section(rows)}\n\n"
            f"## bf16 vs float32\n\n{_bf16_section(payload['bf16_vs_float32'])}\n\n"
            f"## Scale-out (images/s vs devices)\n\n{_scale_out_section(payload['scale_out'])}\n")
    if any(r.get("flops_not_comparable") for r in rows):
        body += ("\nFLOPs marked — on GPU rows whose raw JSON has no `flops_counter` (measured before FLOPs were "
                 "counted on the lowered program): they came from the compiled GPU executable's cost analysis, which leaves out the cuDNN/cuBLAS calls (on the H200 it "
                 "counted 9.9 MFLOP per image for the small crop training step, whose program does 0.64 GFLOP); "
                 "FLOPs are now counted on the lowered program for every backend.\n")
    if args.expected:
        measured = {bench.get("fullname") for bench in raw["benchmarks"]}
        expected = [line.strip() for line in Path(args.expected).read_text().splitlines() if "::" in line]
        missing = [node for node in expected if node not in measured]
        payload["not_measured"] = missing
        listing = "\n".join(f"- `{node.split('::', 1)[1]}`" for node in missing) or "- (none)"
        body += (f"\n## Not measured in this run ({len(missing)} of {len(expected)})\n\n"
                 "Benchmarks the run set out to measure that have no row: skipped (e.g. more devices than "
                 f"the machine has) or cut off by the time budget (benchmarks/gpu.sh's log says which).\n\n{listing}\n")
    prov["report_wall_s"] = round(time.perf_counter() - t0, 3)
    # benchmarks.{json,md} are the CPU suite's report (issue 7's results/benchmarks.json); a run
    # elsewhere (benchmarks/gpu.sh) writes only the files named after its environment.
    for stem in (f"benchmarks_{tag}",) + (() if args.environment_only else ("benchmarks",)):
        write_json(out / f"{stem}.json", payload, history=(stem == "benchmarks"))
        write_markdown(out / f"{stem}.md", body, prov)
    (out / f"benchmarks_{tag}_raw.json").write_text(json.dumps(raw, indent=1))
    print(f"wrote {'' if args.environment_only else f'{out}/benchmarks.md and '}{out}/benchmarks_{tag}.*  "
          f"({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
