"""Light enhancement / attenuation networks: Retinex cascade (components 1 and 6).

Train:      jaxdeid train enhance --preset small     (then: jaxdeid train attenuate --preset small)
Reproduce:  python -m jaxdeid.reproduce.light --preset small  (from the shipped weights: ~3 min; retraining both: ~40 min on 2 CPU cores)
"""

import ml_collections

from ._train import train_defaults


def section(preset: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.decom_channels = {"smoke": 8, "small": 16, "paper": 64}[preset]    # decomposition conv width
    c.decom_layers = {"smoke": 2, "small": 2, "paper": 5}[preset]        # 3x3 conv layers in decomposition
    c.adjust_channels = {"smoke": 8, "small": 16, "paper": 64}[preset]   # illumination-adjustment U-Net base width
    c.adjust_max_channels = {"smoke": 32, "small": 32, "paper": 256}[preset]  # U-Net width cap (bottleneck)
    c.adjust_depth = 3                     # down/up-sampling stages; image side must divide by 2**depth
    c.restore_reflectance = True           # U-Net also corrects R (removes LLNet noise); False: R' = R
    c.attenuate_level_input = True         # attenuation is told the target mean luminance (LLNet gamma is random)
    c.chi_mse = 1.0   # eq. (4), weight of L_J = MSE (eq. 2)
    c.chi_ssim = 0.5  # eq. (4), weight of L_s = (1 - SSIM) / 2 (eq. 3)
    c.eval_images = {"smoke": 8, "small": 64, "paper": 256}[preset]      # val images scored by the in-loop eval
    c.test_images = {"smoke": 16, "small": 0, "paper": 0}[preset]        # test images for reproduce/ (0: whole split)
    # smoke: 300 steps (not 20) so the enhanced frames show a face the smoke detector can find
    # and the attenuated faces keep a valid brightness (smoke Fig. 6 exercises the success path).
    c.train = train_defaults(preset, steps={"smoke": 300, "small": 3000, "paper": 50000},
                             lr={"smoke": 3e-3, "small": 2e-3, "paper": 1e-3}[preset],
                             batch_size={"smoke": 4, "small": 16, "paper": 32})
    return c
