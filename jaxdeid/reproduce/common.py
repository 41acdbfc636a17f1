"""What the private-evaluation scripts share above the protocol (`jaxdeid.eval`).

Flags, training what is missing through the public ``jaxdeid train ...`` commands
(`ensure_params`, unless ``--no-train`` or ``--allow-untrained``), process-wide caches
(each shared network restored once per process; private outputs cached in
``<workdir>/eval/<method>[__judges-...].npz`` under a fingerprint of the config, the
evaluation set and every network's weights, so a retrained network is never evaluated
from a stale cache; images as 8-bit, what a released image is on disk), and charts.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import matplotlib
import numpy as np

from ..commands.common import add_config_flags, config_from_args
from ..components import FIFTH_ARCH, FIFTH_SEED, finetuned_generator
from ..deid.methods import METHODS
from ..deid.pipeline import load_params, network_names, train_command
from ..eval.protocol import (DIAG_KEYS, IMAGE_KEYS, LOWLIGHT_KEY, EvalSet, Recognizer, config_fingerprint,
                             evaluation_count, evaluation_set, params_fingerprint, run_private_step, to_uint8)
from ..gan.train import load_trained as load_gan
from ..recognizers.model import init_variables, make_embed, make_recognizer
from ..recognizers.train import load_trained
from ..results import git_commit, provenance, write_png

matplotlib.use("Agg")   # charts are files: no display needed
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

DISPLAY = {"ours": "Ours", "pggan": "PGGAN", "stylegan1": "StyleGAN1", "stylegan2": "StyleGAN2"}


# The independently trained fifth recognizer of the black-box test (jaxdeid.components owns
# its arch and seed): the same public recognizer training, another seed, its own work folder.
FIFTH_NAME = f"{FIFTH_ARCH}_seed{FIFTH_SEED}"


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every private-evaluation script accepts (plus --preset/--set/--seed/--workdir)."""

    add_config_flags(parser)
    parser.add_argument("--count", type=int, default=None,
                        help="low-light test scenes to evaluate (default: smoke 8, small 256, paper 1000; "
                             "capped by the test split)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods to evaluate")
    parser.add_argument("--results-dir", default=None, help="output folder (default: config.results_dir)")
    parser.add_argument("--no-train", action="store_true",
                        help="never train: fail with the `jaxdeid train ...` commands when a checkpoint is missing")
    parser.add_argument("--allow-untrained", action="store_true",
                        help="randomly initialise missing networks instead of training them (tests/demos only)")
    parser.add_argument("--no-finetune", action="store_true",
                        help="ours: do not run the L_F fine-tuning (`jaxdeid train deid`) when it is missing")
    parser.add_argument("--refresh", action="store_true", help="recompute the cached private outputs")


def parse_script_flags(doc: str, argv, *, private_evaluation: bool = True, storage_default: str | None = None,
                       add_arguments: Callable[[argparse.ArgumentParser], None] | None = None):
    """The opening every reproduce script shares: ``(args, config)`` from its flags.

    ``private_evaluation``: the private-evaluation flags (`add_flags`), else only the config
    flags. ``storage_default``: adds ``--data-storage`` (SynthFaces rendered on the fly or a
    prepared tfds copy; both give the same images) with this default.
    """
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    (add_flags if private_evaluation else add_config_flags)(parser)
    if storage_default is not None:
        parser.add_argument("--data-storage", default=storage_default, choices=("direct", "tfds", "config"),
                            help="SynthFaces storage for this run: direct renders on the fly, tfds prepares the "
                                 "split once (both give the same images), config keeps config.data.storage "
                                 f"(default: {storage_default})")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    config = config_from_flags(args) if private_evaluation else config_from_args(args)
    if storage_default is not None and args.data_storage != "config":
        config.data.storage = args.data_storage
    return args, config


