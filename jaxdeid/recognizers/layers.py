"""Building blocks shared by the recognizer backbones.

Conventions (torchvision-compatible so parameter counts can be compared):
convolutions followed by BatchNorm have no bias; BatchNorm uses momentum 0.9 /
epsilon 1e-5 (PyTorch's 0.1 / 1e-5); BatchNorm scale and bias are parameters,
running statistics live in the ``batch_stats`` collection and are not counted.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

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


def _strided_windows(padded: jax.Array, k: int, stride: int, out_h: int, out_w: int):
    """(i, j, window): for each tap of a k×k kernel, the input pixels it meets, [B, out_h, out_w, C]."""
    b, _, _, c = padded.shape
    for i in range(k):
        for j in range(k):
            yield i, j, jax.lax.slice(padded, (0, i, j, 0),
                                      (b, i + stride * (out_h - 1) + 1, j + stride * (out_w - 1) + 1, c),
                                      (1, stride, stride, 1))


def _depthwise_valid(padded: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    k = kernel.shape[0]
    out_h, out_w = (padded.shape[1] - k) // stride + 1, (padded.shape[2] - k) // stride + 1
    total = None
    for i, j, window in _strided_windows(padded, k, stride, out_h, out_w):
        term = window * kernel[i, j, 0]
        total = term if total is None else total + term
    return total


def _pad_hw(x: jax.Array, pad: int) -> jax.Array:
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
    """Per-channel k×k convolution (cross-correlation), zero padding k // 2, stride `stride`.

    ``x`` [B, H, W, C], ``kernel`` [k, k, 1, C] (the layout of a grouped ``nn.Conv`` with one
    input channel per group). Written as the k² weighted, strided slices of the padded input:
    XLA fuses their sum into one elementwise kernel, where XLA:CPU runs the grouped
    convolution one channel group at a time (forward 5-60× slower at MobileNetV3's shapes).
    Its gradient is given, not derived (XLA's transpose of strided slices is a sum of
    pads): for the input, the same sum of slices over the zero-inserted output gradient with
    the flipped kernel; for the kernel, one reduction per tap. Same values and gradients as
    ``lax.conv_general_dilated(..., feature_group_count=C)`` (tests/test_recognizers.py).
    Being a custom VJP, it has no forward-mode derivative (nothing here uses one).
    """
    return _depthwise_valid(_pad_hw(x, kernel.shape[0] // 2), kernel, stride)


def _depthwise_vjp_forward(x, kernel, stride):
    return depthwise_conv2d(x, kernel, stride), (x, kernel)


def _depthwise_vjp_backward(stride, residuals, cotangent):
    x, kernel = residuals
    k = kernel.shape[0]
    pad = k // 2
    zero = jnp.zeros((), cotangent.dtype)
    # Output gradient spread back onto the stride grid and padded by k - 1: a "full" correlation
    # with the flipped kernel gives the gradient of the padded input.
    spread = jax.lax.pad(cotangent, zero, [(0, 0, 0), (k - 1, k - 1, stride - 1), (k - 1, k - 1, stride - 1),
                                           (0, 0, 0)])
    grad_padded = _depthwise_valid(spread, kernel[::-1, ::-1], 1)
    h, w = x.shape[1], x.shape[2]
    # Crop the padding; rows the strided windows never reached get zeros (negative pad = crop).
    grad_x = jax.lax.pad(grad_padded, zero, [(0, 0, 0), (-pad, h + pad - grad_padded.shape[1], 0),
                                             (-pad, w + pad - grad_padded.shape[2], 0), (0, 0, 0)])
    windows = _strided_windows(_pad_hw(x, pad), k, stride, cotangent.shape[1], cotangent.shape[2])
    grad_kernel = jnp.stack([jnp.sum(window * cotangent, axis=(0, 1, 2)) for _, _, window in windows])
    return grad_x.astype(x.dtype), grad_kernel.reshape(kernel.shape).astype(kernel.dtype)


depthwise_conv2d.defvjp(_depthwise_vjp_forward, _depthwise_vjp_backward)


class DepthwiseConv(nn.Module):
    """A depthwise convolution layer with ``nn.Conv``'s parameter (``kernel`` [k, k, 1, C],
    LeCun-normal) and dtype handling, so parameters and checkpoints are those of
    ``nn.Conv(C, (k, k), feature_group_count=C, use_bias=False)``.

    On the CPU it is ``depthwise_conv2d``; elsewhere XLA's grouped convolution, which the
    GPUs' convolution libraries run with their own depthwise kernels (the slice form was
    measured on the CPU only)."""

    kernel_size: int                  # k
    strides: int = 1                  # spatial stride
    dtype: Any = jnp.float32          # computation dtype
    param_dtype: Any = jnp.float32    # parameter dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, 1, x.shape[-1]), self.param_dtype)
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        if jax.default_backend() == "cpu":
            return depthwise_conv2d(x, kernel, self.strides)
        return jax.lax.conv_general_dilated(x, kernel, (self.strides, self.strides), [(k // 2, k // 2)] * 2,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            feature_group_count=x.shape[-1])
