"""Building blocks shared by the recognizer backbones.

Conventions (torchvision-compatible so parameter counts can be compared):
convolutions followed by BatchNorm have no bias; BatchNorm uses momentum 0.9 /
epsilon 1e-5 (PyTorch's 0.1 / 1e-5); BatchNorm scale and bias are parameters,
running statistics live in the ``batch_stats`` collection and are not counted.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

# ImageNet statistics: every backbone sees standardised RGB, as the canonical
# architectures were designed for (the inputs of the project are in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def standardize(images: jax.Array) -> jax.Array:
    """[0, 1] RGB (NHWC) -> zero-mean, unit-variance RGB with the ImageNet statistics."""
    mean = jnp.asarray(IMAGENET_MEAN, images.dtype)
    std = jnp.asarray(IMAGENET_STD, images.dtype)
    return (images - mean) / std


def scaled(channels: int, width_mult: float, divisor: int = 1, minimum: int = 4) -> int:
    """Channel count of a canonical layer at width `width_mult`.

    Rounded to a multiple of `divisor` without dropping below 90 % of the target
    (the MobileNet "make_divisible" rule; divisor 1 is plain rounding).
    """
    target = channels * width_mult
    value = max(minimum, int(target + divisor / 2) // divisor * divisor)
    if value < 0.9 * target:
        value += divisor
    return value


def hard_sigmoid(x: jax.Array) -> jax.Array:
    """ReLU6(x + 3) / 6, the MobileNetV3 gate."""
    return jnp.clip(x + 3.0, 0.0, 6.0) / 6.0


def hard_swish(x: jax.Array) -> jax.Array:
    """x * hard_sigmoid(x) (MobileNetV3 "h-swish")."""
    return x * hard_sigmoid(x)


def batch_norm(train: bool, name: str | None = None, scale_init=nn.initializers.ones) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, scale_init=scale_init,
                        name=name)


class SqueezeExcite(nn.Module):
    """Channel attention (Hu et al. 2018): global pool -> bottleneck FC -> gate -> rescale.

    The two FC layers have biases (torchvision / Cadene's SENet use 1x1 convs with bias).
    """

    reduced_channels: int                                        # width of the squeeze layer
    gate: Callable[[jax.Array], jax.Array] = nn.sigmoid          # sigmoid (SENet) or hard-sigmoid (MobileNetV3)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = nn.relu(nn.Dense(self.reduced_channels, name="squeeze")(s))
        s = self.gate(nn.Dense(channels, name="excite")(s))
        return x * s
