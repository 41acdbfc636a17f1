"""ResNet50 and SE-ResNet50 (He et al. 2016; Hu et al. 2018) as Flax modules.

`ResNet` is the backbone: stem -> four stages of bottleneck blocks -> global
average pool, returning features [B, C] (C = 2048 at width 1). The recognizers
put an embedding head on top (`jaxdeid.recognizers.model`); the latent-code
encoder (docs/method.md §1 component 3) imports the same backbone with ``se=True``.

Architecture choices, stated so a reviewer can check them:
  * Bottleneck v1.5 (torchvision): the stride sits on the 3x3 convolution, not
    the first 1x1. Parameter count is identical to v1.
  * Projection shortcut (1x1 conv + BN) whenever the shape changes.
  * SE-ResNet50: a squeeze-excitation (reduction 16, sigmoid gate) on the
    residual branch of every bottleneck, before the addition, as in SENet.
  * Resolution scaling: ``small_input=True`` (used below 96 px) keeps the 7x7
    stem convolution but with stride 1 and no max-pool, so a 32-64 px face is
    not reduced to 1-2 px before stage 2. Depths, kernels and widths stay
    canonical, so the parameter count is unchanged.
  * Canonical size at width 1: 23,508,032 parameters (torchvision resnet50
    without its 2048x1000 fc); 26,039,024 with SE (Cadene's se_resnet50,
    28,088,024, without its fc).

The backbone does not standardise its input; callers pass images already
standardised (see `layers.standardize`).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from .layers import SqueezeExcite, batch_norm, scaled


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (strided) -> 1x1 expand (x4), with optional SE, + shortcut."""

    features: int                 # width of the 3x3 convolution; the block outputs 4x this
    strides: int = 1              # spatial stride of the 3x3 convolution (v1.5)
    se: bool = False              # squeeze-excitation on the residual branch (SE-ResNet)
    se_reduction: int = 16        # SE bottleneck ratio
    dtype: Any = jnp.float32      # computation dtype

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out_channels = self.features * 4
        conv = lambda f, k, s, name: nn.Conv(f, (k, k), (s, s), padding=[(k // 2, k // 2)] * 2,
                                             use_bias=False, dtype=self.dtype, name=name)
        y = nn.relu(batch_norm(train, "bn1")(conv(self.features, 1, 1, "conv1")(x)))
        y = nn.relu(batch_norm(train, "bn2")(conv(self.features, 3, self.strides, "conv2")(y)))
        # Zero-initialised last BN scale: each block starts as the identity (Goyal et al. 2017),
        # which makes from-scratch training of the deep stack stable.
        y = batch_norm(train, "bn3", scale_init=nn.initializers.zeros)(conv(out_channels, 1, 1, "conv3")(y))
        if self.se:
            y = SqueezeExcite(max(1, out_channels // self.se_reduction), name="se")(y)
        if x.shape[-1] != out_channels or self.strides != 1:
            x = batch_norm(train, "shortcut_bn")(conv(out_channels, 1, self.strides, "shortcut_conv")(x))
        return nn.relu(x + y)


class ResNet(nn.Module):
    """ResNet / SE-ResNet backbone returning globally pooled features [B, C].

    ``ResNet()`` is ResNet50; ``ResNet(se=True)`` is SE-ResNet50.
    """

    stage_sizes: Sequence[int] = (3, 4, 6, 3)   # bottlenecks per stage (ResNet50)
    width_mult: float = 1.0                     # scales every channel count (presets, docs/method.md §5)
    se: bool = False                            # squeeze-excitation in every bottleneck
    se_reduction: int = 16                      # SE bottleneck ratio
    small_input: bool = False                   # stride-1 stem, no max-pool (for 32-64 px faces)
    dtype: Any = jnp.float32                    # computation dtype

    @property
    def out_channels(self) -> int:
        return scaled(512, self.width_mult) * 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        stem_stride = 1 if self.small_input else 2
        x = nn.Conv(scaled(64, self.width_mult), (7, 7), (stem_stride, stem_stride), padding=[(3, 3), (3, 3)],
                    use_bias=False, dtype=self.dtype, name="stem_conv")(x)
        x = nn.relu(batch_norm(train, "stem_bn")(x))
        if not self.small_input:
            x = nn.max_pool(x, (3, 3), (2, 2), padding=[(1, 1), (1, 1)])
        for stage, blocks in enumerate(self.stage_sizes):
            features = scaled(64 * 2 ** stage, self.width_mult)
            for block in range(blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                x = Bottleneck(features, strides, se=self.se, se_reduction=self.se_reduction, dtype=self.dtype,
                               name=f"stage{stage + 1}_block{block + 1}")(x, train)
        return jnp.mean(x, axis=(1, 2))
