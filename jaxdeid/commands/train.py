"""`jaxdeid train NETWORK`: train one network through the shared loop.

Each network registers a trainer as ``"module:function"``; the function takes
``(config, args)`` and returns an exit status. Imports are lazy so `--help` is fast.
"""

import importlib

from .common import add_config_flags, config_from_args

# name: ("module:function", help text, [(extra flag, argparse kwargs), ...])
TRAINERS = {
    "enhance": ("jaxdeid.light.train:train_enhance", "light enhancement network, low -> normal (component 1)", []),
    "attenuate": ("jaxdeid.light.train:train_attenuate", "light attenuation network, normal -> low (component 6)", []),
    "recognizer": ("jaxdeid.recognizers.train:main", "a face recognizer (triplet loss, semi-hard mining; Table 1)",
                   [("--arch", dict(required=True, choices=("vgg16", "resnet50", "mobilenetv3", "senet50"),
                                    help="recognizer architecture"))]),
    "crop": ("jaxdeid.crop.train:train_main", "face cropping network, CenterNet-style detector (component 2)", []),
    "encoder": ("jaxdeid.encoder.train:train_main", "latent code generation network, SE-ResNet50 + 6 FC (component 3)",
                [("--arch", dict(default="stylegan2", choices=("stylegan2", "stylegan1", "pggan"),
                                 help="the generator whose latent space the encoder inverts"))]),
    "gan": ("jaxdeid.gan.train:train_gan", "face generation network: StyleGAN2 (ours) or a baseline (component 4)",
            [("--arch", dict(default="stylegan2", choices=("stylegan2", "stylegan1", "pggan"),
                             help="generator architecture (default: stylegan2)"))]),
    "deid": ("jaxdeid.deid.losses:train_deid", "fine-tune the StyleGAN2 generator with L_F (eq. 8)",
             [("--allow-untrained", dict(action="store_true",
                                         help="use randomly initialised encoder/judges where their checkpoints "
                                              "are missing (tests/demos only; default: fail naming the commands)"))]),
}


def register(subparsers):
    p = subparsers.add_parser("train", help="train a network (resumes from its latest checkpoint)")
    sub = p.add_subparsers(dest="network", metavar="NETWORK", required=True)
    for name, (target, help_text, extra) in sorted(TRAINERS.items()):
        q = sub.add_parser(name, help=help_text)
        add_config_flags(q)
        for flag, kwargs in extra:
            q.add_argument(flag, **kwargs)
        q.set_defaults(func=_runner(target))


def _runner(target: str):
    def run(args) -> int:
        module, func = target.split(":")
        return getattr(importlib.import_module(module), func)(config_from_args(args), args)
    return run
