"""The recognizer: standardise -> backbone -> linear embedding head -> L2 normalise.

``make_recognizer(config, arch)`` builds the Flax module for one of
``ARCHS = ("vgg16", "resnet50", "mobilenetv3", "senet50")``; ``make_embed``
returns the pure, jitted ``embed(variables, images) -> [B, embed_dim]`` that
every other component (Table 1, the similarity-judgment loss, Table 3) calls.
Images are float32 NHWC RGB in [0, 1]; the embeddings have unit L2 norm, so the
cosine similarity of two faces is their dot product (docs/method.md §4.1).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from .layers import standardize
from .mobilenetv3 import MobileNetV3Large
from .resnet import ResNet
from .vgg import VGG16

# One row per architecture: its backbone at the preset's width (rc: config.recognizer; small_input:
# faces below rc.small_input_below px get unstrided stems). ARCHS is this table's keys.
_BACKBONES: dict[str, Callable[[Any, bool], nn.Module]] = {
    "vgg16": lambda rc, small_input: VGG16(width_mult=rc.width_mult, batch_norm=rc.vgg_batch_norm,
                                           dropout_rate=rc.vgg_dropout, pool_size=rc.vgg_pool_size),
    "resnet50": lambda rc, small_input: ResNet(stage_sizes=(3, 4, 6, 3), width_mult=rc.width_mult, se=False,
                                               small_input=small_input),
    "mobilenetv3": lambda rc, small_input: MobileNetV3Large(width_mult=rc.width_mult, small_input=small_input),
    "senet50": lambda rc, small_input: ResNet(stage_sizes=(3, 4, 6, 3), width_mult=rc.width_mult, se=True,
                                              small_input=small_input),
}
ARCHS = tuple(_BACKBONES)

# Display names used in tables (the paper's Table 1 spelling).
DISPLAY_NAMES = {"vgg16": "VGG16", "resnet50": "ResNet50", "mobilenetv3": "MobileNetV3", "senet50": "SENet50"}


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x / max(||x||, eps) along the last axis (PyTorch's F.normalize)."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
    return x / jnp.maximum(norm, eps)


class Recognizer(nn.Module):
    """A face recognizer: backbone features -> embedding (the "head") -> unit sphere."""

    backbone: nn.Module           # VGG16 / ResNet / MobileNetV3Large, returning pooled features [B, C]
    embed_dim: int = 128          # embedding size (the head's output)

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        features = self.backbone(standardize(images), train=train)
        return l2_normalize(nn.Dense(self.embed_dim, name="head")(features).astype(jnp.float32))


def make_backbone(config, arch: str) -> nn.Module:
    """The backbone of `arch` at the preset's width; stems unstrided below ``small_input_below`` px."""
    if arch not in _BACKBONES:
        raise ValueError(f"unknown recognizer arch {arch!r}; choose one of {ARCHS}")
    return _BACKBONES[arch](config.recognizer, config.data.resolution < config.recognizer.small_input_below)


def make_recognizer(config, arch: str) -> Recognizer:
    """The Flax module of recognizer `arch` built from ``config.recognizer`` and ``config.data.resolution``."""
    return Recognizer(backbone=make_backbone(config, arch), embed_dim=config.recognizer.embed_dim)


def init_variables(module: Recognizer, key: jax.Array, resolution: int) -> dict[str, Any]:
    """{'params', 'batch_stats'} for `module` at `resolution` (VGG16 without BN has no batch_stats)."""
    # Jitted: one compilation is far cheaper than dispatching a deep network op by op.
    init = jax.jit(lambda k: module.init({"params": k, "dropout": k}, jnp.zeros((1, resolution, resolution, 3)),
                                         train=False))
    variables = init(key)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def make_embed(config, arch: str) -> Callable[[dict, jax.Array], jax.Array]:
    """Pure, jitted ``embed(variables, images) -> unit-norm embeddings [B, embed_dim]`` (inference mode)."""
    module = make_recognizer(config, arch)

    @jax.jit
    def embed(variables: dict, images: jax.Array) -> jax.Array:
        return module.apply(variables, images, train=False)

    return embed


def backbone_param_count(module: Recognizer, params: dict) -> int:
    """Parameters of the backbone only (the embedding head aside); BatchNorm running stats excluded."""
    del module
    return int(sum(x.size for x in jax.tree_util.tree_leaves({k: v for k, v in params.items() if k != "head"})))
