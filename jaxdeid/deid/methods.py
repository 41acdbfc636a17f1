"""The four de-identification methods the evaluation compares (docs/method.md §4.5).

Ours is StyleGAN2 plus the light networks (enhance before, attenuate after the
generator); each baseline is the same crop → encode → noise-loop path on its own
generator, run on the low-light input with no light networks.
"""

from __future__ import annotations

from ..gan import ARCHS as GENERATOR_ARCHS

METHODS = ("ours", "pggan", "stylegan1", "stylegan2")

# The generator each method inverts and perturbs. The StyleGAN2 baseline is ours without the light networks.
GENERATOR_ARCH = {"ours": "stylegan2", "pggan": "pggan", "stylegan1": "stylegan1", "stylegan2": "stylegan2"}
assert set(GENERATOR_ARCH.values()) <= set(GENERATOR_ARCHS)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown de-identification method {method!r}; choose one of {METHODS}")
    return method


def uses_light_networks(method: str) -> bool:
    """Only our method enhances before and attenuates after the generator."""
    return check_method(method) == "ours"
