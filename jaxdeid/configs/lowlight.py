"""LLNet-style low-light synthesis (Lore et al. 2017; docs/method.md §2)."""

import ml_collections


def section(preset: str) -> ml_collections.ConfigDict:
    del preset  # the synthesis does not scale with the preset
    c = ml_collections.ConfigDict()
    c.gamma_min = 2.0          # y = x ** gamma, gamma ~ U(gamma_min, gamma_max)
    c.gamma_max = 5.0
    c.sigma_max = 25.0 / 255.0  # noise sigma = sqrt(B) * sigma_max, B ~ U(0, 1)
    return c
