"""Table 1: the four face recognizers on the clean test set at cosine threshold 0.3.

    python -m jaxdeid.reproduce.table1 --preset small      # trains what is missing, then evaluates

Trains each recognizer that has no finished checkpoint through the same entry
point as ``jaxdeid train recognizer --arch ARCH`` (resuming where a run stopped),
then evaluates all of them with the docs/method.md §4 protocol and writes

  results/table1.json          {"recognizers": {arch: {train_acc, test_acc, tpr, fpr, params}}, "threshold", "provenance"}
  results/table1_details.json  95 % bootstrap CIs, ROC AUC, TAR@FAR, 1:N identification, training steps and time
  results/table1.md            ours beside the paper's Table 1, with the CIs
  results/roc.png              test-set ROC of every recognizer

``params`` is the number of trainable parameters of the recognizer as trained
(backbone + embedding head; BatchNorm running statistics excluded).

Time: smoke preset ~15 min on 2 busy CPU cores (mostly XLA compilation); small
preset hours on a CPU, 216 s on one H200 for all four (train + evaluate) with

    python -m jaxdeid.reproduce.table1 --preset small --jobs 4 --set data.storage=direct

(``--jobs 4`` trains the four in parallel processes on the one GPU; with
``recognizer.preload_train`` the train split is rendered once into memory, so
``data.storage=direct`` needs no tensorflow-datasets preparation).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from jaxdeid import results
from jaxdeid.commands.common import add_config_flags, config_from_args
from jaxdeid.metrics import plot_roc
from jaxdeid.recognizers.evaluate import evaluate_recognizer
from jaxdeid.recognizers.model import DISPLAY_NAMES, backbone_param_count, make_recognizer
from jaxdeid.recognizers.train import load_trained, task_name, train
from jaxdeid.train.loop import read_metrics, tree_size

# docs/method.md §3, Table 1 of the paper (VGGFace2, threshold 0.3).
PAPER_TABLE1 = {
    "vgg16": {"train_acc": 0.982, "test_acc": 0.951, "tpr": 0.938, "fpr": 0.081},
    "resnet50": {"train_acc": 0.990, "test_acc": 0.979, "tpr": 0.973, "fpr": 0.062},
    "mobilenetv3": {"train_acc": 0.999, "test_acc": 0.987, "tpr": 0.997, "fpr": 0.031},
    "senet50": {"train_acc": 0.975, "test_acc": 0.960, "tpr": 0.917, "fpr": 0.172},
}
COLUMNS = (("train_acc", "train acc"), ("test_acc", "test acc"), ("tpr", "TPR"), ("fpr", "FPR"))

# Issue 4's done-when targets for every recognizer at the small preset (docs/method.md §4 threshold 0.3).
TARGETS = {"test_acc": (">=", 0.95), "tpr": (">=", 0.9), "fpr": ("<=", 0.1)}

# What has been tried to close a gap to TARGETS, newest last (kept here so that the page says it).
TRIED = (
    "triplet margin 0.2 (cosine distance): val accuracy 0.910-0.949 over the four architectures "
    "(small preset, 3000 steps, H200)",
    "triplet margin 0.5 (the current `recognizer.margin`): 0.941-0.962, i.e. about +3 points, because "
    "impostor similarities are pushed further below the fixed 0.3 threshold",
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_flags(parser)
    parser.add_argument("--archs", nargs="+", default=None, help="subset of recognizers (default: all four)")
    parser.add_argument("--results-dir", default=None, help="output folder (default: config.results_dir)")
    parser.add_argument("--no-train", action="store_true", help="evaluate existing checkpoints only")
    parser.add_argument("--render-only", action="store_true",
                        help="re-render table1.md from the table1.json / table1_details.json already in the "
                             "results folder (no training, no evaluation; keeps that run's provenance)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="train this many recognizers at once, each a `jaxdeid train recognizer` process "
                             "(on one GPU this overlaps their compilations; each gets 1/jobs of its memory)")
    return parser.parse_args(argv)


def _fmt_ci(value: float, ci: tuple[float, float]) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def evaluate_all(config, archs, train_missing: bool, on_arch_done=None) -> tuple[dict, dict]:
    """Trains what is missing and evaluates every arch: (table rows, details) keyed by arch.

    ``on_arch_done(rows, details)`` is called after each arch, so partial results are
    written even if a long run is stopped part-way.
    """

    rows, details = {}, {}
    for arch in archs:
        t0 = time.perf_counter()
        if train_missing:
            train(config, arch)   # resumes; returns at once when the checkpoint is already at the final step
        train_s = time.perf_counter() - t0
        recognizer = load_trained(config, arch)
        t1 = time.perf_counter()
        out = evaluate_recognizer(config, recognizer.embed, recognizer.variables)
        eval_s = time.perf_counter() - t1
        train_v, test = out["train"], out["test"]
        rows[arch] = {"train_acc": train_v["accuracy"], "test_acc": test["accuracy"], "tpr": test["tpr"],
                      "fpr": test["fpr"], "params": tree_size(recognizer.variables["params"])}
        log = read_metrics(config.workdir, task_name(arch))
        losses = [r["loss"] for r in log if "loss" in r]
        details[arch] = {
            "ci95": {"train_acc": train_v["ci"]["accuracy"], "test_acc": test["ci"]["accuracy"],
                     "tpr": test["ci"]["tpr"], "fpr": test["ci"]["fpr"]},
            "pairs": {"train": int(len(train_v["similarities"])), "test": int(len(test["similarities"]))},
            "roc_auc": out["roc"]["auc"],
            "tar_at_far": {str(k): v for k, v in out["tar_at_far"].items()},
            "identification_1n": {k: v for k, v in out["identification"].items()},
            "backbone_params": backbone_param_count(make_recognizer(config, arch), recognizer.variables["params"]),
            "steps": recognizer.step,
            "loss_first_last": [losses[0], losses[-1]] if losses else None,
            "train_s_this_run": round(train_s, 1),
            "eval_s": round(eval_s, 1),
            "roc": (np.asarray(out["roc"]["fpr"]), np.asarray(out["roc"]["tpr"])),
        }
        print(f"{arch}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[arch].items() if k != "params")
              + f" (train {train_s:.0f}s, eval {eval_s:.0f}s)", flush=True)
        if on_arch_done is not None:
            on_arch_done(rows, details)
    return rows, details


def markdown(config, rows: dict, details: dict) -> str:

    rc = config.recognizer
    header = ["model"] + [f"{label} (ours, 95 % CI)" for _, label in COLUMNS] + \
             [f"{label} (paper)" for _, label in COLUMNS]
    table = []
    for arch, row in rows.items():
        ci = details[arch]["ci95"]
        table.append([DISPLAY_NAMES[arch]] + [_fmt_ci(row[k], ci[k]) for k, _ in COLUMNS]
                     + [PAPER_TABLE1[arch][k] for k, _ in COLUMNS])
    extra_header = ["model", "params (backbone)", "steps", "test ROC AUC"] + \
                   [f"TAR@FAR={t:g}" for t in rc.far_targets] + ["1:N TPR", "1:N FPR", "1:N reject"]
    extra = []
    for arch, d in details.items():
        tar = [d["tar_at_far"][str(float(t))] for t in rc.far_targets]
        idn = d["identification_1n"]
        extra.append([DISPLAY_NAMES[arch], f"{rows[arch]['params']:,} ({d['backbone_params']:,})", d["steps"],
                      d["roc_auc"]] + [f"{t['tar']:.3f}" + ("" if t["resolved"] else "*") for t in tar]
                     + [idn["tpr_1n"], idn["fpr_1n"], idn["reject_1n"]])
    pairs = next(iter(details.values()))["pairs"] if details else {}
    split_note = ("held-out probes against train-split reference images (the paper's random 98:1:1 split "
                  "over images leaves about one test image per identity)" if config.data.split_by == "image"
                  else "pairs within the split (identity-disjoint split)")
    return "\n".join([
        f"# Table 1: face recognizers on the clean test set (cosine threshold {rc.threshold})",
        "",
        f"Data: `{config.data.name}` at {config.data.resolution} px, preset `{config.preset}` "
        f"(width x{rc.width_mult}, embedding {rc.embed_dim}). Verification on balanced genuine/impostor pairs "
        f"({pairs.get('train', 0)} train, {pairs.get('test', 0)} test); test pairs are {split_note}. "
        f"Accuracy = (accepted genuine + rejected impostor) / pairs; TPR / FPR from the test pairs (docs/method.md §4). "
        f"Intervals: 95 % percentile bootstrap over identities ({rc.bootstrap_samples} resamples).",
        "",
        results.markdown_table(header, table),
        "",
        "## Beyond the paper",
        "",
        "Test-set ROC (`roc.png`), TAR at fixed FAR (`*`: target below 1/#impostor pairs, not resolved), and 1:N "
        f"identification of test images against a gallery of at most {rc.gallery_per_identity} clean train images "
        "per identity (assigned to the best match when its similarity >= threshold).",
        "",
        results.markdown_table(extra_header, extra),
        "",
        "The paper's numbers are on VGGFace2 with full-size networks; ours are on the data and preset above, "
        "so compare the pattern, not the digits.",
        "",
        done_when_section(rows, details),
    ])


def done_when_section(rows: dict, details: dict) -> str:
    """Issue 4's targets per recognizer, and, where one is missed, the gap and what was tried."""

    def met(key, value):
        op, target = TARGETS[key]
        return value >= target if op == ">=" else value <= target

    header = ["model"] + [f"{key} {op} {target}" for key, (op, target) in TARGETS.items()] + ["all met"]
    table, missed = [], []
    for arch, row in rows.items():
        flags = [met(key, row[key]) for key in TARGETS]
        table.append([DISPLAY_NAMES[arch]] + [f"{row[key]:.3f} ({'yes' if ok else 'no'})"
                                               for key, ok in zip(TARGETS, flags)] + ["yes" if all(flags) else "no"])
        if not all(flags):
            missed.append(arch)
    lines = ["## Done-when check (issue 4)", "", results.markdown_table(header, table)]
    if missed:
        auc = min(details[a]["roc_auc"] for a in missed)
        lines += ["", f"**Gap.** {', '.join(DISPLAY_NAMES[a] for a in missed)} miss a target. Their test ROC AUC is "
                  f"still >= {auc:.3f}, and TPR is near 1 while FPR is just above 0.1: the embeddings separate "
                  "people, but at the fixed cosine threshold 0.3 (docs/method.md §4, not tuned here) about one impostor "
                  "pair in ten is still accepted. Moving the threshold would meet the targets and is not allowed "
                  "by the protocol; the remedy is training that pushes impostor similarities lower.",
                  "", "Tried so far:", ""] + [f"- {t}" for t in TRIED] + [
                  "", "Next (needs a GPU): margin 0.6-0.7, and more steps (validation accuracy was still rising "
                  "at the last of the preset's steps)."]
    return "\n".join(lines)


