"""Progressive GAN (Karras, Aila, Laine, Lehtinen, ICLR 2018), a baseline of the paper (docs/method.md §4.5).

Pixel-wise feature normalisation in G (§4.2), minibatch standard deviation in D
(§3), equalised learning rate (§4.1) and progressive growing with fade-in (§2).

Progressive growing is done the way NVIDIA's own TensorFlow code does it (the
"linear" network structure): every layer of every resolution always exists and
runs, and a scalar *level of detail* ``lod`` (0 = full resolution, n = log2(R) − 2
= only 4×4) decides how the per-resolution toRGB/fromRGB outputs are blended. At
fractional ``lod`` the newest resolution is faded in with weight α = 1 − frac(lod).
Because ``lod`` is an ordinary traced scalar, shapes never change and the whole
training step stays one jitted function. Real images are shown to D at the same
``lod`` (`images_at_lod`). ``train_final_resolution=True`` in the config pins
lod = 0, i.e. trains the final resolution directly (our default at small scale).

The latent is z itself: ``num_ws = 1`` and ``map`` only tiles (and optionally
truncates towards 0, the mean of z).

Stated deviation: training uses the same non-saturating logistic loss + R1 as the
StyleGAN baselines (so the three generators differ only in architecture), not
PGGAN's WGAN-GP.
"""

from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from .layers import (NOISE_MODES, EqualConv, EqualDense, avg_pool_2x, channels_at, downsample_2x, minibatch_stddev,
                     pixel_norm, upsample_nearest_2x)

Array = jax.Array


def max_lod(img_resolution: int) -> int:
    return int(math.log2(img_resolution)) - 2


def lod_schedule(images_seen, img_resolution: int, stable_images: int, fade_images: int):
    """PGGAN's level of detail after `images_seen` training images (jnp-compatible).

    Each resolution is first trained stably for `stable_images`, then the next one
    is faded in over `fade_images`; starts at lod = max_lod (4×4), ends at 0.
    """
    n = max_lod(img_resolution)
    phase_len = stable_images + fade_images
    phase = jnp.floor(images_seen / phase_len)
    into_phase = images_seen - phase * phase_len
    lod = n - phase - jnp.clip((into_phase - stable_images) / max(fade_images, 1), 0.0, 1.0)
    return jnp.maximum(lod, 0.0).astype(jnp.float32)


def _fade(level: int, n: int, lod):
    """Weight of resolution level `level` (0 = 4×4) at `lod`: 1 when fully grown, 0 before it fades in."""
    return jnp.clip(n - level + 1 - lod, 0.0, 1.0)


def images_at_lod(images: Array, lod) -> Array:
    """Real images as D sees them at `lod`: box-downscaled by 2^lod (blended between octaves), upscaled back."""
    n = max_lod(images.shape[1])
    levels, y = [images], images
    for k in range(1, n + 1):
        y = avg_pool_2x(y)
        up = y
        for _ in range(k):
            up = upsample_nearest_2x(up)
        levels.append(up)
    stacked = jnp.stack(levels)
    lod = jnp.clip(jnp.asarray(lod, jnp.float32), 0.0, float(n))
    k = jnp.floor(lod).astype(jnp.int32)
    t = lod - k
    return stacked[k] + (stacked[jnp.minimum(k + 1, n)] - stacked[k]) * t


