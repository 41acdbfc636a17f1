"""Face recognizers VGG16, ResNet50, MobileNetV3-Large, SENet50 (component 7)."""

import ml_collections

from ._train import train_defaults


def section(preset: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.archs = ("vgg16", "resnet50", "mobilenetv3", "senet50")
    c.judges = ("vgg16", "resnet50", "mobilenetv3", "senet50")  # white-box recognizers inside the loop
    c.width_mult = {"smoke": 0.125, "small": 0.25, "paper": 1.0}[preset]  # scales every backbone's channels
    c.embed_dim = {"smoke": 32, "small": 128, "paper": 512}[preset]
    c.threshold = 0.3          # cosine similarity >= threshold => same person (SPEC §4.1)
    c.margin = 0.2             # triplet margin on cosine distance
    c.far_targets = (1e-3, 1e-2, 1e-1)
    c.bootstrap_samples = {"smoke": 50, "small": 1000, "paper": 1000}[preset]
    c.train = train_defaults(preset, steps={"smoke": 10, "small": 3000, "paper": 100000},
                             lr=1e-3, batch_size={"smoke": 16, "small": 64, "paper": 128})
    c.train.identities_per_batch = {"smoke": 4, "small": 16, "paper": 32}[preset]
    return c
