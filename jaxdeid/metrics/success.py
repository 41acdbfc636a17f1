"""Success rate of private-image generation (paper Fig. 6, docs/method.md §4.4) and box IoU.

Per low-light test image, generation *succeeds* when all three hold:

1. detected      the cropping network found the face; where the true box is known
                 (SynthFaces scenes), its box has IoU >= 0.5 with it;
2. valid         the output face is finite everywhere and not black: its mean luminance is
                 at least half of the input face's (the paper's failures are "completely
                 black" outputs and missed faces, §4.3); and, where the private step says
                 so, the detector still finds a face there in the released frame;
3. deidentified  every white-box recognizer rejects it: cosine similarity to the person's
                 reference < threshold for each recognizer. What hit the noise loop's
                 iteration cap still matches someone, so it fails here (docs/method.md §4.6).

``success_rate`` reports the rate and each part's rate separately.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from .registry import register_metric
from .verification import DEFAULT_THRESHOLD

_BT601 = (0.299, 0.587, 0.114)  # luma weights for R, G, B (ITU-R BT.601)


@register_metric("iou", kind="geometry", higher_is_better=True)
@jax.jit
def iou(box_a: jax.Array, box_b: jax.Array) -> jax.Array:
    """Intersection over union of (y0, x0, y1, x1) boxes, [..., 4] x2 -> [...]; 0 when disjoint.

    Degenerate (zero-area) boxes give 0 rather than NaN.
    """
    y0 = jnp.maximum(box_a[..., 0], box_b[..., 0])
    x0 = jnp.maximum(box_a[..., 1], box_b[..., 1])
    y1 = jnp.minimum(box_a[..., 2], box_b[..., 2])
    x1 = jnp.minimum(box_a[..., 3], box_b[..., 3])
    intersection = jnp.clip(y1 - y0, 0.0) * jnp.clip(x1 - x0, 0.0)

    def area(box: jax.Array) -> jax.Array:
        return jnp.clip(box[..., 2] - box[..., 0], 0.0) * jnp.clip(box[..., 3] - box[..., 1], 0.0)

    union = area(box_a) + area(box_b) - intersection
    return jnp.where(union > 0, intersection / jnp.where(union > 0, union, 1.0), 0.0)


def mean_luminance(images: np.ndarray) -> np.ndarray:
    """Mean BT.601 luma per image, [N, H, W, 3] in [0, 1] -> [N] (NaN propagates)."""
    images = np.asarray(images, np.float64)
    return np.tensordot(images, np.asarray(_BT601), axes=([-1], [0])).mean(axis=(-2, -1))


@register_metric("success_rate", kind="success", higher_is_better=True)
def success_rate(output_faces: np.ndarray, input_faces: np.ndarray,
                 recognizer_similarities: Mapping[str, np.ndarray] | np.ndarray,
                 threshold: float = DEFAULT_THRESHOLD,
                 found: np.ndarray | None = None,
                 pred_boxes: np.ndarray | None = None,
                 true_boxes: np.ndarray | None = None,
                 iou_threshold: float = 0.5,
                 found_again: np.ndarray | None = None) -> dict:
    """Fig. 6 success rate and its three parts over N images (module docstring).

    Args:
      output_faces: [N, h, w, 3] the generated face region (private image, same box).
      input_faces: [N, h, w, 3] the face region of the low-light input.
      recognizer_similarities: per white-box recognizer, [N] cosine similarities between
        the private image and the person's reference (original image or gallery template);
        a {name: [N]} mapping or an [R, N] array.
      threshold: a recognizer "matches" when similarity >= threshold.
      found: [N] bool, the detector reported a face (score above its threshold); all True
        when None.
      pred_boxes, true_boxes: [N, 4] (y0, x0, y1, x1); a true box row containing NaN means
        "unknown" and only ``found`` counts for that image. Both None: no IoU check.
      iou_threshold: detection needs IoU >= this with a known true box.
      found_again: [N] bool, the detector finds the face again in the released frame, at
        its place (the private step's ``redetected``); a face it no longer finds is not
        valid. None: not checked.

    Returns:
      {"rate", "detected_rate", "valid_rate", "deidentified_rate", "reject_rate":
      {recognizer: rate}, "num_images", "flags": {"detected", "valid", "deidentified",
      "success"} as [N] bool arrays}. Parts are rated over all N images, so they are
      comparable across methods; ``rate`` needs all three on the same image.
    """
    output_faces = np.asarray(output_faces)
    num_images = output_faces.shape[0]
    if isinstance(recognizer_similarities, Mapping):
        names = list(recognizer_similarities)
        similarities = np.stack([np.asarray(recognizer_similarities[n], np.float64).reshape(-1) for n in names])
    else:
        similarities = np.asarray(recognizer_similarities, np.float64).reshape(-1, num_images)
        names = [f"recognizer_{i}" for i in range(similarities.shape[0])]
    if similarities.shape != (len(names), num_images) or len(names) == 0:
        raise ValueError(f"need similarities for >= 1 recognizer over {num_images} images, got {similarities.shape}")

    detected = np.ones(num_images, bool) if found is None else np.asarray(found, bool).reshape(-1).copy()
    if (pred_boxes is None) != (true_boxes is None):
        raise ValueError("pass both pred_boxes and true_boxes, or neither")
    if true_boxes is not None:
        true_boxes = np.asarray(true_boxes, np.float32)
        known = ~np.any(np.isnan(true_boxes), axis=-1)
        overlap = np.asarray(iou(jnp.asarray(pred_boxes, jnp.float32), jnp.nan_to_num(true_boxes)))
        detected &= ~known | (overlap >= iou_threshold)

    finite = np.all(np.isfinite(output_faces.reshape(num_images, -1)), axis=1)
    bright_enough = mean_luminance(np.nan_to_num(output_faces)) >= 0.5 * mean_luminance(input_faces)
    valid = finite & bright_enough
    if found_again is not None:
        valid &= np.asarray(found_again, bool).reshape(-1)

    rejected = similarities < threshold  # NaN similarity counts as rejected: not a match
    deidentified = np.all(rejected, axis=0)

    success = detected & valid & deidentified
    return {
        "rate": float(success.mean()),
        "detected_rate": float(detected.mean()),
        "valid_rate": float(valid.mean()),
        "deidentified_rate": float(deidentified.mean()),
        "reject_rate": {name: float(r.mean()) for name, r in zip(names, rejected)},
        "num_images": int(num_images),
        "flags": {"detected": detected, "valid": valid, "deidentified": deidentified, "success": success},
    }
