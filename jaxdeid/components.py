"""One record per trained network kind: what the weights store and ``jaxdeid weights`` need.

Each `Component` says how to build the network's (restorable) training task, which
part of the training state is the inference variables that ship, how to score a
state on the validation split (the figure a network is accepted on, and its target),
how to run it on a fixed probe batch (the storage error of 16-bit weights), and the
command that trains it. `store_entries(config)` lists every network a preset ships,
by store name (`jaxdeid.store.store_name`): the four methods' networks and the
independent fifth recognizer of the black-box test.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import crop, encoder, gan, light, recognizers
from .crop import train as crop_train
from .deid import finetune
from .deid.methods import GENERATOR_ARCH
from .encoder import train as encoder_train
from .gan import train as gan_train
from .gan.samples import fixed_latents
from .recognizers import train as recognizer_train
from .recognizers.model import init_variables as init_recognizer, make_embed, make_recognizer
from .store import resolve, store_name
from .train import Task, TrainingReport

# The module itself: `jaxdeid.light` exports a function named `train` that shadows it as an attribute.
light_train = importlib.import_module("jaxdeid.light.train")

PROBE_SEED = 20_221_130
PROBE_COUNT = 4
# The independently trained fifth recognizer (black-box test): the same training, another seed.
FIFTH_ARCH, FIFTH_SEED = "resnet50", 1


def fifth_workdir_name(seed: int = FIFTH_SEED) -> str:
    """The sub-folder of the work folder that holds the independent recognizer's run."""
    return f"blackbox_seed{seed}"


@dataclasses.dataclass(frozen=True)
class Component:
    """A trained network kind (one entry per architecture it accepts)."""

    kind: str
    archs: tuple[str, ...]
    make_task: Callable[[Any, str | None], Task]                # restorable task (no data, no trained dependencies)
    inference: Callable[[Any], Any]                             # training state -> inference variables
    merge: Callable[[Any, Any], Any]                            # state with other inference variables
    probe: Callable[[Any, str | None, Any], jax.Array]          # outputs on a fixed batch
    figure: Callable[[Any], str | None]                         # eval_fn key it is accepted on (None: none)
    target: Callable[[Any], float | None]                       # that figure's target at a config
    train_command: Callable[[Any, str | None], str]
    init: Callable[[Any, str | None, jax.Array], Any]           # random inference variables (untrained runs)
    fit: Callable[[Any, Any], TrainingReport]                   # `jaxdeid train <kind>`: (config, args) -> report
    description: str                                            # its `jaxdeid train` help line
    flags: tuple[tuple[str, dict], ...] = ()                    # extra `jaxdeid train <kind>` flags
    default_arch: str | None = None                             # `--arch` when not given (None: required)
    higher_is_better: bool = True

    def load(self, config, arch: str | None = None) -> Any:
        """The trained inference variables (`jaxdeid.store.resolve`: checkpoint, else shipped, else
        FileNotFoundError naming the command that trains it)."""
        return resolve(config, self.make_task(config, arch), self.inference, self.train_command(config, arch))


def _fast_init_key(key: jax.Array) -> jax.Array:
    """An "rbg" PRNG key derived from `key`, for random initialisation only.

    XLA compiles threefry-based initialisers very slowly on the CPU (minutes for a
    small U-Net under load); the "rbg" generator is a single XLA op and compiles ~6x
    faster. Initial weights are random either way; rbg bits may differ between
    backends, so random init is reproducible per device kind, not across them.
    """
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    data = jnp.ravel(jnp.asarray(data, jnp.uint32))
    return jax.random.wrap_key_data(jnp.resize(data, (4,)), impl="rbg")


def _zeros(side: int) -> jax.Array:
    return jnp.zeros((1, side, side, 3), jnp.float32)


def _probe_images(side: int) -> jax.Array:
    rng = np.random.default_rng(PROBE_SEED)
    # Smooth-ish images in [0, 1]: a coarse random field upsampled, not pixel noise.
    coarse = rng.uniform(0.0, 1.0, (PROBE_COUNT, 8, 8, 3)).astype(np.float32)
    return jax.image.resize(jnp.asarray(coarse), (PROBE_COUNT, side, side, 3), "linear")


def _merge_top(state, variables):
    return {**state, **variables}


def _light(direction: str) -> Component:
    def probe(config, arch, variables):
        model = light.make_model(config, direction)
        images = _probe_images(int(config.data.resolution))
        level = jnp.full((PROBE_COUNT,), 0.1, jnp.float32)
        return light_train.make_apply(model)(variables["params"], images, level)

    def init(config, arch, key):
        model = light.make_model(config, direction)
        side = int(config.data.scene_resolution if direction == "enhance" else config.data.resolution)
        args = [_zeros(side)] + ([jnp.zeros((1,), jnp.float32)] if model.level_input else [])
        return {"params": jax.jit(model.init)(_fast_init_key(key), *args)["params"]}

    targets = {"enhance": 0.70, "attenuate": 0.75}
    descriptions = {"enhance": "light enhancement network, low -> normal (component 1)",
                    "attenuate": "light attenuation network, normal -> low (component 6)"}
    return Component(kind=direction, archs=(), make_task=lambda config, arch: light_train.make_task(config, direction),
                     init=init, fit=lambda config, args: light_train.fit(config, direction),
                     description=descriptions[direction],
                     inference=light_train.inference_variables, merge=_merge_top, probe=probe,
                     figure=lambda config: "ssim", target=lambda config: targets[direction],
                     train_command=lambda config, arch: f"jaxdeid train {direction} --preset {config.preset}")


