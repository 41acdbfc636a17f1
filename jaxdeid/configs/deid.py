"""The private step: latent-noise loop and L_F fine-tuning (components 4, 5, 8; SPEC §4.6)."""

import ml_collections

from ._train import train_defaults


def section(preset: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.max_iters = {"smoke": 8, "small": 32, "paper": 64}[preset]   # cap; hitting it is failure
    c.noise = "additive"          # additive: w + s*n; multiplicative: w * (1 + s*n)
    c.sigma_start = 0.05          # s_0
    c.sigma_growth = 1.25         # s_k = s_0 * growth**k
    c.chi = (1.0, 0.5, 0.3, 0.1)  # eq. (8): L_D, L_s, L_A, L_C weights
    c.train = train_defaults(preset, steps={"smoke": 4, "small": 1000, "paper": 20000},
                             lr=1e-4, batch_size={"smoke": 4, "small": 16, "paper": 16})
    return c
