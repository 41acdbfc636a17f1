"""StyleGAN (Karras, Laine, Aila, "A Style-Based Generator Architecture for GANs", CVPR 2019).

A baseline of the paper (docs/method.md §4.5). The style-based generator:
mapping network (shared with StyleGAN2, `num_layers` FC layers, lr multiplier 0.01),
a learned constant 4×4 input, and per layer: conv → + per-channel-scaled noise →
+ bias → lrelu → instance norm → AdaIN style modulation (y_s·x + y_b, with
y_s = 1 + affine). Style-mixing regularisation happens in the training step
(`jaxdeid.gan.train.mix_styles`), because it mixes two mapped latents.

Simplifications, all stated: the final resolution is trained directly (no
progressive growing, which StyleGAN2 showed unnecessary), so there is one toRGB;
upsampling is bilinear before the conv (≡ the reference's conv + [1,3,3,1] blur up
to the border, see layers.py). The discriminator is the progressive-GAN one with
minibatch stddev and blurred downsampling, as in the StyleGAN reference.
"""

from __future__ import annotations


import flax.linen as nn
import jax
import jax.numpy as jnp

from .layers import EqualConv, EqualDense, channels_at, lrelu, upsample_2x
from .pggan import ProgressiveDiscriminator
from .stylegan2 import NOISE_MODES, Generator as StyleGAN2Generator, MappingNetwork, block_resolutions

Array = jax.Array


def instance_norm(x: Array, eps: float = 1e-8) -> Array:
    x = x - x.mean(axis=(1, 2), keepdims=True)
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=(1, 2), keepdims=True) + eps)


class LayerEpilogue(nn.Module):
    """Noise → bias → lrelu → instance norm → AdaIN (StyleGAN §2, Fig. 1b)."""

    features: int                  # channels
    resolution: int                # spatial size (for the constant noise buffer)

    @nn.compact
    def __call__(self, x: Array, w: Array, noise_mode: str) -> Array:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        strength = self.param("noise_strength", nn.initializers.zeros, (self.features,))   # per channel ("B")
        const = self.variable("buffers", "noise_const",
                              lambda: jax.random.normal(self.make_rng("params"), (self.resolution, self.resolution, 1)))
        if noise_mode == "const":
            x = x + const.value[None] * strength
        elif noise_mode == "random":
            x = x + jax.random.normal(self.make_rng("noise"), x.shape[:3] + (1,)) * strength
        x = lrelu(x + self.param("bias", nn.initializers.zeros, (self.features,)))
        x = instance_norm(x)
        style = EqualDense(2 * self.features, name="style")(w)          # "A" in Fig. 1b
        scale, shift = style[:, None, None, :self.features], style[:, None, None, self.features:]
        return x * (scale + 1.0) + shift


class SynthesisNetwork1(nn.Module):
    """W+ latents → images in [-1, 1]; two AdaIN layers per resolution, const input at 4×4."""

    img_resolution: int            # output side R
    channel_base: int = 32768      # overall width multiplier
    channel_max: int = 512         # width cap

    @nn.compact
    def __call__(self, ws: Array, noise_mode: str = "random") -> Array:
        ch = lambda r: channels_at(r, self.channel_base, self.channel_max)
        x = None
        for i, res in enumerate(block_resolutions(self.img_resolution)):
            if res == 4:
                const = self.param("const", nn.initializers.ones, (4, 4, ch(4)))
                x = jnp.broadcast_to(const[None], (ws.shape[0], 4, 4, ch(4)))
            else:
                x = EqualConv(ch(res), 3, name=f"b{res}_conv0")(upsample_2x(x))
            x = LayerEpilogue(ch(res), res, name=f"b{res}_epi0")(x, ws[:, 2 * i], noise_mode)
            x = EqualConv(ch(res), 3, name=f"b{res}_conv1")(x)
            x = LayerEpilogue(ch(res), res, name=f"b{res}_epi1")(x, ws[:, 2 * i + 1], noise_mode)
        return EqualConv(3, 1, name="torgb")(x)


class Generator(StyleGAN2Generator):
    """StyleGAN (v1) generator: StyleGAN2's fields, mapping network and map/synthesize API
    (``jaxdeid/gan/__init__.py``) around the v1 synthesis network (AdaIN, noise, two styles
    per resolution)."""

    def setup(self):
        self.mapping = MappingNetwork(self.z_dim, self.w_dim, self.num_ws, self.num_layers,
                                      self.mapping_lr_multiplier, self.w_avg_beta)
        self.synthesis = SynthesisNetwork1(self.img_resolution, self.channel_base, self.channel_max)


def Discriminator(img_resolution: int, channel_base: int, channel_max: int, mbstd_group: int = 4):
    """StyleGAN (v1) discriminator: the progressive-GAN one with blurred downsampling, at full resolution."""
    return ProgressiveDiscriminator(img_resolution=img_resolution, channel_base=channel_base,
                                    channel_max=channel_max, mbstd_group=mbstd_group, blur_downsample=True)