def _crop_probe(config, arch, variables):
    detector = crop.make_detector(config)
    outputs = detector.apply(variables, _probe_images(int(config.data.scene_resolution)), train=False)
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(outputs)])


def _crop_figure(config) -> str:
    return "enhanced_detection_rate" if float(config.crop.enhanced_fraction) > 0 else "detection_rate"


def _crop_init(config, arch, key):
    detector = crop.make_detector(config)
    side = int(config.data.scene_resolution)
    variables = jax.jit(lambda k: detector.init(k, _zeros(side), train=False))(_fast_init_key(key))
    return {"params": variables["params"], "batch_stats": variables["batch_stats"]}


CROP = Component(kind="crop", archs=(), make_task=lambda config, arch: crop_train.make_task(config),
                 init=_crop_init, fit=crop_train.fit,
                 description="face cropping network, CenterNet-style detector (component 2)",
                 inference=crop_train.inference_variables, merge=_merge_top, probe=_crop_probe,
                 figure=_crop_figure, target=lambda config: 0.95 if _crop_figure(config) != "detection_rate" else 0.98,
                 train_command=lambda config, arch: f"jaxdeid train crop --preset {config.preset}")


def _generator_probe(config, arch, variables):
    G = gan.make_generator(config.gan, arch)
    z = jnp.asarray(fixed_latents(G.z_dim, PROBE_COUNT, seed=PROBE_SEED % 10_000))
    synthesize = encoder_train.make_synthesize(G, arch, encoder_train.generator_lod(config, arch))
    return synthesize(variables, G.apply(variables, z, method="map"))


def _generator_init(config, arch, key):
    G = gan.make_generator(config.gan, arch)
    return jax.jit(lambda k: gan.init_generator(G, k))(_fast_init_key(key))


GAN = Component(kind="gan", archs=gan.ARCHS,
                make_task=lambda config, arch: gan_train.make_task(config, arch),
                init=_generator_init, fit=gan_train.fit, default_arch="stylegan2",
                description="face generation network: StyleGAN2 (ours) or a baseline (component 4)",
                inference=gan_train.inference_variables, merge=lambda state, v: {**state, "G_ema": v},
                probe=_generator_probe, figure=lambda config: None, target=lambda config: None,
                train_command=lambda config, arch: f"jaxdeid train gan --arch {arch} --preset {config.preset}")


def _encoder_probe(config, arch, variables):
    return encoder.make_encoder(config, arch).apply(variables, _probe_images(int(config.data.resolution)))


def _encoder_init(config, arch, key):
    module = encoder.make_encoder(config, arch)
    return dict(jax.jit(module.init)(_fast_init_key(key), _zeros(int(config.data.resolution))))


ENCODER = Component(kind="encoder", archs=gan.ARCHS,
                    make_task=lambda config, arch: encoder_train._restore_task(config, arch),
                    init=_encoder_init, fit=encoder_train.fit, default_arch="stylegan2",
                    description="latent code generation network, SE-ResNet50 + 6 FC (component 3): "
                                "--arch names the generator it inverts",
                    inference=encoder_train.inference_variables, merge=_merge_top, probe=_encoder_probe,
                    figure=lambda config: "ssim", target=lambda config: 0.60,
                    train_command=lambda config, arch: f"jaxdeid train encoder --arch {arch} --preset {config.preset}")


def _recognizer_probe(config, arch, variables):
    return make_embed(config, arch)(variables, _probe_images(int(config.data.resolution)))


RECOGNIZER = Component(kind="recognizer", archs=recognizers.ARCHS,
                       init=lambda config, arch, key: init_recognizer(make_recognizer(config, arch), key,
                                                                     int(config.data.resolution)),
                       fit=recognizer_train.fit,
                       description="a face recognizer (triplet loss, semi-hard mining; Table 1)",
                       make_task=lambda config, arch: recognizer_train.make_task(config, arch),
                       inference=recognizer_train.inference_variables, merge=_merge_top, probe=_recognizer_probe,
                       figure=lambda config: "val_acc", target=lambda config: 0.94,
                       train_command=lambda config, arch: (f"jaxdeid train recognizer --arch {arch} --preset "
                                                           f"{config.preset}" + (f" --seed {int(config.seed)}"
                                                                                 if int(config.seed) else "")))

