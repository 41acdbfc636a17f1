"""The latent code generation network (paper §3.3, docs/method.md §1 component 3).

"The classical network model Senet50 is selected as the model of latent code generation
network ... connecting the mapping network at the end of Senet50 network to transform
the enhanced face images into latent space code ... The mapping network consists of six
full connection layers." (paper §3.3)

So: SE-ResNet50 (the recognizers' backbone, `jaxdeid.recognizers.resnet.ResNet` with
``se=True``) -> globally pooled features -> six fully connected layers -> a latent in
the generator's W+ space, ``[num_ws, latent_dim]`` (or one w broadcast to every layer
when ``w_plus`` is off). The network predicts the *offset* from the generator's average
latent ``w_avg``, so an untrained encoder already maps every face to the generator's
mean face, and training only has to learn the departures from it (the usual choice of
StyleGAN encoders such as pSp and e4e). ``w_avg`` is stored in the encoder's own
variables (collection ``latent_avg``, copied from the generator when training starts),
so ``encoder.apply(variables, faces)`` returns ready-to-synthesize latents.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..gan import make_generator
from ..recognizers.layers import standardize
from ..recognizers.resnet import ResNet


class MappingHead(nn.Module):
    """The paper's mapping network: ``num_layers`` fully connected layers, LeakyReLU(0.2) between them."""

    out_features: int          # num_ws * latent_dim (W+) or latent_dim (W)
    hidden_features: int       # width of the hidden FC layers
    num_layers: int = 6        # paper §3.3: "six full connection layers"
    final_init_scale: float = 0.1  # the last layer starts small: the first latents sit next to w_avg

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        x = features
        for i in range(self.num_layers - 1):
            x = nn.leaky_relu(nn.Dense(self.hidden_features, name=f"fc{i}")(x), 0.2)
        last_init = nn.initializers.variance_scaling(self.final_init_scale ** 2, "fan_in", "truncated_normal")
        return nn.Dense(self.out_features, kernel_init=last_init, name=f"fc{self.num_layers - 1}")(x)


class LatentEncoder(nn.Module):
    """SE-ResNet50 + six-FC mapping network: faces ``[B, R, R, 3]`` in [0, 1] -> generator latents.

    ``__call__(images, train)`` returns latents ``[B, num_ws, latent_dim]`` = ``w_avg`` +
    predicted offset. Variables: ``params``, ``batch_stats`` (the backbone's BatchNorm) and
    ``latent_avg`` (``{"w_avg": [num_ws, latent_dim]}``, not trained).
    """

    num_ws: int                    # latents the generator's synthesis network consumes
    latent_dim: int                # width of one latent (w_dim, or z_dim for PGGAN)
    width_mult: float = 1.0        # SE-ResNet50 channel multiplier (1.0 = canonical, 2048 features)
    mapping_layers: int = 6        # FC layers after the backbone (paper §3.3)
    mapping_features: int = 0      # hidden FC width (0: latent_dim)
    w_plus: bool = True            # one latent per synthesis layer (W+) or one shared w (W)
    small_input: bool = False      # stride-1 stem, no max-pool (faces below ~96 px)

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        backbone = ResNet(stage_sizes=(3, 4, 6, 3), width_mult=self.width_mult, se=True,
                          small_input=self.small_input, name="backbone")
        features = backbone(standardize(images), train=train)
        out = self.num_ws * self.latent_dim if self.w_plus else self.latent_dim
        offsets = MappingHead(out_features=out, hidden_features=self.mapping_features or self.latent_dim,
                              num_layers=self.mapping_layers, name="mapping")(features)
        if self.w_plus:
            offsets = offsets.reshape(images.shape[0], self.num_ws, self.latent_dim)
        else:
            offsets = jnp.broadcast_to(offsets[:, None, :], (images.shape[0], self.num_ws, self.latent_dim))
        w_avg = self.variable("latent_avg", "w_avg", jnp.zeros, (self.num_ws, self.latent_dim), jnp.float32)
        return w_avg.value + offsets


def with_w_avg(variables: dict[str, Any], w_avg: jax.Array) -> dict[str, Any]:
    """Encoder variables whose starting latent is the generator's ``w_avg`` (``[latent_dim]`` or ``[num_ws, latent_dim]``)."""
    current = variables["latent_avg"]["w_avg"]
    return {**variables, "latent_avg": {"w_avg": jnp.broadcast_to(jnp.asarray(w_avg, current.dtype), current.shape)}}


def make_encoder(config, generator) -> LatentEncoder:
    """The encoder for generator module `generator` (it fixes ``num_ws`` and ``latent_dim``).

    ``make_encoder(config, arch)`` with an arch name builds the generator from ``config.gan`` first.
    """
    if isinstance(generator, str):
        generator = make_generator(config.gan, generator)
    ec = config.encoder
    return LatentEncoder(
        num_ws=generator.num_ws,                                   # latents per image the generator consumes
        latent_dim=generator.latent_dim,                           # width of one latent
        width_mult=ec.width_mult,                                  # SE-ResNet50 width at this preset
        mapping_layers=ec.mapping_layers,                          # six FC layers (paper §3.3)
        mapping_features=ec.mapping_features,                      # hidden FC width (0: latent_dim)
        w_plus=ec.w_plus,                                          # W+ or W
        small_input=config.data.resolution < ec.small_input_below,  # keep small faces from vanishing in the stem
    )
