"""StyleGAN2 (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", CVPR 2020).

The face generation network of the paper (component 4). Configuration "F" of the
StyleGAN2 paper: mapping network, skip generator (toRGB outputs summed across
resolutions), residual discriminator, weight modulation/demodulation, noise inputs.

Knobs carry the names and meanings of NVIDIA's stylegan2-ada-pytorch ``Generator``
(``z_dim, w_dim, num_layers, channel_base, channel_max, img_resolution``) so a
throughput comparison can use an identical configuration.

Simplifications, all stated:
* Upsampling in G is NVIDIA's operator (transposed 3×3 convolution, then the
  [1,3,3,1] filter; zero insertion and the filter for the skip images), computed in
  polyphase form (see layers.py). The up layer's kernel is applied as a correlation,
  NVIDIA's as a convolution: the same function class, with the kernel flipped.
* No ``conv_clamp`` (only needed for mixed precision) and no fp16 layers.
* Modulation is implemented in the "non-fused" form (scale the input channels by
  the style, shared convolution, scale the output channels by the demodulation
  coefficient), which is algebraically identical to convolving with per-sample
  modulated+demodulated weights; `modulated_conv2d_reference` is that direct form,
  and the tests check the two agree.
"""

from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from .layers import (NOISE_MODES, EqualConv, EqualDense, channels_at, conv2d, lrelu, minibatch_stddev,
                     normalize_2nd_moment, upsample_conv2d, upsample_conv2d_reference, upsample_fir_2x)

Array = jax.Array


def num_ws_for(img_resolution: int) -> int:
    """Style vectors a skip generator consumes: two per resolution above 4×4, one conv + one toRGB at 4×4."""
    return 2 * int(math.log2(img_resolution)) - 2


def block_resolutions(img_resolution: int) -> list[int]:
    log2 = int(math.log2(img_resolution))
    if 2 ** log2 != img_resolution or img_resolution < 4:
        raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
    return [2 ** i for i in range(2, log2 + 1)]


# --------------------------------------------------------------------------- mapping network

class MappingNetwork(nn.Module):
    """z → w (StyleGAN §2): normalise z, then `num_layers` equal-lr FC layers with lrelu.

    Also tracks ``w_avg`` (collection ``buffers``), the moving average of mapped w
    used by the truncation trick and as the encoders' starting point.
    """

    z_dim: int                      # input latent z width
    w_dim: int                      # intermediate latent w width
    num_ws: int                     # how many copies of w the synthesis network consumes
    num_layers: int = 8             # FC layers
    lr_multiplier: float = 0.01     # learning-rate multiplier of the FC layers (StyleGAN §2)
    w_avg_beta: float = 0.995       # decay of the moving average of w

    @nn.compact
    def __call__(self, z: Array, truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None,
                 update_w_avg: bool = False) -> Array:
        w_avg = self.variable("buffers", "w_avg", lambda: jnp.zeros((self.w_dim,), jnp.float32))
        x = normalize_2nd_moment(z.astype(jnp.float32))
        for i in range(self.num_layers):
            x = EqualDense(self.w_dim, lr_multiplier=self.lr_multiplier, activation="lrelu", name=f"fc{i}")(x)
        if update_w_avg and not self.is_initializing():
            # Needs mutable=["buffers"]; averaged before truncation, as in the reference.
            batch_mean = jax.lax.stop_gradient(x.mean(axis=0))
            w_avg.value = batch_mean + (w_avg.value - batch_mean) * self.w_avg_beta
        ws = jnp.broadcast_to(x[:, None, :], (x.shape[0], self.num_ws, self.w_dim))
        if truncation_psi != 1.0:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            avg = w_avg.value[None, None, :]
            truncated = avg + (ws - avg) * truncation_psi
            ws = jnp.concatenate([truncated[:, :cutoff], ws[:, cutoff:]], axis=1)
        return ws


# --------------------------------------------------------------------------- modulated convolution

def modulated_conv2d(x: Array, weight: Array, styles: Array, demodulate: bool = True,
                     up: bool = False) -> Array:
    """StyleGAN2 weight (de)modulation (§2.2, eqs. 1–3), non-fused form.

    Args:
      x: [B, H, W, Cin] activations.
      weight: [k, k, Cin, Cout] shared convolution weight.
      styles: [B, Cin] per-sample scales s_i.
      demodulate: divide each output channel by sqrt(Σ_{i,k} (s_i w_ijk)² + 1e-8) (eq. 3).
      up: ×2 up-sampling convolution (``layers.upsample_conv2d``) instead of a plain one.
    """
    x = x * styles[:, None, None, :].astype(x.dtype)
    y = upsample_conv2d(x, weight) if up else conv2d(x, weight)
    if demodulate:
        # Σ_{k,i} (s_i w_ijk)² = Σ_i s_i² Σ_k w_ijk²
        dcoefs = jax.lax.rsqrt(jnp.square(styles) @ jnp.sum(jnp.square(weight), axis=(0, 1)) + 1e-8)
        y = y * dcoefs[:, None, None, :]
    return y


