"""The face cropping ("interception") network, docs/method.md §1 component 2.

The paper (§3, Fig. 2) uses a frontal-face cropping network but does not say which
detector or loss, so we use a standard single-object design: a CenterNet-style
detector (Zhou, Wang and Krähenbühl, "Objects as Points", 2019). A small residual
encoder with a feature-pyramid style decoder predicts, at output stride 4,

  * a face-centre heatmap (sigmoid), trained with CenterNet's penalty-reduced
    pixel-wise focal loss (their eq. 1, from CornerNet, Law and Deng 2018) against
    a Gaussian centred on the true centre;
  * the box height/width at each cell (L1 at the true centre cell, their eq. 3);
  * the sub-cell offset of the centre (L1, their eq. 2).

A training scene holds one face, so decoding takes the heatmap's global maximum (no
NMS): its sigmoid value is the face score and the size/offset at that cell give the box.
Real frames may hold more, so ``decode`` can also report the best score outside that
face's square, which the private step uses to refuse frames with a second face.
Everything — forward pass, decoding and the crop — runs inside jit.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from . import ops

# CenterNet initialises the heatmap bias to -log((1 - pi) / pi) with pi = 0.1, so the
# focal loss starts from "no face anywhere" instead of being swamped by the background.
HEATMAP_PRIOR_BIAS = -2.19


class ResidualBlock(nn.Module):
    """Basic residual block (two 3x3 convs, He et al. 2016), BatchNorm + ReLU."""

    features: int       # output channels
    strides: int = 1    # 2 halves the spatial size

    @nn.compact
    def __call__(self, x, train: bool):
        norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9, name=name)
        shortcut = x
        y = nn.Conv(self.features, (3, 3), self.strides, padding=1, use_bias=False, name="conv1")(x)
        y = nn.relu(norm("bn1")(y))
        y = nn.Conv(self.features, (3, 3), 1, padding=1, use_bias=False, name="conv2")(y)
        y = norm("bn2")(y)
        if shortcut.shape != y.shape:
            shortcut = nn.Conv(self.features, (1, 1), self.strides, use_bias=False, name="proj")(shortcut)
            shortcut = norm("proj_bn")(shortcut)
        return nn.relu(y + shortcut)


class FaceDetector(nn.Module):
    """CenterNet-style single-face detector.

    ``__call__(images, train)`` takes ``[B, S, S, 3]`` frames in [0, 1] and returns the
    raw heads at stride 4: ``heatmap_logits [B, S/4, S/4, 1]``, ``size [B, S/4, S/4, 2]``
    (box height, width in output cells) and ``offset [B, S/4, S/4, 2]`` (centre offset
    within the cell, in cells). ``decode`` turns them into boxes and scores.
    """

    width: int = 16                        # channels of the first stage; doubles per stage
    blocks: tuple[int, ...] = (1, 1, 1, 1)  # residual blocks per stage (strides 4, 8, 16, 32)
    head_width: int = 0                    # hidden channels of each head (0: `width`)

    @nn.compact
    def __call__(self, images, train: bool = False):
        x = images * 2.0 - 1.0  # centred inputs
        x = nn.Conv(self.width, (3, 3), 2, padding=1, use_bias=False, name="stem")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, name="stem_bn")(x))
        pyramid = []
        for stage, count in enumerate(self.blocks):
            for block in range(count):
                x = ResidualBlock(self.width * 2 ** stage, strides=2 if block == 0 else 1,
                                  name=f"stage{stage + 1}_block{block + 1}")(x, train)
            pyramid.append(x)
        # Top-down decoder with lateral connections (FPN, Lin et al. 2017) back to stride 4,
        # so the heads see both the coarse context and the fine localisation features.
        y = pyramid[-1]
        for level in range(len(pyramid) - 2, -1, -1):
            lateral = pyramid[level]
            y = jax.image.resize(y, (y.shape[0], lateral.shape[1], lateral.shape[2], y.shape[3]), "nearest")
            y = nn.Conv(lateral.shape[-1], (1, 1), name=f"reduce{level + 1}")(y)
            y = y + nn.Conv(lateral.shape[-1], (1, 1), name=f"lateral{level + 1}")(lateral)
            y = nn.Conv(lateral.shape[-1], (3, 3), padding=1, use_bias=False, name=f"smooth{level + 1}")(y)
            y = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f"smooth{level + 1}_bn")(y))
        hidden = self.head_width or self.width

        def head(name, out, bias_init=nn.initializers.zeros):
            h = nn.relu(nn.Conv(hidden, (3, 3), padding=1, name=f"{name}_hidden")(y))
            return nn.Conv(out, (1, 1), bias_init=bias_init, name=name)(h)

        # The size head regresses the box side as a fraction of the frame and is rescaled to
        # output cells: the loss is CenterNet's (in cells), but from a zero init Adam reaches
        # sides of 0.25-0.6 of the frame in tens of steps instead of hundreds.
        grid = jnp.asarray([y.shape[1], y.shape[2]], y.dtype)
        return {
            "heatmap_logits": head("heatmap", 1, nn.initializers.constant(HEATMAP_PRIOR_BIAS)),
            "size": head("size", 2) * grid,
            "offset": head("offset", 2),
        }


def decode(outputs: dict[str, jax.Array], exclusion_margin: float | None = None) -> tuple[jax.Array, ...]:
    """Heads -> (boxes ``[B, 4]`` normalised (y0, x0, y1, x1) clipped to [0, 1], scores ``[B]``).

    The box is the heat map's global maximum (one face per scene, no NMS). With
    ``exclusion_margin`` set, also returns ``second_scores [B]``: the best face score of
    any cell whose centre lies OUTSIDE the square of side ``(1 + 2 margin) * max(h, w)``
    around that box (`ops.square_boxes`, the region the private step replaces), 0 where
    no cell is outside. A confident second score means a second face that a one-face
    pipeline would leave untouched; the caller decides what to do (`jaxdeid.deid.step`
    pixelates the whole frame). No local-maximum test: any confident cell counts, so a
    second face is flagged even where its heat map merges with the first face's slope.
    """
    logits = outputs["heatmap_logits"][..., 0]
    batch, grid_h, grid_w = logits.shape
    flat = logits.reshape(batch, -1)
    peak = jnp.argmax(flat, axis=-1)
    score = jax.nn.sigmoid(jnp.take_along_axis(flat, peak[:, None], axis=-1)[:, 0])
    row, col = peak // grid_w, peak % grid_w
    take = lambda m: m.reshape(batch, grid_h * grid_w, -1)[jnp.arange(batch), peak]
    size, offset = take(outputs["size"]), take(outputs["offset"])
    centre_y = (row + offset[:, 0]) / grid_h
    centre_x = (col + offset[:, 1]) / grid_w
    half_h = 0.5 * jnp.abs(size[:, 0]) / grid_h
    half_w = 0.5 * jnp.abs(size[:, 1]) / grid_w
    boxes = jnp.stack([centre_y - half_h, centre_x - half_w, centre_y + half_h, centre_x + half_w], axis=-1)
    boxes = jnp.clip(boxes, 0.0, 1.0)
    if exclusion_margin is None:
        return boxes, score
    # The grid has the frame's aspect (one stride for both axes), so a square in cells is
    # the same square in pixels as `square_boxes` on the frame.
    square = ops.square_boxes(boxes, (grid_h, grid_w), float(exclusion_margin))
    cell_y = (jnp.arange(grid_h) + 0.5) / grid_h
    cell_x = (jnp.arange(grid_w) + 0.5) / grid_w
    inside_y = (cell_y[None, :] >= square[:, 0:1]) & (cell_y[None, :] <= square[:, 2:3])   # [B, H]
    inside_x = (cell_x[None, :] >= square[:, 1:2]) & (cell_x[None, :] <= square[:, 3:4])   # [B, W]
    inside = (inside_y[:, :, None] & inside_x[:, None, :]).reshape(batch, -1)
    # The peak cell itself never counts as a second face, even for a degenerate box.
    inside = inside | (jnp.arange(grid_h * grid_w)[None, :] == peak[:, None])
    second = jax.nn.sigmoid(jnp.max(jnp.where(inside, -jnp.inf, flat), axis=-1))
    return boxes, score, second


def centre_targets(boxes: jax.Array, grid_hw: tuple[int, int]) -> dict[str, jax.Array]:
    """CenterNet training targets for one true box per image.

    The centre cell is the integer cell holding the box centre (so the Gaussian peaks at
    exactly 1 there, as the focal loss needs); the Gaussian's standard deviation is a
    sixth of the box side on each axis, an elliptical version of CenterNet's size-adaptive
    radius (as in TTFNet, Liu et al. 2020).
    """
    grid_h, grid_w = grid_hw
    centre_y = 0.5 * (boxes[:, 0] + boxes[:, 2]) * grid_h
    centre_x = 0.5 * (boxes[:, 1] + boxes[:, 3]) * grid_w
    row = jnp.clip(jnp.floor(centre_y), 0, grid_h - 1)
    col = jnp.clip(jnp.floor(centre_x), 0, grid_w - 1)
    size = jnp.stack([(boxes[:, 2] - boxes[:, 0]) * grid_h, (boxes[:, 3] - boxes[:, 1]) * grid_w], axis=-1)
    sigma = jnp.maximum(size / 6.0, 0.5)
    dy = (jnp.arange(grid_h)[None, :] - row[:, None]) / sigma[:, 0:1]
    dx = (jnp.arange(grid_w)[None, :] - col[:, None]) / sigma[:, 1:2]
    heatmap = jnp.exp(-0.5 * (dy[:, :, None] ** 2 + dx[:, None, :] ** 2))
    return {
        "heatmap": heatmap,
        "index": (row * grid_w + col).astype(jnp.int32),
        "size": size,
        "offset": jnp.stack([centre_y - row, centre_x - col], axis=-1),
    }


def detection_loss(outputs: dict[str, jax.Array], boxes: jax.Array, *, focal_alpha: float = 2.0,
                   focal_beta: float = 4.0, size_weight: float = 0.1, offset_weight: float = 1.0
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """CenterNet loss L = L_k + λ_size L_size + λ_off L_off ("Objects as Points", eqs. 1-3).

    With one object per image, the focal loss's normaliser N (number of objects) is the
    batch size.
    """
    logits = outputs["heatmap_logits"][..., 0]
    batch, grid_h, grid_w = logits.shape
    targets = centre_targets(boxes, (grid_h, grid_w))
    log_p = jax.nn.log_sigmoid(logits)
    log_not_p = jax.nn.log_sigmoid(-logits)
    p = jnp.exp(log_p)
    positive = targets["index"][:, None] == jnp.arange(grid_h * grid_w)[None, :]
    positive = positive.reshape(batch, grid_h, grid_w)
    positive_term = (1.0 - p) ** focal_alpha * log_p
    negative_term = (1.0 - targets["heatmap"]) ** focal_beta * p ** focal_alpha * log_not_p
    focal = -jnp.sum(jnp.where(positive, positive_term, negative_term)) / batch

    take = lambda m: m.reshape(batch, grid_h * grid_w, -1)[jnp.arange(batch), targets["index"]]
    size_l1 = jnp.mean(jnp.sum(jnp.abs(take(outputs["size"]) - targets["size"]), axis=-1))
    offset_l1 = jnp.mean(jnp.sum(jnp.abs(take(outputs["offset"]) - targets["offset"]), axis=-1))
    loss = focal + size_weight * size_l1 + offset_weight * offset_l1
    return loss, {"loss": loss, "focal": focal, "size_l1": size_l1, "offset_l1": offset_l1}


def make_detector(config) -> FaceDetector:
    """The detector at the config's preset widths."""
    crop_cfg = config.crop
    return FaceDetector(
        width=crop_cfg.width,                      # channels of the first stage
        blocks=tuple(crop_cfg.blocks),              # residual blocks per stage
        head_width=crop_cfg.head_width,             # hidden channels of each head
    )


def detect(detector: FaceDetector, variables: dict[str, Any], frames: jax.Array
           ) -> tuple[jax.Array, jax.Array]:
    """Frames ``[B, S, S, 3]`` -> (boxes ``[B, 4]``, face scores ``[B]``), inference mode."""
    return decode(detector.apply(variables, frames, train=False))


def detect_and_crop(detector: FaceDetector, variables: dict[str, Any], frames: jax.Array,
                    resolution: int, margin: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Detect the face and take the encoder's aligned crop, in one jit-able function.

    Returns ``(faces [B, resolution, resolution, 3], boxes [B, 4], scores [B])``; the
    caller decides what a score below ``config.crop.score_threshold`` means.
    """
    boxes, scores = detect(detector, variables, frames)
    return ops.aligned_crop(frames, boxes, resolution, margin), boxes, scores
