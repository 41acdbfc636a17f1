"""The private-image evaluation protocol on the low-light test split (docs/method.md §4; Tables 2-4, Figs. 5-6).

In the order a result is computed:

1. **Evaluation set** (`evaluation_set`): the first ``count`` scenes of the SynthFaces
   test split (normal-light frames, true face boxes, identity labels), darkened once with
   LLNet synthesis (`jaxdeid.data.lowlight.darken`) from a fixed key, so every method sees
   the same low-light frames.
2. **Private outputs** (`run_private_step`): a method's jitted private step over the set
   in fixed-size batches (`run_padded`: the last batch padded, one compilation).
3. **Metrics**, all from `jaxdeid.metrics`:
   * `success_parts` (Fig. 6): found, valid and de-identified, as the step decided them on
     the released frame (docs/method.md §4.4), with 95 % bootstrap intervals over identities;
   * `quality_scores` (Fig. 5): SSIM, the paper's CS (cosine of pixel vectors) and PSNR of
     the released vs the original low-light image, over the face region (aligned crop at the
     true box) and over the whole frame;
   * `recognition_rates` (Table 3): 1:1 verification and 1:N identification of the released
     faces against clean train-split faces of every test identity (docs/method.md §4.2).

Training what is missing, caching outputs across scripts and drawing charts are the
reproduce scripts' business (`jaxdeid.reproduce.common`).
"""

from __future__ import annotations

import hashlib
import time
import json
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..crop import ops as crop_ops
from ..data import get_source
from ..data.lowlight import darken, darken_np
from ..data.synthfaces import render_scenes
from ..deid.step import make_jitted_private_step
from ..metrics import bootstrap_ci, enroll_gallery, get_metric, identification_ci, make_pairs, pair_scores, verification_ci


# Every reported number comes from a registered metric, looked up by name (`jaxdeid.metrics.registry`).
ssim, psnr, image_cosine_similarity = get_metric("ssim"), get_metric("psnr"), get_metric("image_cosine_similarity")
success_rate, verification_rates = get_metric("success_rate"), get_metric("verification")
identification_rates = get_metric("identification")

def run_padded(fn: Callable[[np.ndarray], Any], inputs: np.ndarray, batch: int) -> list[Any]:
    """``fn`` over ``inputs`` in batches of exactly ``batch`` rows (the last one padded by repeating its
    last row), so one compiled program serves any count; returns each batch's outputs with the padding
    rows dropped (every leaf sliced to the batch's real rows)."""
    n, batch = inputs.shape[0], max(1, int(batch))
    outputs = []
    for start in range(0, n, batch):
        x = inputs[start:start + batch]
        real = x.shape[0]
        if real < batch:
            x = np.concatenate([x, np.repeat(x[-1:], batch - real, axis=0)])
        outputs.append(jax.tree_util.tree_map(lambda v: np.asarray(v)[:real], fn(x)))
    return outputs


# Scenes evaluated per preset (capped by the size of the test split: 4 at smoke, 320 at small).
DEFAULT_COUNT = {"smoke": 8, "small": 256, "paper": 1000}


# Fixed keys, offset by config.seed: the LLNet draw of the evaluation set and the latent noise.
LOWLIGHT_KEY = 20_221_001


NOISE_KEY = 20_221_002


IMAGE_KEYS = ("frames", "original_faces", "input_faces", "synthesized_faces", "private_faces")


DIAG_KEYS = ("iterations", "similarities", "frame_similarities", "box", "score", "detected", "valid", "redetected",
              "deidentified", "success", "fallback")


def evaluation_count(config, requested: int | None) -> int:
    return int(requested if requested is not None else DEFAULT_COUNT[config.preset])


class EvalSet(NamedTuple):
    """The low-light test scenes every method is evaluated on."""

    normal: np.ndarray     # float32 [N, S, S, 3] normal-light frames
    lowlight: np.ndarray   # float32 [N, S, S, 3] LLNet low-light frames (the pipeline's input)
    box: np.ndarray        # float32 [N, 4] true face boxes (y0, x0, y1, x1), normalised
    label: np.ndarray      # int32 [N] identity ids
    indices: np.ndarray    # int64 [N] positions in the test split


def evaluation_set(config, count: int) -> EvalSet:
    """The first ``count`` test-split scenes and their fixed low-light versions (deterministic)."""

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


def unseen_lowlight_frames(config, batch: int) -> np.ndarray:
    """A fixed low-light batch for timing and profiling: SynthFaces scenes of identities outside
    every split's range (ids from 10,000,000), LLNet-darkened with a fixed seed."""
    ids = np.arange(batch) + 10_000_000
    frames, _ = render_scenes(ids, np.zeros(batch, np.int64), config.data.scene_resolution, seed=1234)
    return darken_np(np.random.default_rng(0), frames.astype(np.float32) / 255.0, config.lowlight).astype(np.float32)


