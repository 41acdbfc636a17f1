"""StyleGAN2 at the configurations of NVIDIA's stylegan2-ada-pytorch, for side-by-side timing.

The reference implementation's ``Generator`` / ``Discriminator`` take the same knobs as
``jaxdeid.gan.stylegan2`` (``img_resolution``, ``channel_base``, ``channel_max``, ``z_dim``,
``w_dim``, mapping ``num_layers``), so both can be built at one configuration and have the
same parameter counts (checked by `reference_stylegan2_ada.py`, which times both).

Two measurements per configuration (issue 19):

* synthesis from given w (noise buffers fixed), at batch 1, 16 and 64;
* the discriminator's forward + backward of a softplus loss at batch 16, gradients
  for the parameters and the images (what a GAN step and the R1 penalty pay).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdeid.gan.stylegan2 import Discriminator, Generator
from jaxdeid.reproduce.generators import count_params

# (img_resolution, channel_base); channel_max 512, z = w = 512, 8 mapping layers throughout.
CONFIGS = ((32, 8192), (64, 8192), (64, 16384), (128, 16384))
SYNTHESIS_BATCHES = (1, 16, 64)
D_BATCH = 16
CHANNEL_MAX = 512
LATENT = 512
MAPPING_LAYERS = 8
# Every (what, batch) timed per configuration, in order.
MEASUREMENTS = tuple(("synthesis", b) for b in SYNTHESIS_BATCHES) + (("d_step", D_BATCH),)


def config_name(res: int, base: int) -> str:
    return f"{res}/{base}"


def synthesis(res: int, base: int, batch: int, seed: int = 0):
    """(fn, args, G parameter count): ``fn(*args)`` synthesises `batch` images from fixed w."""
    generator = Generator(z_dim=LATENT, w_dim=LATENT, num_layers=MAPPING_LAYERS, channel_base=base,
                          channel_max=CHANNEL_MAX, img_resolution=res)
    key = jax.random.PRNGKey(seed)
    variables = generator.init({"params": key}, jnp.zeros((1, LATENT)))
    ws = jax.random.normal(jax.random.fold_in(key, 1), (batch, generator.num_ws, LATENT))

    def fn(variables, ws):
        return generator.apply(variables, ws, "const", method=Generator.synthesize_raw)

    return fn, (variables, ws), count_params(variables["params"])


def discriminator_step(res: int, base: int, batch: int = D_BATCH, seed: int = 0):
    """(fn, args, D parameter count): ``fn(*args)`` is the gradient of Σ softplus(D(x)) for D's parameters and x."""
    discriminator = Discriminator(img_resolution=res, channel_base=base, channel_max=CHANNEL_MAX)
    key = jax.random.PRNGKey(seed)
    images = jax.random.uniform(jax.random.fold_in(key, 1), (batch, res, res, 3))
    variables = discriminator.init(key, images)

    def loss(variables, images):
        return jax.nn.softplus(discriminator.apply(variables, images)).sum()

    return jax.grad(loss, argnums=(0, 1)), (variables, images), count_params(variables["params"])
