"""Evaluation of the private-image pipeline on the low-light test split (docs/method.md §4; Tables 2-4, Figs. 5-6).

Shared by ``reproduce/table3.py``, ``reproduce/fig5.py``, ``reproduce/fig6.py`` and
``reproduce/grids.py``. The protocol, in the order the code runs it:

1. **Evaluation set** (`evaluation_set`): the first ``count`` scenes of the SynthFaces
   test split (normal-light frames, true face boxes, identity labels), darkened once with
   LLNet synthesis (`jaxdeid.data.lowlight.darken`) from a fixed key, so every method and
   every script sees the same low-light frames.
2. **Private outputs** (`method_outputs`): each method's jitted private step
   (`jaxdeid.deid.make_private_step`) runs once over the set in fixed-size batches; the
   frames and diagnostics are cached in ``<workdir>/eval/<method>[__judges-...].npz``
   together with a fingerprint of the config, the evaluation set and every network's
   weights, so the four scripts share one computation and a retrained network is never
   evaluated from a stale cache. Images are cached as 8-bit (what a released private
   image is on disk); the rounding error (≤ 1/510) is far below every reported difference.
3. **Metrics**, all from `jaxdeid.metrics`:
   * `success_parts` (Fig. 6): detected (score above threshold AND IoU ≥ 0.5 with the
     true box), valid (finite, face luminance ≥ ½ the input's), de-identified (every
     white-box judge's similarity < threshold within the iteration cap), success = all three;
   * `quality_scores` (Fig. 5): SSIM, the paper's CS (cosine of pixel vectors) and PSNR
     of the private vs the original low-light image, over the face region (aligned crop at
     the true box, the main numbers) and over the whole frame;
   * `recognition_rates` (Table 3): recognizers applied to the private face (aligned crop of
     the released frame at the true box): 1:1 verification against clean normal-light
     train-split images of the same / another identity, and 1:N identification against a
     gallery enrolled from those clean images (every identity of the test split), both at
     cosine threshold ``config.recognizer.threshold``; 95 % bootstrap intervals over identities.

Missing checkpoints are trained through the public ``jaxdeid train ...`` commands
(`ensure_params`), unless ``--no-train`` (fail with the commands to run) or
``--allow-untrained`` (random weights, for tests and demos; every output says so).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .components import FIFTH_ARCH, FIFTH_SEED, finetuned_generator

METHODS = ("ours", "pggan", "stylegan1", "stylegan2")
DISPLAY = {"ours": "Ours", "pggan": "PGGAN", "stylegan1": "StyleGAN1", "stylegan2": "StyleGAN2"}

# Scenes evaluated per preset (capped by the size of the test split: 4 at smoke, 320 at small).
DEFAULT_COUNT = {"smoke": 8, "small": 256, "paper": 1000}

# Fixed keys, offset by config.seed: the LLNet draw of the evaluation set and the latent noise.
LOWLIGHT_KEY = 20_221_001
NOISE_KEY = 20_221_002

# The independently trained fifth recognizer of the black-box test (jaxdeid.components owns
# its arch and seed): the same public recognizer training, another seed, its own work folder.
FIFTH_NAME = f"{FIFTH_ARCH}_seed{FIFTH_SEED}"

_IMAGE_KEYS = ("frames", "original_faces", "input_faces", "synthesized_faces", "private_faces")
_DIAG_KEYS = ("iterations", "similarities", "frame_similarities", "box", "score", "detected", "valid", "redetected",
              "deidentified", "success", "fallback")


# --------------------------------------------------------------------------- command line


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every private-evaluation script accepts (plus --preset/--set/--seed/--workdir)."""
    from .cli import add_config_flags

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


def config_from_flags(args: argparse.Namespace):
    from .cli import config_from_args

    config = config_from_args(args)
    # The evaluation renders ~count scenes: on-the-fly rendering beats preparing a tfds
    # copy, and gives the same pixels (jaxdeid.data.sources).
    if config.data.name == "synthfaces":
        config.data.storage = "direct"
    return config


def evaluation_count(config, requested: int | None) -> int:
    return int(requested if requested is not None else DEFAULT_COUNT[config.preset])


# --------------------------------------------------------------------------- evaluation set