def face_crops(config, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Aligned face crops (the pipeline's own crop geometry) at ``config.data.resolution``."""

    crop = jax.jit(lambda f, b: crop_ops.aligned_crop(f, b, int(config.data.resolution),
                                                      float(config.crop.align_margin)))
    return np.asarray(crop(jnp.asarray(frames, jnp.float32), jnp.asarray(boxes, jnp.float32)), np.float32)


def params_fingerprint(params) -> str:
    digest = hashlib.sha1()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return digest.hexdigest()


def config_fingerprint(config) -> str:
    sections = {k: config[k].to_dict() if hasattr(config[k], "to_dict") else config[k]
                for k in sorted(config.keys()) if k not in ("results_dir", "bench")}
    return hashlib.sha1(json.dumps(sections, sort_keys=True, default=str).encode()).hexdigest()


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(np.nan_to_num(np.asarray(x, np.float32)), 0.0, 1.0) * 255.0).astype(np.uint8)


def run_private_step(config, method: str, params, lowlight: np.ndarray, batch_size: int | None = None) -> dict:
    """Runs the jitted private step over ``lowlight`` frames in fixed batches (`run_padded`); numpy outputs.

    Returns frames + diagnostics (images as float32) and timings: the first batch (compile
    included) apart from the mean per-image time of the others.
    """
    step = make_jitted_private_step(config, method)
    n = lowlight.shape[0]
    batch = max(1, min(int(batch_size or config.deid.batch_size), n))
    key = jax.random.PRNGKey(NOISE_KEY + int(config.seed))
    seconds: list[float] = []

    def one_batch(x):
        t0 = time.perf_counter()
        frames, diag = step(params, jnp.asarray(x), jax.random.fold_in(key, len(seconds)))
        frames = jax.block_until_ready(frames)
        seconds.append(time.perf_counter() - t0)
        return {"frames": frames, **{k: diag[k] for k in IMAGE_KEYS[1:] + DIAG_KEYS}}

    pieces = run_padded(one_batch, lowlight, batch)
    result = {k: np.concatenate([piece[k] for piece in pieces]) for k in pieces[0]}
    result["timing"] = {"first_batch_s": seconds[0], "per_image_s": sum(seconds[1:]) / ((len(seconds) - 1) * batch)
                        if len(seconds) > 1 else None, "batch_size": batch}
    return result


def identity_ci(values: np.ndarray, labels: np.ndarray, config, seed: int = 0) -> tuple[float, float]:

    values = np.asarray(values, np.float64)
    return bootstrap_ci(lambda idx: values[idx].mean(axis=0), np.asarray(labels),
                        int(config.recognizer.bootstrap_samples), seed)


def success_parts(config, outputs: dict, evalset: EvalSet) -> dict:
    """Fig. 6: {"success", "detected", "valid", "deidentified"} rates in [0, 1], plus CIs and per-judge rejection.

    The parts are the step's own decisions on the released frame (`jaxdeid.metrics.success_rate`);
    the evaluation adds only the true box: detected also needs IoU ≥ crop.iou_threshold with it.
    """
    sims = np.asarray(outputs["similarities"], np.float64)
    judges = outputs["meta"]["judges"]
    rates = success_rate({k: outputs[k] for k in ("detected", "valid", "deidentified")},
                         pred_boxes=outputs["box"], true_boxes=evalset.box,
                         iou_threshold=float(config.crop.iou_threshold),
                         similarities={j: sims[:, i] for i, j in enumerate(judges)},
                         threshold=float(config.recognizer.threshold))
    flags = rates["flags"]
    parts = {"success": rates["rate"], "detected": rates["detected_rate"], "valid": rates["valid_rate"],
             "deidentified": rates["deidentified_rate"]}
    ci = {k: identity_ci(flags[k], evalset.label, config) for k in ("success", "detected", "valid", "deidentified")}
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


def quality_scores(config, outputs: dict, evalset: EvalSet) -> dict:
    """Fig. 5: SSIM, CS and PSNR of private vs original low-light, face region and whole frame.

    Returns {"face": {...}, "frame": {...}, "face_success_only": {...}} with, per metric, the
    mean over images and its 95 % bootstrap interval over identities. The face region is
    the aligned crop at the TRUE box of both images, so every method is scored on the same
    pixels whatever its detector did; failed images are scored as released (fallback).
    """

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
        out[region]["ci95"] = {k: identity_ci(np.minimum(v, 100.0) if k == "psnr" else v, evalset.label, config)
                               for k, v in values.items()}
    out["face_success_only"] = ({k: float(np.mean(v[success])) for k, v in per_image["face"].items()}
                                if success.any() else None)
    return out


class Recognizer(NamedTuple):
    name: str
    embed: Any        # embed(variables, images) -> unit embeddings
    variables: dict
    trained: bool


def embed_all(recognizer: Recognizer, faces: np.ndarray, batch: int) -> np.ndarray:
    """Embeddings of ``faces`` in fixed-size batches (`run_padded`: one compilation)."""
    pieces = run_padded(lambda x: recognizer.embed(recognizer.variables, jnp.asarray(x, jnp.float32)), faces,
                        min(batch, faces.shape[0]))
    return np.concatenate(pieces)


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
