"""Crop and paste-back ops (docs/method.md §1 components 2 and 8), pure JAX and jit-able.

Boxes follow the project convention: ``(y0, x0, y1, x1)`` normalised to ``[0, 1]``
of the frame. All resampling goes through ``jax.image.scale_and_translate`` (vmapped
over the batch so every sample has its own box), so cropping a detected face and
putting the private face back both stay on the device with no host round trip.

Coordinates: ``scale_and_translate`` uses half-centred pixels and maps an input
position ``p`` (in pixels, continuous) to the output position ``p * scale + t``.
Cropping the pixel interval ``[a, b]`` of the frame into ``n`` output pixels is
therefore ``scale = n / (b - a)`` and ``t = -a * scale``; pasting back is the
inverse map, ``scale' = 1 / scale`` and ``t' = a``.

The public ops are jitted with their sizes, margins and kernels static (plain Python
numbers from the config); they can be called from inside a larger jitted step too.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from ..metrics import get_metric

Size = int | Sequence[int]


def _hw(size: Size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


# Intersection over union of paired (y0, x0, y1, x1) boxes [..., 4] -> [...]: the metric's own function.
box_iou = get_metric("iou")


def expand_boxes(boxes: jax.Array, margin: float) -> jax.Array:
    """Grows each box by ``margin`` times its own height/width on every side (not clipped)."""
    height = boxes[..., 2] - boxes[..., 0]
    width = boxes[..., 3] - boxes[..., 1]
    return jnp.stack([boxes[..., 0] - margin * height, boxes[..., 1] - margin * width,
                      boxes[..., 2] + margin * height, boxes[..., 3] + margin * width], axis=-1)


def square_boxes(boxes: jax.Array, frame_hw: tuple[int, int], margin: float) -> jax.Array:
    """Square (in pixels) boxes centred on each box's centre, side ``(1 + 2 margin) * max(h, w)``.

    The encoder and generator see faces at a fixed square resolution, so the aligned crop
    must not stretch the face: the square is measured in pixels, which matters when the
    frame is not square.
    """
    frame_h, frame_w = frame_hw
    centre_y = 0.5 * (boxes[..., 0] + boxes[..., 2]) * frame_h
    centre_x = 0.5 * (boxes[..., 1] + boxes[..., 3]) * frame_w
    side = jnp.maximum((boxes[..., 2] - boxes[..., 0]) * frame_h, (boxes[..., 3] - boxes[..., 1]) * frame_w)
    half = 0.5 * (1.0 + 2.0 * margin) * side
    return jnp.stack([(centre_y - half) / frame_h, (centre_x - half) / frame_w,
                      (centre_y + half) / frame_h, (centre_x + half) / frame_w], axis=-1)


def _crop_one(frame: jax.Array, region: jax.Array, out_hw: tuple[int, int], method: str) -> jax.Array:
    frame_h, frame_w = frame.shape[0], frame.shape[1]
    top, left = region[0] * frame_h, region[1] * frame_w
    # A degenerate box must not divide by zero inside jit; one pixel is the smallest region.
    span_h = jnp.maximum((region[2] - region[0]) * frame_h, 1e-3)
    span_w = jnp.maximum((region[3] - region[1]) * frame_w, 1e-3)
    scale = jnp.stack([out_hw[0] / span_h, out_hw[1] / span_w])
    translation = -jnp.stack([top, left]) * scale
    return jax.image.scale_and_translate(frame, (*out_hw, frame.shape[2]), (0, 1), scale, translation,
                                         method=method, antialias=True)


@functools.partial(jax.jit, static_argnames=("out_size", "margin", "method"))
def crop(frames: jax.Array, boxes: jax.Array, out_size: Size, margin: float = 0.0,
         method: str = "linear") -> jax.Array:
    """Crops ``boxes`` (grown by ``margin``) out of ``frames`` and resizes them to ``out_size``.

    Args:
      frames: ``[B, H, W, C]`` float images.
      boxes: ``[B, 4]`` normalised ``(y0, x0, y1, x1)``.
      out_size: output side (int) or ``(height, width)``.
      margin: fraction of the box side added on every side (see ``expand_boxes``).
      method: ``jax.image`` resampling kernel; antialiased when shrinking.

    Returns:
      ``[B, out_h, out_w, C]``. Parts of the grown box outside the frame are zero.
    """
    out_hw = _hw(out_size)
    regions = expand_boxes(boxes, margin)
    return jax.vmap(lambda f, r: _crop_one(f, r, out_hw, method))(frames, regions)


@functools.partial(jax.jit, static_argnames=("resolution", "margin", "method"))
def aligned_crop(frames: jax.Array, boxes: jax.Array, resolution: int, margin: float,
                 method: str = "linear") -> jax.Array:
    """The encoder's fixed-size input: a square crop around each box's centre, ``resolution`` px a side."""
    squares = square_boxes(boxes, (frames.shape[1], frames.shape[2]), margin)
    return crop(frames, squares, resolution, margin=0.0, method=method)


def feather_mask(frame_hw: tuple[int, int], region: jax.Array, feather: float) -> jax.Array:
    """Soft mask ``[H, W, 1]``: 1 inside ``region``, ramping linearly to 0 at its border.

    ``feather`` is the width of the ramp as a fraction of the region's side; the mask is
    exactly 0 outside the region, so paste-back never touches pixels outside it.
    """
    frame_h, frame_w = frame_hw
    # Position of every pixel centre inside the region, 0 at one edge and 1 at the other.
    v = ((jnp.arange(frame_h) + 0.5) / frame_h - region[0]) / jnp.maximum(region[2] - region[0], 1e-6)
    u = ((jnp.arange(frame_w) + 0.5) / frame_w - region[1]) / jnp.maximum(region[3] - region[1], 1e-6)
    edge_v = jnp.minimum(v, 1.0 - v)
    edge_u = jnp.minimum(u, 1.0 - u)
    distance = jnp.minimum(edge_v[:, None], edge_u[None, :])  # to the nearest region edge
    if feather > 0:
        mask = jnp.clip(distance / feather, 0.0, 1.0)
    else:
        mask = (distance >= 0).astype(jnp.float32)
    return mask[..., None]


def _paste_one(frame: jax.Array, face: jax.Array, region: jax.Array, feather: float, method: str) -> jax.Array:
    frame_h, frame_w = frame.shape[0], frame.shape[1]
    face_h, face_w = face.shape[0], face.shape[1]
    span_h = jnp.maximum((region[2] - region[0]) * frame_h, 1e-3)
    span_w = jnp.maximum((region[3] - region[1]) * frame_w, 1e-3)
    # Inverse of `_crop_one`: face pixel q lands at frame pixel top + q * span / face_side.
    scale = jnp.stack([span_h / face_h, span_w / face_w])
    translation = jnp.stack([region[0] * frame_h, region[1] * frame_w])
    placed = jax.image.scale_and_translate(face, frame.shape, (0, 1), scale, translation,
                                           method=method, antialias=True)
    mask = feather_mask((frame_h, frame_w), region, feather)
    return mask * placed + (1.0 - mask) * frame


@functools.partial(jax.jit, static_argnames=("margin", "feather", "method"))
def paste_back(frames: jax.Array, faces: jax.Array, boxes: jax.Array, margin: float = 0.0,
               feather: float = 0.05, method: str = "linear") -> jax.Array:
    """Puts ``faces`` back where ``crop(frames, boxes, ..., margin)`` took them from (component 8).

    The inverse resampling maps each face into frame coordinates and a feathered mask
    blends it in, so the seam between the private face and the original frame is soft
    ("attaching it to the original video or image", paper §4.2). Pixels outside the
    grown box are returned unchanged.

    Args:
      frames: ``[B, H, W, C]`` original frames.
      faces: ``[B, h, w, C]`` faces, as produced by ``crop`` with the same boxes and margin.
      boxes: ``[B, 4]`` the boxes the faces were cropped from.
      margin: the margin used for the crop.
      feather: blend ramp width as a fraction of the grown box side; keep it at or below
        ``margin / (1 + 2 margin)`` so the face box itself is fully replaced.
    """
    regions = expand_boxes(boxes, margin)
    return jax.vmap(lambda f, p, r: _paste_one(f, p, r, feather, method))(frames, faces, regions)


@functools.partial(jax.jit, static_argnames=("margin", "feather", "method"))
def paste_back_aligned(frames: jax.Array, faces: jax.Array, boxes: jax.Array, margin: float,
                       feather: float = 0.05, method: str = "linear") -> jax.Array:
    """The inverse of ``aligned_crop``: pastes square faces back around each box's centre."""
    squares = square_boxes(boxes, (frames.shape[1], frames.shape[2]), margin)
    return paste_back(frames, faces, squares, margin=0.0, feather=feather, method=method)