class EvalSet(NamedTuple):
    """The low-light test scenes every method is evaluated on."""

    normal: np.ndarray     # float32 [N, S, S, 3] normal-light frames
    lowlight: np.ndarray   # float32 [N, S, S, 3] LLNet low-light frames (the pipeline's input)
    box: np.ndarray        # float32 [N, 4] true face boxes (y0, x0, y1, x1), normalised
    label: np.ndarray      # int32 [N] identity ids
    indices: np.ndarray    # int64 [N] positions in the test split


def evaluation_set(config, count: int) -> EvalSet:
    """The first ``count`` test-split scenes and their fixed low-light versions (deterministic)."""
    from .data import get_source
    from .data.lowlight import darken

    source = get_source(config, "test")
    if not hasattr(source, "scenes"):
        raise ValueError(f"data set {config.data.name!r} has no scenes with true face boxes; the private-image "
                         "evaluation needs SynthFaces scenes (data.name=synthfaces)")
    n = min(int(count), len(source))
    if n < 2:
        raise ValueError(f"the test split holds {len(source)} scenes; need at least 2")
    indices = np.arange(n, dtype=np.int64)
    scenes = source.scenes(indices)
    key = jax.random.PRNGKey(LOWLIGHT_KEY + int(config.seed))
    lowlight = np.asarray(jax.jit(lambda k, x: darken(k, x, config.lowlight))(key, scenes["image"]), np.float32)
    return EvalSet(normal=np.asarray(scenes["image"], np.float32), lowlight=lowlight,
                   box=np.asarray(scenes["box"], np.float32), label=np.asarray(scenes["label"], np.int32),
                   indices=indices)


