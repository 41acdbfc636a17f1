"""MobileNetV3-Large (Howard et al. 2019) as a Flax module.

Stem (3x3 stride-2 conv, 16 ch, h-swish) -> the 15 inverted-residual blocks of
the paper's Table 1 -> 1x1 conv to 960 ch (h-swish) -> global pool -> the 1280
linear stage (h-swish). The 1000-way classifier is replaced by the recognizer's
embedding head, so it is not part of this backbone.

Each block: optional 1x1 expansion -> depthwise kxk (stride) -> optional
squeeze-excitation (hard-sigmoid gate, squeeze width = expanded/4 rounded to a
multiple of 8) -> 1x1 linear projection, with a residual when the shape is kept.

Canonical size at width 1: 4,202,032 parameters (torchvision
mobilenet_v3_large's 5,483,032 minus its final Linear(1280, 1000), 1,281,000).

Resolution scaling: ``small_input=True`` (below 96 px) makes the stem stride 1
so a 32-64 px face keeps enough spatial extent; block table unchanged.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from .layers import DepthwiseConv, SqueezeExcite, batch_norm, hard_sigmoid, hard_swish, scaled

# (kernel, expanded channels, out channels, squeeze-excite, activation, stride): paper Table 1.
MOBILENETV3_LARGE = (
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hswish", 2),
    (3, 200, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1),
    (3, 480, 112, True, "hswish", 1),
    (3, 672, 112, True, "hswish", 1),
    (5, 672, 160, True, "hswish", 2),
    (5, 960, 160, True, "hswish", 1),
    (5, 960, 160, True, "hswish", 1),
)

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {"relu": nn.relu, "hswish": hard_swish}


class InvertedResidual(nn.Module):
    """MobileNetV3 bneck: expand (1x1) -> depthwise (kxk) -> SE -> project (1x1, linear)."""

    kernel: int                   # depthwise kernel size
    expanded: int                 # channels after expansion
    out_channels: int             # channels after projection
    use_se: bool                  # squeeze-excitation after the depthwise conv
    activation: str               # "relu" or "hswish"
    strides: int                  # depthwise stride
    dtype: Any = jnp.float32      # computation dtype

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        y = x
        if self.expanded != x.shape[-1]:
            y = nn.Conv(self.expanded, (1, 1), use_bias=False, dtype=self.dtype, name="expand_conv")(y)
            y = act(batch_norm(train, "expand_bn")(y))
        y = DepthwiseConv(self.kernel, self.strides, dtype=self.dtype, name="depthwise_conv")(y)
        y = act(batch_norm(train, "depthwise_bn")(y))
        if self.use_se:
            y = SqueezeExcite(scaled(self.expanded // 4, 1.0, divisor=8, minimum=8), gate=hard_sigmoid, name="se")(y)
        y = nn.Conv(self.out_channels, (1, 1), use_bias=False, dtype=self.dtype, name="project_conv")(y)
        y = batch_norm(train, "project_bn")(y)
        if self.strides == 1 and x.shape[-1] == self.out_channels:
            y = x + y
        return y


class MobileNetV3Large(nn.Module):
    """MobileNetV3-Large backbone; returns the 1280-wide (x width) features [B, C]."""

    width_mult: float = 1.0          # scales every channel count (multiples of 8, as in the paper)
    small_input: bool = False        # stride-1 stem for 32-64 px faces
    last_conv: int = 960             # 1x1 conv width before pooling
    last_linear: int = 1280          # width of the final linear stage
    dtype: Any = jnp.float32         # computation dtype

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        ch = lambda c: scaled(c, self.width_mult, divisor=8, minimum=8)
        stride = 1 if self.small_input else 2
        x = nn.Conv(ch(16), (3, 3), (stride, stride), padding=[(1, 1), (1, 1)], use_bias=False,
                    dtype=self.dtype, name="stem_conv")(x)
        x = hard_swish(batch_norm(train, "stem_bn")(x))
        for i, (k, exp, out, se, act, s) in enumerate(MOBILENETV3_LARGE):
            x = InvertedResidual(k, ch(exp), ch(out), se, act, s, dtype=self.dtype, name=f"block{i + 1}")(x, train)
        x = nn.Conv(ch(self.last_conv), (1, 1), use_bias=False, dtype=self.dtype, name="last_conv")(x)
        x = hard_swish(batch_norm(train, "last_bn")(x))
        x = jnp.mean(x, axis=(1, 2))
        return hard_swish(nn.Dense(ch(self.last_linear), dtype=self.dtype, name="last_linear")(x))
