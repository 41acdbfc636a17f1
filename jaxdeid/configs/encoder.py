"""Latent code generation network: SE-ResNet50 + six FC mapping layers (component 3)."""

import ml_collections

from ._train import train_defaults


def section(preset: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.width_mult = {"smoke": 0.125, "small": 0.25, "paper": 1.0}[preset]
    c.mapping_layers = 6          # paper §3.3: "six full connection layers"
    c.w_plus = True               # predict one w per synthesis layer (W+)
    c.ssim_weight = 0.0           # optional extra terms beside eq. (5)
    c.identity_weight = 0.0
    c.train = train_defaults(preset, steps={"smoke": 4, "small": 3000, "paper": 100000},
                             lr=1e-4, batch_size={"smoke": 8, "small": 32, "paper": 32})
    return c