def modulated_conv2d_reference(x: Array, weight: Array, styles: Array, demodulate: bool = True,
                               up: bool = False) -> Array:
    """The direct form: build w'_ijk = s_i w_ijk (and demodulate) per sample, then convolve."""
    w = weight[None] * styles[:, None, None, :, None]                    # [B, k, k, Cin, Cout]
    if demodulate:
        w = w * jax.lax.rsqrt(jnp.sum(jnp.square(w), axis=(1, 2, 3), keepdims=True) + 1e-8)
    conv = upsample_conv2d_reference if up else conv2d
    return jax.vmap(lambda xi, wi: conv(xi[None], wi)[0])(x, w)


class SynthesisLayer(nn.Module):
    """Affine(w) → modulated 3×3 conv (demodulated) → + noise·strength → + bias → lrelu."""

    features: int                  # output channels
    resolution: int                # output resolution (sizes the constant noise buffer)
    up: bool = False               # ×2 up-sampling convolution

    @nn.compact
    def __call__(self, x: Array, w: Array, noise_mode: str = "random") -> Array:
        c_in = x.shape[-1]
        styles = EqualDense(c_in, bias_init=1.0, name="affine")(w)   # styles start near 1
        weight = self.param("weight", nn.initializers.normal(1.0), (3, 3, c_in, self.features))
        x = modulated_conv2d(x, weight, styles, demodulate=True, up=self.up)
        x = x + _noise(self, x.shape[0], self.resolution, noise_mode)
        x = x + self.param("bias", nn.initializers.zeros, (self.features,))
        return lrelu(x)


def _noise(module: nn.Module, batch: int, resolution: int, noise_mode: str) -> Array:
    """Per-pixel noise times a learned strength (init 0); "const" uses a fixed stored buffer."""
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
    strength = module.param("noise_strength", nn.initializers.zeros, ())
    const = module.variable("buffers", "noise_const",
                            lambda: jax.random.normal(module.make_rng("params"), (resolution, resolution, 1)))
    if noise_mode == "none":
        return jnp.zeros((), jnp.float32)
    if noise_mode == "const":
        return const.value[None] * strength
    return jax.random.normal(module.make_rng("noise"), (batch, resolution, resolution, 1)) * strength