def render_only(config, out_dir: Path) -> None:
    """Rewrites table1.md from the stored JSON, keeping the provenance of the run that measured it."""

    stored = json.loads((out_dir / "table1.json").read_text())
    details = json.loads((out_dir / "table1_details.json").read_text())["recognizers"]
    rows = stored["recognizers"]
    body = markdown(config, rows, details) + (
        f"\n\n*Page re-rendered from table1.json / table1_details.json by `jaxdeid/reproduce/table1.py --render-only` "
        f"at commit `{results.git_commit()}`; every number and the provenance below are the measuring run's.*")
    results.write_markdown(out_dir / "table1.md", body, stored["provenance"])


def write_outputs(config, out_dir: Path, rows: dict, details: dict, wall_s: float, final: bool = True) -> None:
    """table1.json (the issue's keys), table1_details.json, table1.md and roc.png.

    Partial writes (``final=False``, after each arch) are not appended to results/history.jsonl.
    """

    prov = results.provenance(config.preset, config.seed, wall_s)
    results.write_json(out_dir / "table1.json",
                       {"recognizers": rows, "threshold": config.recognizer.threshold, "provenance": prov}, history=final)
    results.write_json(out_dir / "table1_details.json",
                       {"recognizers": {a: {k: v for k, v in d.items() if k != "roc"} for a, d in details.items()},
                        "threshold": config.recognizer.threshold, "provenance": prov}, history=False)
    results.write_markdown(out_dir / "table1.md", markdown(config, rows, details), prov)
    plot_roc({DISPLAY_NAMES[a]: d["roc"] for a, d in details.items()}, out_dir / "roc.png",
             title=f"Test ROC, preset {config.preset}")


