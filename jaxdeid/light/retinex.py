"""The Retinex cascade behind the light enhancement and attenuation networks (paper §3.2.2, Fig. 4).

Retinex theory models an image as ``I = R * L``: a reflectance R (the surface's own
colours, 3 channels) times an illumination L (slowly varying light, 1 channel).
The paper's network is a cascade in that spirit:

1. `Decomposition` splits the input image into R and L (plain 3x3 convolutions,
   in the manner of RetinexNet's Decom-Net);
2. `IlluminationAdjustment`, an encoder-decoder with skip connections (U-Net), reads
   ``concat(R, L)`` and predicts the adjusted illumination L'. It also predicts a
   reflectance correction, so that R' = R + correction (in logit space): LLNet's
   synthetic noise is part of the low-light input and, as RetinexNet and KinD
   observe, it ends up in R; letting the decoder correct R is what removes it;
3. recomposition: the output is ``R' * L'``.

The same `RetinexNet` module, trained separately, is both the enhancement network
(low -> normal light) and the attenuation network (normal -> low light). For
attenuation the amount of darkening is not a function of the input (LLNet's
gamma is random per image), so the attenuation network may be told the target's
mean luminance as a constant extra input channel to the adjustment network
(``level``; KinD feeds its illumination-adjustment net a brightness ratio the
same way). In the de-identification pipeline that level is the mean luminance
of the original low-light face, which is exactly what the private image should
keep (docs/method.md §1: "keeps the ... brightness and contrast of x").

Everything is a pure ``module.apply(variables, x)`` with static shapes, so it can
sit inside one jitted step; any H, W divisible by ``2 ** adjust_depth`` works.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

# Rec. 601 luma weights, used for "mean luminance" throughout the light networks.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def luminance(images: jax.Array) -> jax.Array:
    """Per-pixel luma of RGB images [..., H, W, 3] in [0, 1] -> [..., H, W]."""
    return images @ jnp.asarray(LUMA_WEIGHTS, dtype=images.dtype)


def mean_luminance(images: jax.Array) -> jax.Array:
    """Mean luma per image: [B, H, W, 3] -> [B]."""
    return jnp.mean(luminance(images), axis=(-2, -1))


class Decomposition(nn.Module):
    """Splits an image into reflectance logits (3 ch) and illumination logits (1 ch).

    Logits rather than values are returned so the adjustment stage can correct
    R additively without leaving (0, 1); `sigmoid` of them gives R and L.
    """

    channels: int     # width of every hidden 3x3 convolution
    num_layers: int   # number of hidden 3x3 convolutions (ReLU after each)

    @nn.compact
    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        # RetinexNet's trick: the channel maximum is a cheap first guess of the illumination.
        h = jnp.concatenate([images, jnp.max(images, axis=-1, keepdims=True)], axis=-1)
        for i in range(self.num_layers):
            h = nn.relu(nn.Conv(self.channels, (3, 3), name=f"conv{i}")(h))
        logits = nn.Conv(4, (3, 3), name="to_rl")(h)
        return logits[..., :3], logits[..., 3:]


class IlluminationAdjustment(nn.Module):
    """U-Net on concat(R, L[, level]) -> (illumination logits, reflectance-logit correction)."""

    channels: int        # width at full resolution; doubles at each down-sampling stage
    depth: int           # number of stride-2 down-sampling stages (and matching up-sampling stages)
    max_channels: int    # cap on the doubled width (keeps the bottleneck affordable)

    def _width(self, stage: int) -> int:
        return min(self.channels * 2 ** stage, self.max_channels)

    @nn.compact
    def __call__(self, features: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = nn.relu(nn.Conv(self._width(0), (3, 3), name="enc0")(features))
        skips = [h]
        for stage in range(1, self.depth + 1):
            h = nn.relu(nn.Conv(self._width(stage), (3, 3), strides=(2, 2), name=f"down{stage}")(h))
            h = nn.relu(nn.Conv(self._width(stage), (3, 3), name=f"enc{stage}")(h))
            skips.append(h)
        skips.pop()  # the bottleneck is `h` itself
        for stage in range(self.depth - 1, -1, -1):
            skip = skips.pop()
            # resize-then-convolve up-sampling (no transposed-conv checkerboards), as in RetinexNet
            h = jax.image.resize(h, (*skip.shape[:-1], h.shape[-1]), method="nearest")
            h = jnp.concatenate([h, skip], axis=-1)
            h = nn.relu(nn.Conv(self._width(stage), (3, 3), name=f"dec{stage}")(h))
        illumination_logits = nn.Conv(1, (3, 3), name="to_illumination")(h)
        # zero-initialised, so training starts from R' = R and learns only the correction it needs
        reflectance_correction = nn.Conv(3, (3, 3), kernel_init=nn.initializers.zeros, name="to_reflectance")(h)
        return illumination_logits, reflectance_correction


class RetinexNet(nn.Module):
    """Decompose -> adjust -> recompose. One class for both enhancement and attenuation.

    Call ``apply(variables, images)`` (or ``images, level`` when ``level_input``) to get
    the output image [B, H, W, 3] in [0, 1]; with ``with_components=True`` it returns a
    dict that also holds the reflectance/illumination before and after adjustment.
    """

    decom_channels: int              # hidden width of the decomposition network
    decom_layers: int                # hidden 3x3 convs in the decomposition network
    adjust_channels: int             # full-resolution width of the adjustment U-Net
    adjust_depth: int                # down-sampling stages of the U-Net; H, W must divide by 2**depth
    adjust_max_channels: int         # width cap of the U-Net
    restore_reflectance: bool = True  # let the U-Net correct R (denoising); False: R' = R
    level_input: bool = False        # take a target mean luminance per image as an extra input

    def setup(self):
        self.decomposition = Decomposition(channels=self.decom_channels, num_layers=self.decom_layers)
        self.adjustment = IlluminationAdjustment(channels=self.adjust_channels, depth=self.adjust_depth,
                                                 max_channels=self.adjust_max_channels)

    def __call__(self, images: jax.Array, level: Optional[jax.Array] = None, *, with_components: bool = False):
        divisor = 2 ** self.adjust_depth
        if images.shape[-3] % divisor or images.shape[-2] % divisor:
            raise ValueError(f"image size {images.shape[-3:-1]} must be divisible by 2**adjust_depth = {divisor}")
        if self.level_input and level is None:
            raise ValueError("this network was built with level_input=True: pass the target mean luminance")
        reflectance_logits, illumination_logits = self.decomposition(images)
        reflectance, illumination = nn.sigmoid(reflectance_logits), nn.sigmoid(illumination_logits)
        features = [reflectance, illumination]
        if self.level_input:
            level = jnp.asarray(level, images.dtype).reshape(-1, 1, 1, 1)
            features.append(jnp.broadcast_to(level, illumination.shape))
        adjusted_illumination_logits, correction = self.adjustment(jnp.concatenate(features, axis=-1))
        adjusted_illumination = nn.sigmoid(adjusted_illumination_logits)
        adjusted_reflectance = nn.sigmoid(reflectance_logits + correction) if self.restore_reflectance \
            else reflectance
        output = adjusted_reflectance * adjusted_illumination  # recomposition, I = R * L
        if not with_components:
            return output
        return {"output": output, "reflectance": reflectance, "illumination": illumination,
                "adjusted_reflectance": adjusted_reflectance, "adjusted_illumination": adjusted_illumination}


def make_model(config, direction: str) -> RetinexNet:
    """The enhancement (``direction="enhance"``) or attenuation (``"attenuate"``) network from ``config.light``."""
    if direction not in ("enhance", "attenuate"):
        raise ValueError(f"direction must be 'enhance' or 'attenuate', not {direction!r}")
    c = config.light
    return RetinexNet(
        decom_channels=c.decom_channels,
        decom_layers=c.decom_layers,
        adjust_channels=c.adjust_channels,
        adjust_depth=c.adjust_depth,
        adjust_max_channels=c.adjust_max_channels,
        restore_reflectance=c.restore_reflectance,
        level_input=(direction == "attenuate" and c.attenuate_level_input),
    )
