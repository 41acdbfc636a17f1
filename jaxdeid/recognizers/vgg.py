"""VGG16 (Simonyan & Zisserman 2015, configuration D) as a Flax module.

13 3x3 convolutions in five blocks of [64, 128, 256, 512, 512] channels
(2, 2, 3, 3, 3 convolutions), each block ending in a 2x2 max-pool, then the
fully connected stack fc6 (4096) and fc7 (4096). The 1000-way fc8 is replaced by
the recognizer's embedding head (`model.py`), so it is not part of this backbone.

Choices, stated so a reviewer can check them:
  * Adaptive average pooling to 7x7 before fc6 (as torchvision does), so fc6
    always has its canonical 512*7*7 inputs whatever the resolution (at 32 px
    the last pool gives 1x1, which is replicated; at 224 px it is the identity).
    This keeps the parameter count resolution-independent: 134,260,544 at
    width 1 (torchvision vgg16's 138,357,544 minus fc8's 4,097,000).
  * ``batch_norm=True`` adds BatchNorm after each convolution (torchvision
    "vgg16_bn"; +8,448 parameters, 0.006 %). Plain VGG16 has no normalisation and
    trains poorly from scratch with a triplet loss, so the recognizer config
    enables it by default; ``recognizer.vgg_batch_norm=False`` gives the 1-to-1 net.
  * Dropout after fc6 and fc7 (rate configurable; canonical 0.5).
  * ``pool_size`` (default 7) may be set to the last feature map's side where that is
    smaller (the small preset: 2 at 64 px). Replicating a 2x2 map to 7x7 adds inputs to
    fc6 but no information, so the smaller fc6 computes the same function class.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .layers import batch_norm, scaled

# (channels, convolutions) per block of configuration D.
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def adaptive_avg_pool(x: jax.Array, size: int) -> jax.Array:
    """PyTorch's AdaptiveAvgPool2d(size) on NHWC: bin i averages rows floor(iH/s) .. ceil((i+1)H/s)."""
    def matrix(n: int) -> np.ndarray:
        m = np.zeros((size, n), np.float32)
        for i in range(size):
            start, end = (i * n) // size, -((-(i + 1) * n) // size)
            m[i, start:end] = 1.0 / (end - start)
        return m
    h, w = x.shape[1:3]
    if (h, w) == (size, size):
        return x
    return jnp.einsum("ih,jw,bhwc->bijc", jnp.asarray(matrix(h), x.dtype), jnp.asarray(matrix(w), x.dtype), x)


class VGG16(nn.Module):
    """VGG16 backbone up to fc7; returns features [B, 4096 * width_mult]."""

    width_mult: float = 1.0                       # scales every conv and fc width (presets, docs/method.md §5)
    blocks: Sequence[tuple[int, int]] = VGG16_BLOCKS  # (channels, convs) per block; config D
    fc_features: int = 4096                       # width of fc6 and fc7 at width 1
    pool_size: int = 7                            # adaptive average pool before fc6 (torchvision)
    batch_norm: bool = True                       # BatchNorm after each conv ("vgg16_bn")
    dropout_rate: float = 0.5                     # dropout after fc6 and fc7 (training only)
    dtype: Any = jnp.float32                      # computation dtype

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for b, (channels, convs) in enumerate(self.blocks):
            for c in range(convs):
                name = f"conv{b + 1}_{c + 1}"
                x = nn.Conv(scaled(channels, self.width_mult), (3, 3), padding=[(1, 1), (1, 1)],
                            use_bias=True, dtype=self.dtype, name=name)(x)
                if self.batch_norm:
                    x = batch_norm(train, f"bn{b + 1}_{c + 1}")(x)
                x = nn.relu(x)
            if min(x.shape[1:3]) >= 2:  # a 1x1 map cannot be pooled further (32 px inputs)
                x = nn.max_pool(x, (2, 2), (2, 2))
        x = adaptive_avg_pool(x, self.pool_size).reshape(x.shape[0], -1)
        for name in ("fc6", "fc7"):
            x = nn.relu(nn.Dense(scaled(self.fc_features, self.width_mult), dtype=self.dtype, name=name)(x))
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return x
