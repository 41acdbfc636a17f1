"""Building blocks shared by the three generators and their discriminators.

Equalised learning rate (Karras et al. 2018, §4.1): every weight is stored as
N(0, 1) / lr_multiplier and multiplied at run time by
``lr_multiplier / sqrt(fan_in)``. Adam's updates are invariant to the scale of a
parameter, so every layer then learns at the same speed, and the mapping
network's ``lr_multiplier = 0.01`` slows it a hundredfold (StyleGAN, §2).

Resampling. NVIDIA's code resamples with the separable FIR filter [1, 3, 3, 1]
(`upfirdn2d`). Here:

* ``upsample_conv2d`` is StyleGAN2's up-sampling 3×3 convolution in NVIDIA's order: a
  stride-2 transposed convolution at the input resolution, then the [1, 3, 3, 1]
  filter with gain 4. It is computed in polyphase form (four small stride-1
  convolutions, interleaved), which does about the transposed convolution's
  multiply-adds (each phase over (H+1)×(W+1) instead of H×W): about a quarter of
  convolving at the output resolution.
  ``upsample_conv2d_reference`` is the same operator written directly (zero insertion
  by ``lhs_dilation``), the independent form the tests compare against.
* ``upsample_fir_2x`` is NVIDIA's ``upsample2d``: zero insertion, then the filter with
  gain 4 (StyleGAN2's skip images).
* ``upsample_2x`` is ``jax.image.resize(..., "bilinear")``: for an exact factor 2
  with half-pixel centres, bilinear interpolation *is* zero-insertion followed by
  the [1, 3, 3, 1] / 4 filter (gain 4), except that the border is renormalised
  instead of zero-padded. StyleGAN1 applies it before its 3×3 convolution, where its
  reference convolves and then filters; both are linear and shift-invariant, so for one
  layer the two orders differ only at the border.
* ``blur`` is the [1, 3, 3, 1] ⊗ [1, 3, 3, 1] / 64 filter itself (per channel), used by
  the discriminator exactly as NVIDIA does (blur with padding, then a stride-2
  convolution), and by StyleGAN2's up-sampling above.
* ``downsample_2x`` (blur + decimation) is ``jax.image.resize`` with
  ``antialias=True``: for a factor 1/2 its triangle kernel has the weights
  [1, 3, 3, 1] / 8 per axis, i.e. the same filter.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

NOISE_MODES = ("const", "random", "none")   # per-pixel noise inputs: fixed buffers, fresh draws, or off
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)   # keeps the second moment of activations after lrelu (He et al.)


def lrelu(x: Array) -> Array:
    """Leaky ReLU with the gain sqrt(2) used throughout StyleGAN, so activations keep unit scale."""
    return nn.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {"linear": lambda x: x, "lrelu": lrelu}


def normalize_2nd_moment(x: Array, axis: int = -1, eps: float = 1e-8) -> Array:
    """x / sqrt(mean(x²)) along `axis`: StyleGAN's z normalisation and PGGAN's pixel norm (eq. in §4.2)."""
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=axis, keepdims=True) + eps)


pixel_norm = normalize_2nd_moment


def upsample_2x(x: Array) -> Array:
    """NHWC bilinear ×2 (≡ zero-insertion + [1,3,3,1] filter, see module docstring)."""
    b, h, w, c = x.shape
    return jax.image.resize(x, (b, 2 * h, 2 * w, c), method="bilinear")


def upsample_nearest_2x(x: Array) -> Array:
    """NHWC nearest-neighbour ×2 (PGGAN's upscale2d)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def downsample_2x(x: Array) -> Array:
    """NHWC [1,3,3,1]-filtered ×1/2 (see module docstring)."""
    b, h, w, c = x.shape
    return jax.image.resize(x, (b, h // 2, w // 2, c), method="bilinear", antialias=True)


def avg_pool_2x(x: Array) -> Array:
    """NHWC 2×2 box average (PGGAN's downscale2d)."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


BLUR_TAPS = (0.125, 0.375, 0.375, 0.125)   # [1, 3, 3, 1] / 8 per axis


def _blur_padded(x: Array, pad: tuple[int, int]) -> Array:
    # lax.pad takes negative widths (cropping): the transpose below needs them.
    zero = jnp.zeros((), x.dtype)
    x = jax.lax.pad(x, zero, [(0, 0, 0), (pad[0], pad[1], 0), (pad[0], pad[1], 0), (0, 0, 0)])
    h, w = x.shape[1] - 3, x.shape[2] - 3
    x = sum(t * x[:, i:i + h] for i, t in enumerate(BLUR_TAPS))
    return sum(t * x[:, :, i:i + w] for i, t in enumerate(BLUR_TAPS))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def blur(x: Array, pad: tuple[int, int]) -> Array:
    """[1,3,3,1]⊗[1,3,3,1]/64 filter per channel, with explicit (before, after) zero padding on H and W.

    Written as two 4-tap weighted sums of shifted slices (the filter is separable and
    symmetric), not as a depthwise convolution: XLA fuses the sums into one elementwise
    kernel, where XLA:CPU's depthwise convolution took 9× longer (forward + backward,
    16×64×64×128). Its gradient is given, not derived: the blur is linear and its filter
    symmetric, so its transpose is the same blur with the complementary padding
    (3 - before, 3 - after; negative = crop). XLA's own transpose of the slices (pads
    summed inside one fusion) ran 3× slower on the CPU; that gradient is itself a blur,
    so every order of derivative (the R1 penalty differentiates D twice) stays fast.
    Same values as the depthwise convolution, and the same gradients of first and second
    order as the autodiff of the slices (tests/test_gan.py). Being a custom VJP, it has no
    forward-mode derivative (``jax.jvp``, ``jacfwd``); nothing here differentiates D, or
    StyleGAN2's G, forwards.
    """
    return _blur_padded(x, pad)


def _blur_vjp_forward(x: Array, pad: tuple[int, int]):
    return _blur_padded(x, pad), None


def _blur_vjp_backward(pad: tuple[int, int], _residual, cotangent: Array):
    return (blur(cotangent, (3 - pad[0], 3 - pad[1])),)


blur.defvjp(_blur_vjp_forward, _blur_vjp_backward)


def conv2d(x: Array, kernel: Array, stride: int = 1, padding="SAME") -> Array:
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(stride, stride), padding=padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _interleave_2x(even_even: Array, even_odd: Array, odd_even: Array, odd_odd: Array) -> Array:
    """Four NHWC [B, H, W, C] phases → [B, 2H, 2W, C], phase (a, b) at rows 2m+a, columns 2n+b."""
    b, h, w, c = even_even.shape
    y = jnp.stack([jnp.stack([even_even, even_odd], 3), jnp.stack([odd_even, odd_odd], 3)], 2)   # [B, H, 2, W, 2, C]
    return y.reshape(b, 2 * h, 2 * w, c)


def zero_insert_2x(x: Array) -> Array:
    """NHWC [B, H, W, C] → [B, 2H, 2W, C] with x at the even positions and zeros between (upfirdn2d's up=2)."""
    zero = jnp.zeros_like(x)
    return _interleave_2x(x, zero, zero, zero)


def upsample_fir_2x(x: Array) -> Array:
    """NHWC ×2 as NVIDIA's ``upsample2d``: zero insertion, then the [1,3,3,1] filter with gain 4."""
    return blur(zero_insert_2x(x), (2, 1)) * 4.0


def upsample_conv2d(x: Array, kernel: Array) -> Array:
    """×2 up-sampling 3×3 convolution: [B, H, W, Cin] → [B, 2H, 2W, Cout], in polyphase form.

    The operator is NVIDIA's ``conv2d_resample(up=2)``: a stride-2 transposed convolution
    (output 2H+1), then the [1,3,3,1] filter with gain 4 and padding 1 (output 2H). The
    kernel is applied as a correlation, like every other convolution here (NVIDIA's up
    layer applies it flipped: a reparametrisation, weights converted from there would be
    flipped). The transposed convolution's output row 2m takes kernel rows 0 and 2 over
    input rows m-1 and m, and row 2m+1 takes kernel row 1 over input row m; likewise for
    columns. So it is four stride-1 convolutions of the input with the 2×2, 2×1, 1×2 and
    1×1 sub-kernels, interleaved: about 9 multiply-adds per input pixel and channel pair
    (9·(H+1)·(W+1) in all), instead of 36 for a 3×3 convolution at the output resolution.
    Each phase comes out (H+1)×(W+1); the odd phases' last row/column is zero, which is the
    transposed convolution's zero beyond row 2H, so the filter then pads by (1, 0).
    Equal to ``upsample_conv2d_reference`` (tests/test_gan.py).
    """
    if kernel.shape[:2] != (3, 3):
        raise ValueError(f"upsample_conv2d takes a 3×3 kernel, got {kernel.shape[:2]}")
    # The input is padded here, once, and the convolutions are VALID: XLA:CPU computed the weight
    # gradient of a 2×2 or 1×1 kernel with its own (asymmetric) padding up to 50× slower.
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = _interleave_2x(conv2d(xp, kernel[::2, ::2], padding="VALID"),
                       conv2d(xp[:, :, 1:], kernel[::2, 1:2], padding="VALID"),
                       conv2d(xp[:, 1:], kernel[1:2, ::2], padding="VALID"),
                       xp[:, 1:, 1:] @ kernel[1, 1])                          # [B, 2H+2, 2W+2, Cout]
    return blur(y, (1, 0)) * 4.0


def upsample_conv2d_reference(x: Array, kernel: Array) -> Array:
    """The same operator written directly: zero insertion (``lhs_dilation``), full correlation, filter.

    Slow to differentiate on XLA:CPU; the reference the polyphase form is checked against.
    """
    if kernel.shape[:2] != (3, 3):      # the filter's padding (1, 1) below is the 3×3 case's
        raise ValueError(f"upsample_conv2d_reference takes a 3×3 kernel, got {kernel.shape[:2]}")
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))       # [B, 2H+1, 2W+1, C]
    return blur(y, (1, 1)) * 4.0