@dataclasses.dataclass(frozen=True)
class EvaluationRun:
    """One private-evaluation script's run: its flags, config, output folder and start time."""

    args: argparse.Namespace
    config: Any
    out_dir: Path
    started: float

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def provenance(self, evalset: EvalSet, outputs: dict, **extra: Any) -> dict:
        """The results' provenance: the standard record, the evaluation set and each method's run."""
        return provenance(self.config.preset, self.config.seed, self.elapsed(), **extra,
                          **provenance_extra(self.config, evalset, outputs))


def start_evaluation(doc: str, argv, add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
                     ) -> EvaluationRun:
    """The opening of every private-evaluation script: flags parsed, config built, clock started."""
    args, config = parse_script_flags(doc, argv, add_arguments=add_arguments)
    return EvaluationRun(args, config, Path(args.results_dir or config.results_dir), time.perf_counter())


def config_from_flags(args: argparse.Namespace):

    config = config_from_args(args)
    # The evaluation renders ~count scenes: on-the-fly rendering beats preparing a tfds
    # copy, and gives the same pixels (jaxdeid.data.sources).
    if config.data.name == "synthfaces":
        config.data.storage = "direct"
    return config


def _train_args(config, overrides) -> list[str]:
    args = ["--preset", config.preset, "--seed", str(config.seed), "--workdir", str(config.workdir)]
    for item in overrides or ():
        args += ["--set", item]
    return args


_PARAMS_MEMO: dict[tuple, tuple[dict, dict]] = {}