DEID = Component(kind="deid", archs=(),
                 make_task=lambda config, arch: finetune.make_task(config, MethodNetworks(config, "stylegan2"),
                                                                   allow_untrained=True),
                 init=lambda config, arch, key: _generator_init(config, "stylegan2", key),
                 fit=lambda config, args: finetune.fit(config, args, MethodNetworks(config, "stylegan2")),
                 description="fine-tune the StyleGAN2 generator with L_F (eq. 8)",
                 flags=(("--allow-untrained", dict(action="store_true",
                                                   help="use randomly initialised encoder/judges where their "
                                                        "checkpoints are missing (tests/demos only; default: fail "
                                                        "naming the commands)")),),
                 inference=finetune.inference_variables, merge=lambda state, v: {**state, "G_ema": v},
                 probe=lambda config, arch, variables: _generator_probe(config, "stylegan2", variables),
                 figure=lambda config: None, target=lambda config: None,
                 train_command=lambda config, arch: f"jaxdeid train deid --preset {config.preset}")

COMPONENTS: dict[str, Component] = {c.kind: c for c in (_light("enhance"), _light("attenuate"), CROP, GAN, ENCODER,
                                                         RECOGNIZER, DEID)}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One network a preset ships: its store name, kind, architecture and the config it is built with."""

    name: str
    component: Component
    arch: str | None
    config: Any

    def task(self) -> Task:
        return self.component.make_task(self.config, self.arch)

    @property
    def train_command(self) -> str:
        return self.component.train_command(self.config, self.arch)

    @property
    def figure(self) -> str | None:
        return self.component.figure(self.config)

    @property
    def target(self) -> float | None:
        return self.component.target(self.config)


def store_entries(config) -> list[Entry]:
    """Every network of ``config.preset`` that the store ships, in training order."""
    entries = []

    def add(kind, arch=None, seed=None):
        cfg = config
        if seed is not None:   # an independent run: its seed, its store tag and its own work folder
            cfg = copy.deepcopy(config)
            cfg.seed, cfg.weights_tag = int(seed), f"seed{int(seed)}"
            cfg.workdir = str(Path(config.workdir) / fifth_workdir_name(int(seed)))
        component = COMPONENTS[kind]
        task_name = {"enhance": light_train.task_name("enhance"), "attenuate": light_train.task_name("attenuate"),
                     "crop": crop_train.TASK_NAME, "gan": gan_train.task_name(arch or ""),
                     "encoder": f"encoder_{arch}", "recognizer": recognizer_train.task_name(arch or ""),
                     "deid": finetune.TASK_NAME}[kind]
        entries.append(Entry(store_name(cfg, task_name), component, arch, cfg))

    add("enhance")
    add("attenuate")
    add("crop")
    for arch in GAN.archs:
        add("gan", arch)
    for arch in ENCODER.archs:
        add("encoder", arch)
    for arch in config.recognizer.judges:
        add("recognizer", arch)
    add("recognizer", FIFTH_ARCH, seed=FIFTH_SEED)
    add("deid")
    return entries


def entry_by_name(config, name: str) -> Entry:
    for entry in store_entries(config):
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in store_entries(config))
    raise ValueError(f"unknown network {name!r}; the {config.preset} store holds: {known}")


# ----------------------------------------------------------------------------- roles in the private step
# The private step's params pytree names its networks by role: "enhance", "attenuate",
# "detector", "encoder", "generator" and "judges/<arch>". A role of a method is one
# component at one architecture.

def role_component(method: str, role: str) -> tuple[Component, str | None]:
    """The component (and architecture) that fills `role` in `method`'s params."""
    arch = GENERATOR_ARCH[method]
    if role.startswith("judges/"):
        return RECOGNIZER, role.split("/", 1)[1]
    kind, kind_arch = {"enhance": ("enhance", None), "attenuate": ("attenuate", None), "detector": ("crop", None),
                       "encoder": ("encoder", arch), "generator": ("gan", arch)}[role]
    return COMPONENTS[kind], kind_arch


def finetuned_generator(config) -> Any | None:
    """The L_F fine-tuned generator's variables, or None when it was never trained."""
    try:
        return DEID.load(config)
    except FileNotFoundError:
        return None


def load_role(config, method: str, role: str) -> Any:
    """Trained variables of `role`; ours' generator is the L_F fine-tuned one once it exists."""
    if method == "ours" and role == "generator":
        finetuned = finetuned_generator(config)
        if finetuned is not None:
            return finetuned
    component, arch = role_component(method, role)
    return component.load(config, arch)


def init_role(config, method: str, role: str, key: jax.Array) -> Any:
    component, arch = role_component(method, role)
    return component.init(config, arch, key)


def role_train_command(config, method: str, role: str) -> str:
    component, arch = role_component(method, role)
    return component.train_command(config, arch)


@dataclasses.dataclass(frozen=True)
class MethodNetworks:
    """`method`'s networks by role, for a task that reads other trained networks (`finetune.FrozenNetworks`)."""

    config: Any
    method: str

    def load(self, role: str) -> Any:
        return load_role(self.config, self.method, role)

    def init(self, role: str, key: jax.Array) -> Any:
        return init_role(self.config, self.method, role, key)

    def train_command(self, role: str) -> str:
        return role_train_command(self.config, self.method, role)