class EqualDense(nn.Module):
    """Fully connected layer with equalised learning rate (NVIDIA's FullyConnectedLayer)."""

    features: int                 # output width
    use_bias: bool = True         # add a learned bias
    bias_init: float = 0.0        # initial bias value (1.0 for style affines, so styles start at 1)
    lr_multiplier: float = 1.0    # learning-rate multiplier (0.01 in the mapping network)
    activation: str = "linear"    # linear | lrelu

    @nn.compact
    def __call__(self, x: Array) -> Array:
        fan_in = x.shape[-1]
        weight = self.param("weight", lambda k, s: jax.random.normal(k, s) / self.lr_multiplier,
                            (fan_in, self.features))
        x = x @ (weight * (self.lr_multiplier / math.sqrt(fan_in)))
        if self.use_bias:
            bias = self.param("bias", lambda k, s: jnp.full(s, self.bias_init / self.lr_multiplier, jnp.float32),
                              (self.features,))
            x = x + bias * self.lr_multiplier
        return ACTIVATIONS[self.activation](x)


class EqualConv(nn.Module):
    """2-D convolution with equalised learning rate (NVIDIA's Conv2dLayer, without clamping).

    ``down=True`` reproduces NVIDIA's downsampling convolution: [1,3,3,1] blur with
    padding, then a stride-2 convolution without padding.
    """

    features: int                 # output channels
    kernel_size: int = 3          # square kernel side
    use_bias: bool = True         # add a learned bias
    activation: str = "linear"    # linear | lrelu
    down: bool = False            # halve the resolution (blur + stride 2)
    gain: float = 1.0             # extra output gain (sqrt(0.5) on residual branches)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k, c_in = self.kernel_size, x.shape[-1]
        weight = self.param("weight", nn.initializers.normal(1.0), (k, k, c_in, self.features))
        weight = weight * (1.0 / math.sqrt(c_in * k * k))
        if self.down:
            # Same padding arithmetic as upfirdn2d: total pad = (filter taps - 2) + (k - 1).
            p = 2 + (k - 1)
            x = blur(x, ((p + 1) // 2, p // 2))
            x = conv2d(x, weight, stride=2, padding="VALID")
        else:
            x = conv2d(x, weight, padding="SAME")
        if self.use_bias:
            x = x + self.param("bias", nn.initializers.zeros, (self.features,))
        return ACTIVATIONS[self.activation](x) * self.gain


def minibatch_stddev(x: Array, group_size: int, num_channels: int = 1) -> Array:
    """Appends minibatch-standard-deviation feature maps (PGGAN §3; NVIDIA's MinibatchStdLayer).

    The batch is split into groups of ``group_size`` (or the whole batch when it is
    smaller); within each group the per-feature standard deviation is averaged over
    space and over each of ``num_channels`` channel slices, and broadcast back as
    extra channels. It lets D notice a generator that produces too little variety.
    """
    b, h, w, c = x.shape
    g = min(group_size, b)
    if b % g:
        raise ValueError(f"batch {b} is not divisible by the mbstd group size {g}")
    f = num_channels
    y = x.reshape(g, b // g, h, w, f, c // f)                 # [G, M, H, W, F, c]
    y = y - y.mean(axis=0)
    y = jnp.sqrt(jnp.mean(jnp.square(y), axis=0) + 1e-8)     # [M, H, W, F, c]
    y = y.mean(axis=(1, 2, 4))                                # [M, F]
    y = jnp.tile(y, (g, 1))                                   # [B, F]; sample i belongs to group i % M
    y = jnp.broadcast_to(y[:, None, None, :], (b, h, w, f))
    return jnp.concatenate([x, y], axis=-1)


def channels_at(res: int, channel_base: int, channel_max: int) -> int:
    """NVIDIA's per-resolution width rule: min(channel_base // res, channel_max)."""
    return min(channel_base // res, channel_max)
