"""Training and loading the face cropping network through the shared loop.

The detector learns from SynthFaces normal-light scenes and, for a fraction
``crop.enhanced_fraction`` of each batch, the same scenes darkened with LLNet's
synthesis and passed through the trained light enhancement network: the frames the
private step actually hands it (paper §3, Fig. 2: enhancement comes before cropping).
It never sees a raw low-light frame, so the paper's Fig. 6 mechanism (a detector built
for ordinary images misses faces in low light and finds them again after
enhancement) is still what ``jaxdeid/reproduce/detection.py`` measures.

    jaxdeid train crop --preset small      # needs the enhancement network when enhanced_fraction > 0
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..data import batch_indices, get_source
from ..data.lowlight import darken
from ..light import load_trained as load_light
from ..store import resolve
from ..train import Task, TrainingReport, make_optimizer, run
from . import ops
from .detector import FaceDetector, decode, detect_and_crop, detection_loss, make_detector

TASK_NAME = "crop"


def flip_horizontally(images: jax.Array, boxes: jax.Array, flip: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mirrors the images (and their boxes) where ``flip`` [B] is true."""
    mirrored = jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)
    mirrored_boxes = jnp.stack([boxes[:, 0], 1.0 - boxes[:, 3], boxes[:, 2], 1.0 - boxes[:, 1]], axis=-1)
    return mirrored, jnp.where(flip[:, None], mirrored_boxes, boxes)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _detection_step(detector, transform, variables, transform_args, frames, true_boxes, batch_index):
    if transform is not None:
        frames = transform(transform_args, batch_index, frames)
    found, scores = decode(detector.apply(variables, frames, train=False))
    return ops.box_iou(found, true_boxes), scores, found


