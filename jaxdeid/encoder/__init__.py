"""Latent code generation network (paper §3.3, docs/method.md §1 component 3): SE-ResNet50 + six FC layers.

    from jaxdeid.encoder.train import load_trained
    encoder, variables = load_trained(config, "stylegan2")    # after `jaxdeid train encoder --arch stylegan2`
    latents = encoder.apply(variables, faces)                  # [B, num_ws, latent_dim], ready for G.synthesize

One encoder per generator arch (task ``encoder_<arch>``); see ``train.py`` for the loss (eq. 5).
"""

from .encoder import LatentEncoder, MappingHead, make_encoder, with_w_avg

__all__ = ["LatentEncoder", "MappingHead", "make_encoder", "with_w_avg"]