class ToRGB(nn.Module):
    """Affine(w) → modulated 1×1 conv without demodulation → + bias (NVIDIA's ToRGBLayer)."""

    channels: int = 3              # image channels

    @nn.compact
    def __call__(self, x: Array, w: Array) -> Array:
        c_in = x.shape[-1]
        styles = EqualDense(c_in, bias_init=1.0, name="affine")(w) * (1.0 / math.sqrt(c_in))
        weight = self.param("weight", nn.initializers.normal(1.0), (1, 1, c_in, self.channels))
        y = modulated_conv2d(x, weight, styles, demodulate=False)
        return y + self.param("bias", nn.initializers.zeros, (self.channels,))


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: (const | up-conv) → conv → toRGB, image upsampled and summed."""

    features: int                  # channels at this resolution
    resolution: int                # output resolution of this block

    @property
    def num_conv(self) -> int:
        return 1 if self.resolution == 4 else 2

    @nn.compact
    def __call__(self, x: Optional[Array], img: Optional[Array], ws: Array, noise_mode: str):
        # ws: [B, num_conv + 1, w_dim]; the toRGB style is shared with the next block's first conv.
        if self.resolution == 4:
            const = self.param("const", nn.initializers.normal(1.0), (4, 4, self.features))
            x = jnp.broadcast_to(const[None], (ws.shape[0], 4, 4, self.features))
            x = SynthesisLayer(self.features, 4, name="conv1")(x, ws[:, 0], noise_mode)
        else:
            x = SynthesisLayer(self.features, self.resolution, up=True, name="conv0")(x, ws[:, 0], noise_mode)
            x = SynthesisLayer(self.features, self.resolution, name="conv1")(x, ws[:, 1], noise_mode)
        y = ToRGB(name="torgb")(x, ws[:, self.num_conv])
        img = y if img is None else upsample_fir_2x(img) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """W+ latents [B, num_ws, w_dim] → images [B, R, R, 3] in the internal range [-1, 1]."""

    w_dim: int                     # latent width
    img_resolution: int            # output side R
    channel_base: int = 32768      # overall width multiplier
    channel_max: int = 512         # width cap

    @nn.compact
    def __call__(self, ws: Array, noise_mode: str = "random") -> Array:
        x = img = None
        w_idx = 0
        for res in block_resolutions(self.img_resolution):
            block = SynthesisBlock(channels_at(res, self.channel_base, self.channel_max), res, name=f"b{res}")
            x, img = block(x, img, ws[:, w_idx:w_idx + block.num_conv + 1], noise_mode)
            w_idx += block.num_conv
        return img


class Generator(nn.Module):
    """StyleGAN2 generator. See ``jaxdeid/gan/__init__.py`` for the shared map/synthesize API."""

    z_dim: int = 512               # input latent (Z) dimensionality
    w_dim: int = 512               # intermediate latent (W) dimensionality
    num_layers: int = 8            # mapping network depth
    channel_base: int = 32768      # overall multiplier for the number of channels
    channel_max: int = 512         # maximum number of channels in any layer
    img_resolution: int = 128      # output resolution
    mapping_lr_multiplier: float = 0.01   # learning-rate multiplier of the mapping network
    w_avg_beta: float = 0.995      # decay of the tracked average w

    @property
    def num_ws(self) -> int:
        return num_ws_for(self.img_resolution)

    @property
    def latent_dim(self) -> int:
        return self.w_dim

    def setup(self):
        self.mapping = MappingNetwork(self.z_dim, self.w_dim, self.num_ws, self.num_layers,
                                      self.mapping_lr_multiplier, self.w_avg_beta)
        self.synthesis = SynthesisNetwork(self.w_dim, self.img_resolution, self.channel_base, self.channel_max)

    def map(self, z: Array, truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None,
            update_w_avg: bool = False) -> Array:
        return self.mapping(z, truncation_psi, truncation_cutoff, update_w_avg)

    def synthesize_raw(self, ws: Array, noise_mode: str = "const") -> Array:
        """Images in the internal range [-1, 1] (what D sees during training)."""
        return self.synthesis(ws, noise_mode)

    def synthesize(self, ws: Array, noise_mode: str = "const", clip: bool = False) -> Array:
        img = (self.synthesize_raw(ws, noise_mode) + 1.0) * 0.5
        return jnp.clip(img, 0.0, 1.0) if clip else img

    def __call__(self, z: Array, truncation_psi: float = 1.0, noise_mode: str = "const") -> Array:
        return self.synthesize(self.map(z, truncation_psi), noise_mode)


# --------------------------------------------------------------------------- discriminator

class DiscriminatorBlock(nn.Module):
    """Residual block: (fromRGB) → conv3×3 → down-conv3×3, plus a 1×1 down skip, summed with gain √½."""

    tmp_features: int              # channels inside the block
    out_features: int              # channels after it (at half the resolution)
    from_rgb: bool = False         # first block: project the image to features

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if self.from_rgb:
            x = EqualConv(self.tmp_features, 1, activation="lrelu", name="fromrgb")(x)
        skip = EqualConv(self.out_features, 1, use_bias=False, down=True, gain=math.sqrt(0.5), name="skip")(x)
        x = EqualConv(self.tmp_features, 3, activation="lrelu", name="conv0")(x)
        x = EqualConv(self.out_features, 3, activation="lrelu", down=True, gain=math.sqrt(0.5), name="conv1")(x)
        return skip + x


class DiscriminatorEpilogue(nn.Module):
    """4×4 head: minibatch stddev → conv3×3 → FC → FC to one logit."""

    features: int                  # channels at 4×4
    mbstd_group: int = 4           # minibatch-stddev group size
    mbstd_channels: int = 1        # minibatch-stddev feature maps

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = minibatch_stddev(x, self.mbstd_group, self.mbstd_channels)
        x = EqualConv(self.features, 3, activation="lrelu", name="conv")(x)
        x = EqualDense(self.features, activation="lrelu", name="fc")(x.reshape(x.shape[0], -1))
        return EqualDense(1, name="out")(x)[:, 0]


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator. Input: images [B, R, R, 3] in [0, 1]; output: logits [B]."""

    img_resolution: int = 128      # input resolution
    channel_base: int = 32768      # overall multiplier for the number of channels
    channel_max: int = 512         # maximum number of channels in any layer
    mbstd_group: int = 4           # minibatch-stddev group size

    @nn.compact
    def __call__(self, images: Array) -> Array:
        x = images * 2.0 - 1.0
        ch = lambda r: channels_at(r, self.channel_base, self.channel_max)
        for res in reversed(block_resolutions(self.img_resolution)[1:]):
            x = DiscriminatorBlock(ch(res), ch(res // 2), from_rgb=(res == self.img_resolution), name=f"b{res}")(x)
        return DiscriminatorEpilogue(ch(4), self.mbstd_group, name="b4")(x)
