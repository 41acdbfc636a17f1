"""One config system for every network, table and benchmark.

`get_config(preset, overrides)` returns an `ml_collections.ConfigDict` built from
one section module per component (``configs/data.py``, ``configs/light.py``, ...).
Each section module exposes ``section(preset) -> ConfigDict``; the preset
(``smoke``, ``small`` or ``paper``, docs/method.md §5) scales widths, depths, resolution and
data size, and every field can be overridden from the command line with
``--set section.field=value`` (values are parsed as Python literals).

    >>> cfg = get_config("smoke", ["light.train.steps=10"])
"""

from __future__ import annotations

import ast
import importlib
from typing import Iterable

import ml_collections

PRESETS = ("smoke", "small", "paper")

# Sections in pipeline order; each is a module in this package.
SECTIONS = ("data", "lowlight", "light", "crop", "recognizer", "gan", "encoder", "deid", "bench")


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # bare strings such as `arch=vgg16`


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> ml_collections.ConfigDict:
    """Applies ``a.b.c=value`` overrides in place; unknown keys are an error, not a silent no-op."""
    for item in overrides or ():
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, text = item.split("=", 1)
        node = config
        *parents, leaf = key.strip().split(".")
        for name in parents:
            if name not in node:
                raise KeyError(f"unknown config section {name!r} in override {item!r}")
            node = node[name]
        if leaf not in node:
            raise KeyError(f"unknown config field {key!r}; known here: {sorted(node.keys())}")
        value = _parse_value(text.strip())
        old = node[leaf]
        if isinstance(old, float) and isinstance(value, int):
            value = float(value)
        if isinstance(old, tuple) and isinstance(value, list):
            value = tuple(value)
        node[leaf] = value
    return config


def get_config(preset: str = "smoke", overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
    """Builds the full config for `preset` and applies `overrides`."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")
    config = ml_collections.ConfigDict()
    config.preset = preset
    config.seed = 0
    config.workdir = f"runs/{preset}"      # checkpoints and logs, one sub-folder per network
    # Trained weights that ship with the package (jaxdeid/store): "shipped", a folder holding
    # <preset>/manifest.json, or "" to use only checkpoints under workdir. A checkpoint in the
    # workdir always wins over the store (jaxdeid.store.resolve).
    config.weights_store = "shipped"
    # Suffix of the store names this config's networks resolve to: "" for the preset's networks,
    # "seed1" for the independently trained fifth recognizer (jaxdeid.components). Kept apart
    # from `seed`, which also seeds the latent noise: a run with another seed still uses the
    # shipped networks.
    config.weights_tag = ""
    # How `jaxdeid weights export` stores a network (jaxdeid/store/fileformat.py). At the small
    # preset all fifteen networks take 61.5 MiB at 16 bits, over the 32 MiB store budget; int8
    # per-channel kernels (large ones only) bring them to about half (`jaxdeid weights list`).
    config.weights_codec = {"smoke": "float16", "small": "int8", "paper": "int8"}[preset]
    # Where reproduce/ writes tables and figures. Smoke runs (tests, CI, the README's quick
    # main job) get their own folder so they never overwrite the small/paper results.
    config.results_dir = "results/smoke" if preset == "smoke" else "results"
    for name in SECTIONS:
        module = importlib.import_module(f"{__name__}.{name}")
        config[name] = module.section(preset)
    return apply_overrides(config, overrides)
