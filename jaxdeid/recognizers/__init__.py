"""Face recognizers (docs/method.md §1 component 7): VGG16, ResNet50, MobileNetV3-Large, SE-ResNet50.

    model.py        make_recognizer(config, arch), make_embed(config, arch) -> embed(variables, images)
    resnet.py       ResNet(stage_sizes, width_mult, se, ...) backbone (also the latent encoder's SE-ResNet50)
    vgg.py          VGG16 (configuration D + fc6/fc7)
    mobilenetv3.py  MobileNetV3-Large
    triplet.py      triplet loss on cosine distance with online semi-hard mining
    train.py        make_task(config, arch), load_trained(config, arch), `jaxdeid train recognizer --arch ...`
    evaluate.py     docs/method.md §4 protocol: 1:1 verification at 0.3, ROC / TAR@FAR, 1:N, bootstrap CIs

Images are float32 NHWC RGB in [0, 1]; embeddings are unit-norm, so cosine similarity is a dot product.
The package exports the models; training and evaluation (which read the data) are imported from
`jaxdeid.recognizers.train` and `jaxdeid.recognizers.evaluate`.
"""

from .model import ARCHS, DISPLAY_NAMES, Recognizer, make_embed, make_recognizer
from .resnet import ResNet

__all__ = ["ARCHS", "DISPLAY_NAMES", "Recognizer", "ResNet", "make_embed", "make_recognizer"]