def detection_stats(detector: FaceDetector, variables: dict[str, Any], frames: np.ndarray, boxes: np.ndarray,
                    batch_size: int = 64, transform=None, transform_args=None) -> dict[str, np.ndarray]:
    """Runs the detector over ``frames`` in batches; returns per-frame ``iou``, ``score`` and ``box``.

    ``transform(transform_args, batch_index, frames) -> frames`` (jit-able, hashable, e.g. a
    module-level function) is applied on the device first, e.g. low-light synthesis or
    enhancement; ``transform_args`` (a pytree such as network variables) is passed as a
    traced argument, so it is not baked into the compiled program.
    """
    ious, scores, found = [], [], []
    for start in range(0, len(frames), batch_size):
        stop = min(start + batch_size, len(frames))
        # Pad the last batch to a full one so the step compiles once.
        pad = batch_size - (stop - start)
        f = np.concatenate([frames[start:stop], np.repeat(frames[stop - 1:stop], pad, 0)]) if pad else frames[start:stop]
        b = np.concatenate([boxes[start:stop], np.repeat(boxes[stop - 1:stop], pad, 0)]) if pad else boxes[start:stop]
        iou, score, box = jax.device_get(_detection_step(detector, transform, variables, transform_args, f, b,
                                                           start // batch_size))
        ious.append(iou[:stop - start])
        scores.append(score[:stop - start])
        found.append(box[:stop - start])
    return {"iou": np.concatenate(ious), "score": np.concatenate(scores), "box": np.concatenate(found)}


def detection_rate(stats: dict[str, np.ndarray], iou_threshold: float, score_threshold: float) -> float:
    """Fraction of frames whose face was found: score above threshold and IoU >= threshold (docs/method.md §4.4)."""
    hits = (stats["iou"] >= iou_threshold) & (stats["score"] >= score_threshold)
    return float(np.mean(hits))


class LowlightBounds(NamedTuple):
    """LLNet's parameters as a hashable value (a static argument of the jitted detection step)."""

    gamma_min: float
    gamma_max: float
    sigma_max: float


def _dark_then_enhance(enhancer, lowlight: LowlightBounds, args, batch_index, frames):
    """Transform for `detection_stats`: a fixed LLNet draw per batch, then the enhancement network."""

    variables, key = args
    low = darken(jax.random.fold_in(key, batch_index), frames, lowlight)
    return jnp.clip(enhancer.apply(variables, low), 0.0, 1.0)


# Keys of the enhanced-scene mix: training draws and the fixed validation draw.
ENHANCED_TRAIN_TAG = 0xC40E
ENHANCED_EVAL_TAG = 0xC4E7


def make_task(config, source=None, eval_source=None) -> Task:
    """The ``crop`` task: CenterNet loss on normal-light (and enhanced low-light) SynthFaces scenes.

    Args:
      config: the full project config.
      source: a data source with ``scenes(indices)`` (default: ``get_source(config, "train")``,
        loaded on first use so that restoring a checkpoint needs no data).
      eval_source: scenes for the in-training detection rate (default: the val split).
    """
    crop_cfg, train_cfg = config.crop, config.crop.train
    detector = make_detector(config)
    optimizer = make_optimizer(train_cfg)
    side = config.data.scene_resolution
    sources: dict[str, Any] = {"train": source, "val": eval_source}
    enhanced_fraction = float(crop_cfg.enhanced_fraction)
    enhancer: dict[str, Any] = {}

    def get_enhancer():
        # Loaded on first use (not at task construction), so restoring a detector needs no enhancer.
        if not enhancer:
            enhancer["model"], enhancer["variables"] = load_light(config, "enhance")
        return enhancer["model"], enhancer["variables"]

    def get(split):
        if sources[split] is None:
            sources[split] = get_source(config, split)
        return sources[split]

    def init(key):
        variables = detector.init(key, jnp.zeros((1, side, side, 3), jnp.float32), train=False)
        return {"params": variables["params"], "batch_stats": variables["batch_stats"],
                "opt_state": optimizer.init(variables["params"])}

    def batch_fn(position):
        train = get("train")
        indices = batch_indices(len(train), train_cfg.batch_size, config.seed, position)
        scenes = train.scenes(indices)
        if enhanced_fraction > 0:
            get_enhancer()   # before the step is traced: it closes over the enhancer's variables
        return {"image": np.asarray(scenes["image"], np.float32), "box": np.asarray(scenes["box"], np.float32)}

    def train_step(state, batch, key):
        images, boxes = batch["image"], batch["box"]
        if enhanced_fraction > 0:

            key, k_dark, k_pick = jax.random.split(key, 3)
            model, variables = get_enhancer()
            low = darken(jax.random.fold_in(k_dark, ENHANCED_TRAIN_TAG), images, config.lowlight)
            enhanced = jax.lax.stop_gradient(jnp.clip(model.apply(variables, low), 0.0, 1.0))
            pick = jax.random.bernoulli(k_pick, enhanced_fraction, (images.shape[0],))
            images = jnp.where(pick[:, None, None, None], enhanced, images)
        if crop_cfg.flip:
            images, boxes = flip_horizontally(images, boxes, jax.random.bernoulli(key, 0.5, (images.shape[0],)))

        def loss_fn(params):
            outputs, updates = detector.apply({"params": params, "batch_stats": state["batch_stats"]}, images,
                                              train=True, mutable=["batch_stats"])
            loss, metrics = detection_loss(outputs, boxes, focal_alpha=crop_cfg.focal_alpha,
                                           focal_beta=crop_cfg.focal_beta, size_weight=crop_cfg.size_weight,
                                           offset_weight=crop_cfg.offset_weight)
            found, _ = decode(outputs)
            metrics["train_iou"] = jnp.mean(ops.box_iou(jax.lax.stop_gradient(found), boxes))
            return loss, (metrics, updates["batch_stats"])

        (_, (metrics, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "batch_stats": batch_stats,
                "opt_state": opt_state}, metrics

    def eval_fn(state):
        val = get("val")
        count = min(len(val), crop_cfg.eval_scenes)
        if count == 0:
            return {}
        scenes = val.scenes(np.arange(count))
        variables = inference_variables(state)
        frames, boxes = np.asarray(scenes["image"]), np.asarray(scenes["box"])
        stats = detection_stats(detector, variables, frames, boxes, batch_size=min(count, 64))
        out = {"detection_rate": detection_rate(stats, crop_cfg.iou_threshold, crop_cfg.score_threshold),
               "mean_iou": float(np.mean(stats["iou"]))}
        if enhanced_fraction > 0:
            model, enhancer_variables = get_enhancer()
            key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), ENHANCED_EVAL_TAG)
            lowlight = LowlightBounds(float(config.lowlight.gamma_min), float(config.lowlight.gamma_max),
                                      float(config.lowlight.sigma_max))
            enhanced = detection_stats(detector, variables, frames, boxes, batch_size=min(count, 64),
                                       transform=functools.partial(_dark_then_enhance, model, lowlight),
                                       transform_args=(enhancer_variables, key))
            out["enhanced_detection_rate"] = detection_rate(enhanced, crop_cfg.iou_threshold,
                                                            crop_cfg.score_threshold)
        return out

    return Task(name=TASK_NAME, init=init, train_step=train_step, batch_fn=batch_fn, eval_fn=eval_fn)


def inference_variables(state) -> dict[str, Any]:
    """The detector's inference variables ``{'params', 'batch_stats'}`` from its training state."""
    return {"params": state["params"], "batch_stats": state["batch_stats"]}


def load_trained(config) -> tuple[FaceDetector, dict[str, Any]]:
    """The trained detector and its inference variables, by `jaxdeid.store.resolve`.

    Raises FileNotFoundError naming ``jaxdeid train crop`` when neither a checkpoint nor shipped weights exist.
    """
    variables = resolve(config, make_task(config), inference_variables, f"jaxdeid train crop --preset {config.preset}")
    return make_detector(config), variables


def make_cropper(config, detector: FaceDetector):
    """A jitted ``crop_faces(variables, frames) -> (faces, boxes, scores)``: detection + the encoder's aligned crop.

    The variables are an argument (not closed over), so they are not baked into the program.
    """

    resolution, margin = int(config.data.resolution), float(config.crop.align_margin)

    def crop_faces(variables, frames):
        return detect_and_crop(detector, variables, frames, resolution, margin)

    return jax.jit(crop_faces)


def fit(config, args) -> TrainingReport:
    """`jaxdeid train crop`."""
    del args
    _, records = run(make_task(config), config.crop.train, config.workdir, seed=config.seed, desc="crop")
    return TrainingReport(TASK_NAME, Path(config.workdir), records, int(config.crop.train.steps))