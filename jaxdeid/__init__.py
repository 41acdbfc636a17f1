"""jaxdeid: private face image generation by de-identification in low light.

A JAX/Flax re-implementation of Dong, Wang, Gu and Yang (2022). The package
mirrors the method's Figure 2:

    data/         SynthFaces, VGGFace2 and folder loaders; LLNet low-light synthesis
    light/        Retinex light enhancement and attenuation networks (components 1, 6)
    crop/         face cropping ("interception") network and crop / paste-back ops (2, 8)
    recognizers/  VGG16, ResNet50, MobileNetV3-Large, SENet50 face recognizers (7)
    gan/          StyleGAN2 (ours), StyleGAN1 and PGGAN generators and discriminators (4)
    encoder/      SE-ResNet50 + six-layer mapping latent encoder (3)
    deid/         the single-jit private step and the L_F fine-tuning losses (4, 5)
    metrics/      one registry of every metric the tables report
    train/        one training-loop pattern shared by every network
    configs/      one config system with presets smoke / small / paper
"""

from . import xla_settings

# Before any submodule imports JAX's backend: XLA:CPU's convolutions run several times
# faster without YNNPACK (measured in jaxdeid/xla_settings.py).
xla_settings.apply()

__version__ = "0.1.0"
