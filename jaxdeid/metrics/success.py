"""Success rate of private-image generation (paper Fig. 6, docs/method.md §4.4) and box IoU.

Per low-light test image, generation *succeeds* when all three hold:

1. detected      the cropping network found exactly one face; where the true box is known
                 (SynthFaces scenes), its box has IoU >= 0.5 with it;
2. valid         the released face is finite, not black (mean luminance at least
                 ``deid.valid_luminance_ratio`` of the input face's) and the detector still
                 finds a face there in the released frame;
3. deidentified  every white-box recognizer rejects every view of it: cosine similarity to
                 the person's reference < threshold. What hit the noise loop's iteration
                 cap still matches someone, so it fails here (docs/method.md §4.6).

The private step decides all three on the frame it releases (`jaxdeid.deid.step`) and
returns them; ``success_rate`` reads those decisions and adds the one thing the step
cannot know, the true box, then reports the rate and each part's rate separately.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from .registry import register_metric
from .verification import DEFAULT_THRESHOLD

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


@register_metric("success_rate", kind="success", higher_is_better=True)
def success_rate(step_flags: Mapping[str, np.ndarray], *, pred_boxes: np.ndarray | None = None,
                 true_boxes: np.ndarray | None = None, iou_threshold: float = 0.5,
                 similarities: Mapping[str, np.ndarray] | None = None,
                 threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Fig. 6 success rate and its three parts over N images (module docstring).

    Args:
      step_flags: the private step's per-image decisions, [N] booleans each: "detected",
        "valid" and "deidentified" (`jaxdeid.deid.step`, its diagnostics).
      pred_boxes, true_boxes: [N, 4] the step's boxes and the true ones (NaN rows: unknown);
        pass both or neither. With them, "detected" also needs IoU >= ``iou_threshold``.
      similarities: per white-box recognizer, [N] the step's deciding cosine similarities,
        for each judge's rejection rate (NaN, never judged, is not a rejection).
      threshold: a recognizer "matches" when similarity >= threshold.
    """
    detected = np.asarray(step_flags["detected"], bool).reshape(-1).copy()
    num_images = detected.shape[0]
    if (pred_boxes is None) != (true_boxes is None):
        raise ValueError("pass both pred_boxes and true_boxes, or neither")
    if true_boxes is not None:
        true_boxes = np.asarray(true_boxes, np.float32)
        known = ~np.any(np.isnan(true_boxes), axis=-1)
        overlap = np.asarray(iou(jnp.asarray(pred_boxes, jnp.float32), jnp.nan_to_num(true_boxes)))
        detected &= ~known | (overlap >= iou_threshold)
    valid = np.asarray(step_flags["valid"], bool).reshape(-1)
    deidentified = np.asarray(step_flags["deidentified"], bool).reshape(-1)
    if valid.shape != (num_images,) or deidentified.shape != (num_images,):
        raise ValueError("step_flags must hold [N] detected, valid and deidentified flags")
    success = detected & valid & deidentified
    rejected = {name: np.asarray(v, np.float64).reshape(-1) < threshold for name, v in (similarities or {}).items()}
    return {
        "rate": float(success.mean()),
        "detected_rate": float(detected.mean()),
        "valid_rate": float(valid.mean()),
        "deidentified_rate": float(deidentified.mean()),
        "reject_rate": {name: float(r.mean()) for name, r in rejected.items()},
        "num_images": int(num_images),
        "flags": {"detected": detected, "valid": valid, "deidentified": deidentified, "success": success},
    }
