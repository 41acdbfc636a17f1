"""Latent code generation network: SE-ResNet50 + six FC mapping layers (component 3).

Train (one encoder per generator, after `jaxdeid train gan --arch A`):
``jaxdeid train encoder --arch stylegan2|stylegan1|pggan --preset small``.
"""

import ml_collections

from ._train import train_defaults


def section(preset: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.width_mult = {"smoke": 0.125, "small": 0.25, "paper": 1.0}[preset]   # SE-ResNet50 channel multiplier
    c.mapping_layers = 6          # paper §3.3: "six full connection layers"
    c.mapping_features = 0        # hidden width of the FC layers (0: the generator's latent width)
    c.w_plus = True               # predict one w per synthesis layer (W+)
    c.small_input_below = 96      # faces smaller than this use a stride-1 stem without max-pool
    c.ssim_weight = 0.0           # optional extra terms beside eq. (5): weight of ½(1 - SSIM)
    c.identity_weight = 0.0       # ... and of 1 - cos(R(x), R(G(E(x)))) with a trained recognizer R
    c.identity_arch = "senet50"   # recognizer used by the identity term
    c.eval_images = {"smoke": 4, "small": 64, "paper": 256}[preset]  # val faces for the in-training SSIM/PSNR
    c.train = train_defaults(preset, steps={"smoke": 4, "small": 3000, "paper": 100000},
                             lr=1e-4, batch_size={"smoke": 8, "small": 32, "paper": 32})
    return c