def face_crops(config, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Aligned face crops (the pipeline's own crop geometry) at ``config.data.resolution``."""
    from .crop import ops as crop_ops

    crop = jax.jit(lambda f, b: crop_ops.aligned_crop(f, b, int(config.data.resolution),
                                                      float(config.crop.align_margin)))
    return np.asarray(crop(jnp.asarray(frames, jnp.float32), jnp.asarray(boxes, jnp.float32)), np.float32)


# --------------------------------------------------------------------------- networks


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
    from .deid.pipeline import train_command

    # One process running several scripts (tests, notebooks) loads each method's networks once.
    memo_key = (method, _config_fingerprint(config), train_missing, allow_untrained, use_finetuned)
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
            from .gan import load_trained as load_gan
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
    """`jaxdeid.deid.load_params`, reusing the shared networks already restored in this process.

    Returns exactly what ``load_params(config, method, allow_untrained=...)`` returns: the same
    checkpoints are read, only each at most once per process.
    """
    from .deid.pipeline import load_params
    from .deid.pipeline import network_names

    config_key = _config_fingerprint(config)
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


def params_fingerprint(params) -> str:
    digest = hashlib.sha1()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return digest.hexdigest()


def _config_fingerprint(config) -> str:
    sections = {k: config[k].to_dict() if hasattr(config[k], "to_dict") else config[k]
                for k in sorted(config.keys()) if k not in ("results_dir", "bench")}
    return hashlib.sha1(json.dumps(sections, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------- private outputs


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(np.nan_to_num(np.asarray(x, np.float32)), 0.0, 1.0) * 255.0).astype(np.uint8)


def run_private_step(config, method: str, params, lowlight: np.ndarray, batch_size: int | None = None) -> dict:
    """Runs the jitted private step over ``lowlight`` frames in fixed batches; numpy outputs.

    The last batch is padded by repeating its last frame, so one compilation serves the
    whole set. Returns frames + diagnostics (images as float32) and timings.
    """
    from .deid.step import make_jitted_private_step

    step = make_jitted_private_step(config, method)
    batch = int(batch_size or config.deid.batch_size)
    n = lowlight.shape[0]
    batch = max(1, min(batch, n))
    key = jax.random.PRNGKey(NOISE_KEY + int(config.seed))
    pieces: dict[str, list] = {}
    first_s, rest_s = 0.0, 0.0
    for b, start in enumerate(range(0, n, batch)):
        x = lowlight[start:start + batch]
        valid = x.shape[0]
        if valid < batch:
            x = np.concatenate([x, np.repeat(x[-1:], batch - valid, axis=0)])
        t0 = time.perf_counter()
        frames, diag = step(params, jnp.asarray(x), jax.random.fold_in(key, b))
        frames = jax.block_until_ready(frames)
        if b == 0:
            first_s = time.perf_counter() - t0
        else:
            rest_s += time.perf_counter() - t0
        out = {"frames": frames, **{k: diag[k] for k in _IMAGE_KEYS[1:] + _DIAG_KEYS}}
        for k, v in out.items():
            pieces.setdefault(k, []).append(np.asarray(v)[:valid])
    result = {k: np.concatenate(v) for k, v in pieces.items()}
    batches = -(-n // batch)
    result["timing"] = {"first_batch_s": first_s, "per_image_s": rest_s / max(1, (batches - 1) * batch)
                        if batches > 1 else None, "batch_size": batch}
    return result


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
    diagnostics (_DIAG_KEYS); ``meta`` (judges, notes, fingerprint, git commit, timing); and
    ``judge_variables`` ({arch: variables} of the white-box judges the step used, not cached).
    """
    from .results import git_commit

    params, notes = ensure_params(config, method, train_missing=train_missing, allow_untrained=allow_untrained,
                                  finetune=finetune, use_finetuned=use_finetuned, overrides=overrides)
    judges = tuple(config.recognizer.judges)
    parts = {"config": _config_fingerprint(config), "params": params_fingerprint(params),
             "data": hashlib.sha1(np.ascontiguousarray(evalset.lowlight).tobytes()).hexdigest()}
    fingerprint = hashlib.sha1("|".join([method, parts["config"], parts["params"], parts["data"],
                                         str(int(config.deid.batch_size))]).encode()).hexdigest()
    path = cache_path(config, method, judges)
    if path.exists() and not refresh:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("fingerprint") == fingerprint:
                out = {k: data[k].astype(np.float32) / 255.0 if k in _IMAGE_KEYS else data[k]
                       for k in _IMAGE_KEYS + _DIAG_KEYS}
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
    stored = {k: _to_uint8(raw[k]) for k in _IMAGE_KEYS}
    stored.update({k: np.asarray(raw[k]) for k in _DIAG_KEYS})
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, meta=np.asarray(json.dumps(meta)), **stored)
    tmp.replace(path)
    out = {k: stored[k].astype(np.float32) / 255.0 if k in _IMAGE_KEYS else stored[k] for k in stored}
    print(f"[eval] {method}: done in {meta['wall_s']:.1f}s, success {np.mean(out['success']):.3f}", flush=True)
    return {**out, "meta": meta, "judge_variables": params["judges"]}


def with_judges(config, judges) -> Any:
    """A copy of `config` whose white-box judges are `judges` (the black-box hold-out run)."""
    held = copy.deepcopy(config)
    held.recognizer.judges = tuple(judges)
    return held


# --------------------------------------------------------------------------- Fig. 6


def _identity_ci(values: np.ndarray, labels: np.ndarray, config, seed: int = 0) -> tuple[float, float]:
    from .metrics import bootstrap_ci

    values = np.asarray(values, np.float64)
    return bootstrap_ci(lambda idx: values[idx].mean(axis=0), np.asarray(labels),
                        int(config.recognizer.bootstrap_samples), seed)


def success_parts(config, outputs: dict, evalset: EvalSet) -> dict:
    """Fig. 6: {"success", "detected", "valid", "deidentified"} rates in [0, 1], plus CIs and per-judge rejection.

    Detected needs both the step's own decision (face score ≥ crop.score_threshold) and
    IoU ≥ crop.iou_threshold with the true box (paper §4.3). Valid needs the step's
    re-detection in the released frame too, and the similarities are the step's deciding
    ones (the loop's faces and every view of the released frame). A face never judged (not
    detected: NaN similarity) counts as NOT de-identified, as in the step.
    """
    from .metrics import success_rate

    sims = np.asarray(outputs["similarities"], np.float64)
    sims = np.where(np.isnan(sims), np.inf, sims)
    judges = outputs["meta"]["judges"]
    rates = success_rate(outputs["private_faces"], outputs["input_faces"],
                         {j: sims[:, i] for i, j in enumerate(judges)},
                         threshold=float(config.recognizer.threshold), found=np.asarray(outputs["detected"], bool),
                         pred_boxes=outputs["box"], true_boxes=evalset.box,
                         iou_threshold=float(config.crop.iou_threshold),
                         found_again=np.asarray(outputs["redetected"], bool))
    flags = rates["flags"]
    parts = {"success": rates["rate"], "detected": rates["detected_rate"], "valid": rates["valid_rate"],
             "deidentified": rates["deidentified_rate"]}
    ci = {k: _identity_ci(flags[k], evalset.label, config) for k in ("success", "detected", "valid", "deidentified")}
    iterations = np.asarray(outputs["iterations"])
    return {**parts, "ci95": ci, "reject_rate": rates["reject_rate"], "num_images": rates["num_images"],
            "step_success": float(np.mean(outputs["success"])),
            "mean_iterations": float(iterations[flags["detected"]].mean()) if flags["detected"].any() else None,
            "capped": float(np.mean(iterations >= int(config.deid.max_iters))),
            # Successes that needed more than half the iteration cap: the latent noise s_k grows
            # geometrically, so these faces are far from their encoding (deid/step.py).
            "late_successes": (float(np.mean(iterations[flags["success"]] > int(config.deid.max_iters) // 2))
                               if flags["success"].any() else None),
            "fallback": float(np.mean(np.asarray(outputs["fallback"], bool))),
            "flags": flags}


# --------------------------------------------------------------------------- Fig. 5


def quality_scores(config, outputs: dict, evalset: EvalSet) -> dict:
    """Fig. 5: SSIM, CS and PSNR of private vs original low-light, face region and whole frame.

    Returns {"face": {...}, "frame": {...}, "face_success_only": {...}} with, per metric, the
    mean over images and its 95 % bootstrap interval over identities. The face region is
    the aligned crop at the TRUE box of both images, so every method is scored on the same
    pixels whatever its detector did; failed images are scored as released (fallback).
    """
    from .metrics import image_cosine_similarity, psnr, ssim

    def scores(a, b):
        a, b = jnp.asarray(a), jnp.asarray(b)
        return {"ssim": np.asarray(ssim(a, b)), "cs": np.asarray(image_cosine_similarity(a, b)),
                "psnr": np.asarray(psnr(a, b))}

    private_face = face_crops(config, outputs["frames"], evalset.box)
    original_face = face_crops(config, evalset.lowlight, evalset.box)
    per_image = {"face": scores(private_face, original_face), "frame": scores(outputs["frames"], evalset.lowlight)}
    success = np.asarray(outputs["success"], bool)
    out = {}
    for region, values in per_image.items():
        out[region] = {k: float(np.mean(np.minimum(v, 100.0) if k == "psnr" else v)) for k, v in values.items()}
        out[region]["ci95"] = {k: _identity_ci(np.minimum(v, 100.0) if k == "psnr" else v, evalset.label, config)
                               for k, v in values.items()}
    out["face_success_only"] = ({k: float(np.mean(v[success])) for k, v in per_image["face"].items()}
                                if success.any() else None)
    return out


# --------------------------------------------------------------------------- Table 3


class Recognizer(NamedTuple):
    name: str
    embed: Any        # embed(variables, images) -> unit embeddings
    variables: dict
    trained: bool


def load_recognizer(config, arch: str, *, train_missing: bool, allow_untrained: bool, overrides=(),
                    seed: int | None = None, workdir: str | None = None, name: str | None = None) -> Recognizer | None:
    """A trained recognizer (training it through `jaxdeid train recognizer` when missing).

    ``seed``/``workdir`` select an independent run (the fifth, black-box recognizer).
    Returns None when it is missing and may be neither trained nor randomly initialised.
    """
    from .recognizers.model import init_variables, make_embed, make_recognizer
    from .recognizers.train import load_trained

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


def embed_all(recognizer: Recognizer, faces: np.ndarray, batch: int) -> np.ndarray:
    """Embeddings of ``faces`` in fixed-size batches (padded: one compilation)."""
    n = faces.shape[0]
    batch = max(1, min(batch, n))
    out = []
    for start in range(0, n, batch):
        x = faces[start:start + batch]
        valid = x.shape[0]
        if valid < batch:
            x = np.concatenate([x, np.repeat(x[-1:], batch - valid, axis=0)])
        out.append(np.asarray(recognizer.embed(recognizer.variables, jnp.asarray(x, jnp.float32)))[:valid])
    return np.concatenate(out)


class References(NamedTuple):
    """Clean normal-light faces the private faces are compared with (never the probes' own photos)."""

    faces: np.ndarray    # float32 [M, R, R, 3]
    labels: np.ndarray   # int32 [M]


def reference_faces(config, evalset: EvalSet, per_identity: int | None = None) -> References:
    """Up to ``per_identity`` clean train-split faces of every test-split identity.

    SynthFaces' random 98:1:1 split over images leaves about one test image per identity,
    so the "different clean image of the same identity" of a genuine pair and the gallery
    templates come from the train split (the same convention as Table 1). Every identity
    of the test split is enrolled, so identities outside the evaluated subset act as
    gallery distractors.
    """
    from .data import get_source

    per_identity = int(per_identity or config.recognizer.gallery_per_identity)
    test_ids = np.unique(get_source(config, "test").labels)
    train = get_source(config, "train")
    labels = np.asarray(train.labels)
    order = np.argsort(labels, kind="stable")
    chosen = []
    for identity in test_ids:
        members = order[np.searchsorted(labels[order], identity):np.searchsorted(labels[order], identity, "right")]
        chosen.extend(members[:per_identity].tolist())
    if not chosen:
        raise ValueError("no train-split image shares an identity with the test split")
    idx = np.asarray(sorted(chosen), np.int64)
    faces = np.concatenate([train.get(idx[s:s + 256])["image"] for s in range(0, len(idx), 256)])
    return References(np.asarray(faces, np.float32), labels[idx].astype(np.int32))


def recognition_rates(config, recognizer: Recognizer, probe_faces: np.ndarray, probe_labels: np.ndarray,
                      references: References, reference_embeddings: np.ndarray | None = None,
                      seed: int = 0) -> dict:
    """1:1 TPR/FPR and 1:N tpr_1n/fpr_1n of ``probe_faces`` (with 95 % CIs over identities)."""
    from .metrics import (enroll_gallery, identification_ci, identification_rates, make_pairs, pair_scores,
                          verification_ci, verification_rates)

    threshold = float(config.recognizer.threshold)
    batch = int(config.recognizer.eval_batch_size)
    probes = embed_all(recognizer, probe_faces, batch)
    refs = embed_all(recognizer, references.faces, batch) if reference_embeddings is None else reference_embeddings
    num_pairs = max(int(config.recognizer.eval_pairs), 8 * len(probe_labels))
    genuine, impostor = make_pairs(probe_labels, num_pairs, seed, reference_labels=references.labels)
    sims, is_genuine = pair_scores(probes, genuine, impostor, refs)
    rates = verification_rates(sims, is_genuine, threshold)
    pair_ids = probe_labels[np.concatenate([genuine[:, 0], impostor[:, 0]])]
    samples = int(config.recognizer.bootstrap_samples)
    vci = verification_ci(sims, is_genuine, pair_ids, threshold, keys=("tpr", "fpr"), num_resamples=samples,
                          seed=seed)
    gallery, gallery_labels = enroll_gallery(refs, references.labels)
    ident = identification_rates(probes, probe_labels, gallery, gallery_labels, threshold)
    ici = identification_ci(probes, probe_labels, gallery, gallery_labels, threshold,
                            keys=("tpr_1n", "fpr_1n", "reject_1n"), num_resamples=samples, seed=seed)
    return {"tpr": float(rates["tpr"]), "fpr": float(rates["fpr"]), "tpr_1n": ident["tpr_1n"],
            "fpr_1n": ident["fpr_1n"], "reject_1n": ident["reject_1n"], "rank1": ident["rank1"],
            "ci95": {**vci, **ici}, "pairs": int(len(genuine)), "gallery": int(len(gallery_labels)),
            "mean_genuine_similarity": float(np.mean(sims[is_genuine])),
            "mean_impostor_similarity": float(np.mean(sims[~is_genuine])),
            "trained": recognizer.trained}


# --------------------------------------------------------------------------- figures


def bar_chart(path: Path, groups: dict[str, dict[str, float]], title: str, ylabel: str,
              paper: dict[str, float] | None = None, errors: dict[str, dict[str, tuple]] | None = None,
              ylim: tuple[float, float] | None = None, prov: dict | None = None) -> Path:
    """Grouped bars: one group per key of ``groups`` ({group: {series: value}}); paper values as markers."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"provenance": json.dumps(prov)} if prov else None
    fig.savefig(path, metadata=metadata)
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
