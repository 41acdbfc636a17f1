"""Light enhancement / attenuation networks: Retinex cascade (components 1 and 6)."""

import ml_collections

from ._train import train_defaults


def section(preset: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.decom_channels = {"smoke": 16, "small": 32, "paper": 64}[preset]   # decomposition conv width
    c.decom_layers = {"smoke": 3, "small": 5, "paper": 5}[preset]        # 3x3 conv layers in decomposition
    c.adjust_channels = {"smoke": 16, "small": 32, "paper": 64}[preset]  # illumination-adjustment U-Net base width
    c.adjust_depth = 3                                                   # down/up-sampling stages
    c.chi_mse = 1.0   # eq. (4)
    c.chi_ssim = 0.5  # eq. (4)
    c.train = train_defaults(preset, steps={"smoke": 20, "small": 3000, "paper": 50000},
                             lr=1e-3, batch_size={"smoke": 8, "small": 32, "paper": 32})
    return c