class Generator(nn.Module):
    """PGGAN generator with the shared map/synthesize API (``jaxdeid/gan/__init__.py``)."""

    z_dim: int = 512               # latent z dimensionality (also latent_dim: no mapping network)
    channel_base: int = 32768      # overall multiplier for the number of channels
    channel_max: int = 512         # maximum number of channels in any layer
    img_resolution: int = 128      # output resolution

    @property
    def num_ws(self) -> int:
        return 1

    @property
    def latent_dim(self) -> int:
        return self.z_dim

    def setup(self):
        # Mean of z ~ N(0, I): the truncation centre and the encoders' starting point. Never updated.
        self.w_avg = self.variable("buffers", "w_avg", lambda: jnp.zeros((self.z_dim,), jnp.float32))
        n = max_lod(self.img_resolution)
        ch = lambda r: channels_at(r, self.channel_base, self.channel_max)
        self.dense = EqualDense(16 * ch(4), activation="lrelu")
        self.conv4 = EqualConv(ch(4), 3, activation="lrelu")
        self.convs = [(EqualConv(ch(4 * 2 ** i), 3, activation="lrelu"),
                       EqualConv(ch(4 * 2 ** i), 3, activation="lrelu")) for i in range(1, n + 1)]
        self.torgbs = [EqualConv(3, 1) for _ in range(n + 1)]

    def map(self, z: Array, truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None,
            update_w_avg: bool = False) -> Array:
        del truncation_cutoff, update_w_avg      # one latent; its mean is fixed at 0
        z = z.astype(jnp.float32)
        if truncation_psi != 1.0:
            z = self.w_avg.value + (z - self.w_avg.value) * truncation_psi
        return z[:, None, :]

    def synthesize_raw(self, ws: Array, noise_mode: str = "const", lod=0.0) -> Array:
        if noise_mode not in NOISE_MODES:        # accepted for a uniform API; PGGAN has no noise inputs
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        n = max_lod(self.img_resolution)
        c4 = channels_at(4, self.channel_base, self.channel_max)
        x = pixel_norm(ws[:, 0])                 # PGGAN normalises the latent first (§4.2)
        x = pixel_norm(self.dense(x).reshape(-1, 4, 4, c4))
        x = pixel_norm(self.conv4(x))
        img = self.torgbs[0](x)
        for level in range(1, n + 1):
            x = upsample_nearest_2x(x)
            x = pixel_norm(self.convs[level - 1][0](x))
            x = pixel_norm(self.convs[level - 1][1](x))
            img = upsample_nearest_2x(img)
            img = img + (self.torgbs[level](x) - img) * _fade(level, n, lod)
        return img

    def synthesize(self, ws: Array, noise_mode: str = "const", clip: bool = False, lod=0.0) -> Array:
        img = (self.synthesize_raw(ws, noise_mode, lod) + 1.0) * 0.5
        return jnp.clip(img, 0.0, 1.0) if clip else img

    def __call__(self, z: Array, truncation_psi: float = 1.0, noise_mode: str = "const") -> Array:
        return self.synthesize(self.map(z, truncation_psi), noise_mode)


class ProgressiveDiscriminator(nn.Module):
    """PGGAN discriminator (also StyleGAN v1's, with `blur_downsample`). Images [B,R,R,3] in [0,1] → logits [B]."""

    img_resolution: int = 128      # input resolution
    channel_base: int = 32768      # overall multiplier for the number of channels
    channel_max: int = 512         # maximum number of channels in any layer
    mbstd_group: int = 4           # minibatch-stddev group size
    blur_downsample: bool = False  # StyleGAN: [1,3,3,1] blur + stride-2 conv; PGGAN: conv + 2×2 average pool
    progressive: bool = True       # build a fromRGB per resolution for lod blending (PGGAN)

    @nn.compact
    def __call__(self, images: Array, lod=0.0) -> Array:
        n = max_lod(self.img_resolution)
        ch = lambda r: channels_at(r, self.channel_base, self.channel_max)
        img = images * 2.0 - 1.0
        x = EqualConv(ch(self.img_resolution), 1, activation="lrelu", name=f"fromrgb{n}")(img)
        for level in range(n, 0, -1):
            res = 4 * 2 ** level
            x = EqualConv(ch(res), 3, activation="lrelu", name=f"b{res}_conv0")(x)
            if self.blur_downsample:
                x = EqualConv(ch(res // 2), 3, activation="lrelu", down=True, name=f"b{res}_conv1")(x)
            else:
                x = avg_pool_2x(EqualConv(ch(res // 2), 3, activation="lrelu", name=f"b{res}_conv1")(x))
            if self.progressive:
                img = avg_pool_2x(img) if not self.blur_downsample else downsample_2x(img)
                skip = EqualConv(ch(res // 2), 1, activation="lrelu", name=f"fromrgb{level - 1}")(img)
                x = skip + (x - skip) * _fade(level, n, lod)
        x = minibatch_stddev(x, self.mbstd_group)
        x = EqualConv(ch(4), 3, activation="lrelu", name="b4_conv")(x)
        x = EqualDense(ch(4), activation="lrelu", name="b4_fc")(x.reshape(x.shape[0], -1))
        return EqualDense(1, name="b4_out")(x)[:, 0]
