"""Face generation networks (component 4): StyleGAN2 (ours), StyleGAN1 and PGGAN baselines.

Shared API — the latent encoders and the private (de-identification) step call
exactly this, for every arch in ``ARCHS``:

    G = make_generator(config.gan, arch)          # flax.linen module
    D = make_discriminator(config.gan, arch)
    variables = jaxdeid.gan.train.load_trained(config, arch)   # EMA generator: {"params", "buffers"}

    G.num_ws        # style vectors per image (2·log2(R) − 2 for StyleGANs; 1 for PGGAN)
    G.latent_dim    # width of one latent: w_dim (StyleGANs) or z_dim (PGGAN)

    ws = G.apply(variables, z, method="map", truncation_psi=1.0)
        # z [B, z_dim] → latents [B, num_ws, latent_dim]; W broadcast to W+ (PGGAN: z tiled);
        # truncation_psi < 1 pulls towards w_avg.
    images = G.apply(variables, ws, method="synthesize", noise_mode="const")
        # latents [B, num_ws, latent_dim] → images [B, R, R, 3], (x + 1) / 2 of the internal
        # [-1, 1] output: nominally in [0, 1] but NOT clipped (so gradients flow); pass
        # clip=True for display. noise_mode: "const" (fixed noise buffers stored in the
        # variables → deterministic), "random" (needs rngs={"noise": key}) or "none".
    w_avg = variables["buffers"]["mapping"]["w_avg"]   # PGGAN: variables["buffers"]["w_avg"] (zeros)
        # or, arch-independent: `average_latent(G, variables)` → [num_ws, latent_dim],
        # the encoders' starting point.
    logits = D.apply(d_variables, images)          # images in [0, 1] → logits [B]

The variables hold trainable ``params`` and non-trainable ``buffers`` (the tracked
w_avg and the constant noise maps). PGGAN's ``synthesize`` and D also take
``lod`` (progressive growing; 0 = full resolution, the default).

Losses are in ``losses.py`` (StyleGAN2's, and the paper's eq. (6) as printed);
training in ``train.py`` (`jaxdeid train gan --arch ...`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from . import pggan, stylegan1, stylegan2

def _style_generator(module):
    def build(gan_cfg) -> nn.Module:
        return module.Generator(z_dim=gan_cfg.z_dim, w_dim=gan_cfg.w_dim, num_layers=gan_cfg.num_layers,
                                channel_base=gan_cfg.channel_base, channel_max=gan_cfg.channel_max,
                                img_resolution=gan_cfg.img_resolution,
                                mapping_lr_multiplier=gan_cfg.mapping_lr_multiplier)
    return build


def _pggan_generator(gan_cfg) -> nn.Module:
    return pggan.Generator(z_dim=gan_cfg.z_dim, channel_base=gan_cfg.channel_base,
                           channel_max=gan_cfg.channel_max, img_resolution=gan_cfg.img_resolution)


# One row per architecture: (generator builder, discriminator class). ARCHS is this table's keys.
_BUILDERS = {"stylegan2": (_style_generator(stylegan2), stylegan2.Discriminator),
             "stylegan1": (_style_generator(stylegan1), stylegan1.Discriminator),
             "pggan": (_pggan_generator, pggan.ProgressiveDiscriminator)}
ARCHS = tuple(_BUILDERS)


def _builders(arch: str):
    if arch not in _BUILDERS:
        raise ValueError(f"unknown GAN arch {arch!r}; choose one of {ARCHS}")
    return _BUILDERS[arch]


def make_generator(gan_cfg, arch: str | None = None) -> nn.Module:
    """The generator for `arch` (default ``gan_cfg.arch``) built from the ``gan`` config section."""
    return _builders(arch or gan_cfg.arch)[0](gan_cfg)


def make_discriminator(gan_cfg, arch: str | None = None) -> nn.Module:
    """The discriminator for `arch` (images in [0, 1] → logits)."""
    return _builders(arch or gan_cfg.arch)[1](img_resolution=gan_cfg.img_resolution,
                                              channel_base=gan_cfg.channel_base,
                                              channel_max=gan_cfg.channel_max, mbstd_group=gan_cfg.mbstd_group)


def synthesis_options(arch: str, lod: float) -> dict:
    """Extra keyword arguments of ``G.synthesize`` for `arch`: PGGAN's level of detail (its
    progressive fade-in), none for the StyleGANs."""
    return {"lod": lod} if _builders(arch) is _BUILDERS["pggan"] else {}


def init_generator(G: nn.Module, key: jax.Array) -> dict:
    """Variables {"params", "buffers"} of G (the noise buffers are drawn from `key` too)."""
    z = jnp.zeros((1, G.z_dim), jnp.float32)
    return dict(G.init({"params": key, "noise": key}, z))


def average_latent(G: nn.Module, variables) -> jax.Array:
    """w_avg broadcast to [num_ws, latent_dim]: the encoders' starting point and the truncation centre."""
    buffers = variables["buffers"]
    w_avg = buffers["w_avg"] if "w_avg" in buffers else buffers["mapping"]["w_avg"]
    return jnp.broadcast_to(w_avg, (G.num_ws, G.latent_dim))


__all__ = ["ARCHS", "make_generator", "make_discriminator", "init_generator", "average_latent", "synthesis_options"]