def train_in_parallel(args, config, archs, jobs: int) -> None:
    """Runs ``jaxdeid train recognizer --arch A`` for every arch, `jobs` processes at a time."""

    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / jobs:.3f}")  # share one GPU's memory
    common = ["--preset", config.preset, "--seed", str(config.seed), "--workdir", str(config.workdir)]
    for item in args.overrides:
        common += ["--set", item]
    pending, running = list(archs), []
    while pending or running:
        while pending and len(running) < jobs:
            arch = pending.pop(0)
            cmd = [sys.executable, "-m", "jaxdeid", "train", "recognizer", "--arch", arch, *common]
            running.append((arch, subprocess.Popen(cmd, env=env)))
        time.sleep(1.0)
        for arch, proc in list(running):
            if proc.poll() is not None:
                running.remove((arch, proc))
                if proc.returncode != 0:
                    raise RuntimeError(f"training {arch} failed with exit status {proc.returncode}")


def main(argv=None) -> int:
    args = parse_args(argv)
    config = config_from_args(args)
    archs = tuple(args.archs or config.recognizer.archs)
    out_dir = Path(args.results_dir or config.results_dir)
    if args.render_only:
        render_only(config, out_dir)
        print(f"re-rendered {out_dir}/table1.md")
        return 0
    t0 = time.perf_counter()
    if args.jobs > 1 and not args.no_train:
        train_in_parallel(args, config, archs, args.jobs)
    rows, details = evaluate_all(
        config, archs, train_missing=not args.no_train,
        on_arch_done=lambda r, d: write_outputs(config, out_dir, r, d, time.perf_counter() - t0, final=False)
        if len(r) < len(archs) else None)
    wall_s = time.perf_counter() - t0
    write_outputs(config, out_dir, rows, details, wall_s)
    print(f"wrote {out_dir}/table1.json, table1_details.json, table1.md, roc.png in {wall_s:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