def run_train_command(command: str, config, overrides) -> None:
    """Runs ``jaxdeid train ...`` (a command string from `jaxdeid.deid.pipeline.train_command`)."""
    words = command.split()
    words = words[1:] if words and words[0] == "jaxdeid" else words
    # Drop the command's own --preset: ours carries preset, seed, workdir and overrides.
    if "--preset" in words:
        at = words.index("--preset")
        del words[at:at + 2]
    full = [sys.executable, "-m", "jaxdeid", *words, *_train_args(config, overrides)]
    print(f"[eval] training: {' '.join(full[2:])}", flush=True)
    proc = subprocess.run(full)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(full[2:])}` failed with exit status {proc.returncode}")


def ensure_params(config, method: str, *, train_missing: bool, allow_untrained: bool,
                  finetune: bool = True, use_finetuned: bool = True, overrides=()) -> tuple[dict, dict]:
    """``(params, notes)`` for `method`: trained checkpoints, training what is missing.

    ``notes``: {"untrained": [network names initialised at random], "generator": how ours'
    generator was obtained}. ``use_finetuned=False`` gives ours the pretrained StyleGAN2
    generator even when an L_F fine-tuned one exists (the black-box hold-out run: L_A saw
    every judge of the fine-tuning config). With neither ``train_missing`` nor ``allow_untrained`` a missing
    checkpoint raises FileNotFoundError naming the ``jaxdeid train ...`` command for each.
    """

    # One process running several scripts (tests, notebooks) loads each method's networks once.
    memo_key = (method, config_fingerprint(config), train_missing, allow_untrained, use_finetuned)
    if memo_key in _PARAMS_MEMO:
        return _PARAMS_MEMO[memo_key]
    notes: dict[str, Any] = {"untrained": []}
    if train_missing and not allow_untrained:
        params, missing = _load_networks(config, method, allow_untrained=True)
        # Each generator before its encoder (the encoder inverts a trained generator).
        order = sorted(missing, key=lambda n: {"generator": 0, "encoder": 1}.get(n, -1))
        trained_now = bool(order)
        tuned_known = None  # whether an L_F fine-tuned generator exists, when already checked
        for name in order:
            run_train_command(train_command(config, method, name), config, overrides)
        if method == "ours" and finetune:
            tuned_known = finetuned_generator(config) is not None
            if not tuned_known:
                trained_now = True
                try:
                    run_train_command("jaxdeid train deid", config, overrides)
                except RuntimeError as err:  # L_F is an optional refinement: go on with the pretrained G
                    print(f"[eval] warning: {err}; ours uses the pretrained StyleGAN2 generator", flush=True)
        # Nothing was missing and nothing trained: the first load is already the final one
        # (restoring a checkpoint costs seconds each on CPU, so do not load everything twice).
        untrained = []
        if trained_now:
            tuned_known = None
            params, untrained = _load_networks(config, method, allow_untrained=allow_untrained)
    else:
        tuned_known = None
        params, untrained = _load_networks(config, method, allow_untrained=allow_untrained)
    notes["untrained"] = list(untrained)
    if "generator" in untrained:
        notes["generator"] = "randomly initialised"
    elif method == "ours":
        try:
            tuned = tuned_known if tuned_known is not None else finetuned_generator(config) is not None
        except Exception:  # noqa: BLE001 - a missing/odd fine-tuning run only changes the note
            tuned = False
        notes["generator"] = "L_F fine-tuned (eq. 8)" if tuned else "pretrained only (no L_F fine-tuning run)"
        if tuned and not use_finetuned:
            params = {**params, "generator": load_gan(config, "stylegan2")}
            notes["generator"] = "pretrained (L_F fine-tuned generator set aside: its L_A saw the held-out judge)"
    _PARAMS_MEMO[memo_key] = (params, notes)
    return params, notes


# Trained variables of the networks every method shares (detector, light networks, judges),
# keyed by (config fingerprint, network name): a script evaluating four methods restores each
# of them once instead of once per method. Only trained checkpoints are kept here (a random
# initialisation depends on the method's key), and a network is only ever added after it was
# loaded from its checkpoint, so a network trained later in the process is still picked up.
_SHARED_NETWORKS: dict[tuple[str, str], Any] = {}


_PER_METHOD_NETWORKS = ("encoder", "generator")


def _load_networks(config, method: str, *, allow_untrained: bool) -> tuple[dict, list[str]]:
    """`jaxdeid.deid.pipeline.load_params`, reusing the shared networks already restored in this process.

    Returns exactly what ``load_params(config, method, allow_untrained=...)`` returns: the same
    checkpoints are read, only each at most once per process.
    """

    config_key = config_fingerprint(config)
    names = network_names(config, method)
    reused = {n: _SHARED_NETWORKS[(config_key, n)] for n in names if (config_key, n) in _SHARED_NETWORKS}
    to_load = [n for n in names if n not in reused]
    loaded, missing = load_params(config, method, allow_untrained=allow_untrained, names=to_load)
    params = dict(loaded)
    judges = dict(params.pop("judges", {}))
    for name, variables in reused.items():
        if name.startswith("judges/"):
            judges[name.split("/", 1)[1]] = variables
        else:
            params[name] = variables
    if judges:
        params["judges"] = {arch: judges[arch] for arch in config.recognizer.judges if arch in judges}
    # The key order of a full load (network_names order), whatever came from the memo.
    order = [n for n in names if not n.startswith("judges/")] + ["judges"]
    params = {k: params[k] for k in order if k in params}
    for name in to_load:
        if name in missing or name in _PER_METHOD_NETWORKS:
            continue
        _SHARED_NETWORKS[(config_key, name)] = (params["judges"][name.split("/", 1)[1]]
                                               if name.startswith("judges/") else params[name])
    return params, list(missing)


def cache_path(config, method: str, judges) -> Path:
    suffix = "" if tuple(judges) == tuple(config.recognizer.archs) else "__judges-" + "-".join(judges)
    return Path(config.workdir) / "eval" / f"{method}{suffix}.npz"


def method_outputs(config, method: str, evalset: EvalSet, *, train_missing: bool = True,
                   allow_untrained: bool = False, finetune: bool = True, use_finetuned: bool = True,
                   refresh: bool = False, overrides=()) -> dict:
    """The cached private outputs of `method` on `evalset` (computed when absent or stale).

    Returns numpy arrays: images ``frames`` [N,S,S,3], ``original_faces`` (what the judges
    compare with), ``input_faces`` (low-light crop), ``synthesized_faces`` (generator output,
    before attenuation), ``private_faces`` (released face) as float32 in [0, 1]; the step's
    diagnostics (DIAG_KEYS); ``meta`` (judges, notes, fingerprint, git commit, timing); and
    ``judge_variables`` ({arch: variables} of the white-box judges the step used, not cached).
    """

    params, notes = ensure_params(config, method, train_missing=train_missing, allow_untrained=allow_untrained,
                                  finetune=finetune, use_finetuned=use_finetuned, overrides=overrides)
    judges = tuple(config.recognizer.judges)
    parts = {"config": config_fingerprint(config), "params": params_fingerprint(params),
             "data": hashlib.sha1(np.ascontiguousarray(evalset.lowlight).tobytes()).hexdigest()}
    fingerprint = hashlib.sha1("|".join([method, parts["config"], parts["params"], parts["data"],
                                         str(int(config.deid.batch_size))]).encode()).hexdigest()
    path = cache_path(config, method, judges)
    if path.exists() and not refresh:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("fingerprint") == fingerprint:
                out = {k: data[k].astype(np.float32) / 255.0 if k in IMAGE_KEYS else data[k]
                       for k in IMAGE_KEYS + DIAG_KEYS}
                meta["cached"] = True
                print(f"[eval] {method}: cached outputs {path}", flush=True)
                return {**out, "meta": meta, "judge_variables": params["judges"]}
    t0 = time.perf_counter()
    print(f"[eval] {method}: private step over {evalset.lowlight.shape[0]} low-light scenes "
          f"(judges {', '.join(judges)})", flush=True)
    raw = run_private_step(config, method, params, evalset.lowlight)
    meta = {"method": method, "judges": list(judges), "notes": notes, "fingerprint": fingerprint,
            "fingerprint_parts": parts,
            "git_commit": git_commit(), "count": int(evalset.lowlight.shape[0]), "timing": raw["timing"],
            "wall_s": round(time.perf_counter() - t0, 2), "cached": False}
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = {k: to_uint8(raw[k]) for k in IMAGE_KEYS}
    stored.update({k: np.asarray(raw[k]) for k in DIAG_KEYS})
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, meta=np.asarray(json.dumps(meta)), **stored)
    tmp.replace(path)
    out = {k: stored[k].astype(np.float32) / 255.0 if k in IMAGE_KEYS else stored[k] for k in stored}
    print(f"[eval] {method}: done in {meta['wall_s']:.1f}s, success {np.mean(out['success']):.3f}", flush=True)
    return {**out, "meta": meta, "judge_variables": params["judges"]}


def with_judges(config, judges) -> Any:
    """A copy of `config` whose white-box judges are `judges` (the black-box hold-out run)."""
    held = copy.deepcopy(config)
    held.recognizer.judges = tuple(judges)
    return held


def load_recognizer(config, arch: str, *, train_missing: bool, allow_untrained: bool, overrides=(),
                    seed: int | None = None, workdir: str | None = None, name: str | None = None) -> Recognizer | None:
    """A trained recognizer (training it through `jaxdeid train recognizer` when missing).

    ``seed``/``workdir`` select an independent run (the fifth, black-box recognizer).
    Returns None when it is missing and may be neither trained nor randomly initialised.
    """

    cfg = copy.deepcopy(config)
    if seed is not None:
        cfg.seed = int(seed)
        cfg.weights_tag = f"seed{int(seed)}"   # its own entry of the weights store
    if workdir is not None:
        cfg.workdir = str(workdir)
    try:
        rec = load_trained(cfg, arch)
        return Recognizer(name or arch, rec.embed, rec.variables, True)
    except FileNotFoundError:
        pass
    if train_missing and not allow_untrained:
        run_train_command(f"jaxdeid train recognizer --arch {arch}", cfg, overrides)
        rec = load_trained(cfg, arch)
        return Recognizer(name or arch, rec.embed, rec.variables, True)
    if allow_untrained:
        variables = init_variables(make_recognizer(cfg, arch), jax.random.PRNGKey(cfg.seed + 77),
                                   int(cfg.data.resolution))
        return Recognizer(name or arch, make_embed(cfg, arch), variables, False)
    return None


def bar_chart(path: Path, groups: dict[str, dict[str, float]], title: str, ylabel: str,
              paper: dict[str, float] | None = None, errors: dict[str, dict[str, tuple]] | None = None,
              ylim: tuple[float, float] | None = None, prov: dict | None = None) -> Path:
    """Grouped bars: one group per key of ``groups`` ({group: {series: value}}); paper values as markers."""

    names = list(groups)
    series = list(next(iter(groups.values())))
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(names), 3.4), dpi=110)
    for s, name in enumerate(series):
        xs = np.arange(len(names)) + (s - (len(series) - 1) / 2) * width
        values = [groups[g][name] for g in names]
        yerr = None
        if errors is not None:
            yerr = np.array([[max(0.0, v - errors[g][name][0]) for g, v in zip(names, values)],
                             [max(0.0, errors[g][name][1] - v) for g, v in zip(names, values)]])
        ax.bar(xs, values, width, label=name, yerr=yerr, capsize=2)
    if paper:
        # Paper values sit on the first series' bars (Fig. 6: the success rate).
        offset = -(len(series) - 1) / 2 * width
        xs = [i for i, g in enumerate(names) if g in paper]
        ax.scatter(np.asarray(xs) + offset, [paper[names[i]] for i in xs], marker="_", s=120 * width * 4, color="black",
                   zorder=5, label=f"paper ({series[0]})")
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels([DISPLAY.get(g, g) for g in names])
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if ylim:
        ax.set_ylim(*ylim)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = write_png(path, fig, prov)
    plt.close(fig)
    return path


def untrained_note(all_outputs: dict) -> str:
    """A loud Markdown warning when any network ran with random weights (tests/demos)."""
    flagged = {m: o["meta"]["notes"].get("untrained") for m, o in all_outputs.items()
               if o["meta"]["notes"].get("untrained")}
    if not flagged:
        return ""
    listing = "; ".join(f"{m}: {', '.join(v)}" for m, v in flagged.items())
    return (f"> **Warning: randomly initialised networks** ({listing}). These numbers test the plumbing "
            "only; they say nothing about the method.\n")


def evaluation_set_from_flags(config, args: argparse.Namespace) -> EvalSet:
    """The evaluation set the scripts' ``--count`` flag asks for."""
    return evaluation_set(config, evaluation_count(config, args.count))


def method_outputs_from_flags(config, method: str, evalset: EvalSet, args: argparse.Namespace, **options) -> dict:
    """`method_outputs` with the scripts' flags (`add_flags`); `options` adds or overrides keywords."""
    return method_outputs(config, method, evalset, **{
        "train_missing": not args.no_train, "allow_untrained": args.allow_untrained,
        "finetune": not args.no_finetune, "refresh": args.refresh, "overrides": args.overrides, **options})


def collect(config, args: argparse.Namespace, methods=None) -> tuple[EvalSet, dict[str, dict]]:
    """The evaluation set and every method's (cached) private outputs, as the scripts' flags ask."""
    evalset = evaluation_set_from_flags(config, args)
    return evalset, {m: method_outputs_from_flags(config, m, evalset, args) for m in (methods or args.methods)}


def provenance_extra(config, evalset: EvalSet, outputs: dict) -> dict:
    """What every private-evaluation result records beside the standard provenance."""
    return {"images": int(evalset.lowlight.shape[0]), "split": "test (low-light, LLNet)",
            "lowlight_key": LOWLIGHT_KEY + int(config.seed),
            "methods": {m: {k: o["meta"][k] for k in ("judges", "notes", "cached", "timing", "git_commit")}
                        for m, o in outputs.items()}}
