"""Every network's variables in ONE params pytree, for the private step.

    params, notes = load_params(config, "ours")                       # trained checkpoints
    params, notes = load_params(config, "ours", allow_untrained=True) # random init where missing
    params = init_params(config, "pggan", jax.random.PRNGKey(0))      # all random (tests, benchmarks)

Layout (what `jaxdeid.deid.step` reads):

    {"detector":  {"params", "batch_stats"},        jaxdeid train crop
     "encoder":   encoder variables,                 jaxdeid train encoder --arch <gan arch>
     "generator": {"params", "buffers"} (EMA G),     jaxdeid train gan --arch <gan arch>  (ours: L_F fine-tuned G if present)
     "judges":    {arch: {"params", "batch_stats"}}, jaxdeid train recognizer --arch <arch>
     "enhance":   {"params"}, "attenuate": {"params"}   (ours only) jaxdeid train enhance / attenuate}
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..components import init_role, load_role, role_train_command
from ..configs import get_config
from ..crop.detector import HEATMAP_PRIOR_BIAS
from ..store import store_dir
from .methods import check_method, uses_light_networks


def network_names(config, method: str) -> list[str]:
    """The params keys `method` needs ("judges/<arch>" for each judge)."""
    names = ["detector", "encoder", "generator"] + [f"judges/{a}" for a in config.recognizer.judges]
    return (["enhance", "attenuate"] if uses_light_networks(method) else []) + names


def train_command(config, method: str, name: str) -> str:
    """The `jaxdeid train ...` command that produces network `name` of `method`."""
    return role_train_command(config, method, name)


def _init_one(config, method: str, name: str, key: jax.Array) -> Any:
    """Random variables of one network (the registry's jitted init: one compile beats op-by-op dispatch)."""
    return init_role(config, method, name, key)


# The real initialiser, kept under a second name so `quick_random_variables` still finds the
# shapes when a test replaces `_init_one` to control what --allow-untrained draws.
_module_init = _init_one


def _load_one(config, method: str, name: str) -> Any:
    """Trained variables of one network; FileNotFoundError when neither a checkpoint nor shipped weights exist."""
    return load_role(config, method, name)


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, variables in flat.items():
        if name.startswith("judges/"):
            params.setdefault("judges", {})[name.split("/", 1)[1]] = variables
        else:
            params[name] = variables
    return params


def init_params(config, method: str, key: jax.Array) -> dict[str, Any]:
    """Randomly initialised variables of every network `method` uses (tests, benchmarks, demos)."""
    check_method(method)
    names = network_names(config, method)
    keys = jax.random.split(key, len(names))
    return _nest({name: _init_one(config, method, name, k) for name, k in zip(names, keys)})


def quick_random_variables(config, method: str, name: str, seed: int = 0) -> Any:
    """Random variables of network `name` with its exact shapes, WITHOUT compiling an initialiser.

    Shapes come from ``jax.eval_shape`` of the network's init (tracing only); values are
    drawn with numpy: biases, means and offsets 0, BatchNorm scales and variances 1,
    kernels N(0, 1/fan_in) — N(0, 1) for the generator, whose equalised learning rate
    scales weights at run time as StyleGAN initialises them — and other buffers N(0, 1).
    For tests and benchmarks of the pipeline's mechanics on a busy CPU, where compiling
    seven initialisers costs minutes; `init_params` uses each module's own initialisers.
    """

    rng = np.random.default_rng(seed)
    unit_weights = name == "generator"

    def fill(path, leaf):
        leaf_name = str(getattr(path[-1], "key", path[-1])) if path else ""
        shape, dtype = leaf.shape, leaf.dtype
        if not jnp.issubdtype(dtype, jnp.floating):
            return jnp.zeros(shape, dtype)
        if name == "detector" and leaf_name == "bias" and len(path) > 1 and \
                str(getattr(path[-2], "key", "")) == "heatmap":
            # The detector's own initial face prior (scores ~0.1, CenterNet), not 0 (scores ~0.5,
            # which the second-face test would read as a face in every cell).
            return jnp.full(shape, HEATMAP_PRIOR_BIAS, dtype)
        if leaf_name in ("var", "scale"):
            return jnp.ones(shape, dtype)
        if leaf_name in ("bias", "mean", "w_avg") or len(shape) == 0:
            return jnp.zeros(shape, dtype)
        fan_in = 1 if unit_weights or len(shape) < 2 else int(np.prod(shape[:-1]))
        return jnp.asarray(rng.standard_normal(shape) / np.sqrt(fan_in), dtype)

    shapes = jax.eval_shape(lambda k: _module_init(config, method, name, k), jax.random.PRNGKey(0))
    return jax.tree_util.tree_map_with_path(fill, shapes)


def quick_random_params(config, method: str, seed: int = 0) -> dict[str, Any]:
    """`quick_random_variables` for every network of `method`, as one params pytree."""
    check_method(method)
    return _nest({name: quick_random_variables(config, method, name, seed + index)
                  for index, name in enumerate(network_names(config, method))})


def with_face_sized_boxes(params, config, fraction: float = 0.4) -> dict[str, Any]:
    """`params` with the detector's box-size bias set so boxes are about `fraction` of the frame.

    An untrained CenterNet's size head predicts ~0-pixel boxes (its bias starts at 0), which
    the private step rightly treats as "no face", so with random weights the noise loop
    would never run. Tests and benchmarks that need it to run use this; the box centre
    (the heat-map peak) still comes from the network. The size head regresses the side as
    a fraction of the frame (the detector rescales it to output cells itself), so the bias
    is the fraction, and its kernel is zeroed.
    """
    del config   # the bias does not depend on the frame size
    detector = dict(params["detector"]["params"])
    # Kernel 0: every box is `fraction` of the frame a side, wherever the peak lands.
    detector["size"] = {"kernel": jnp.zeros_like(detector["size"]["kernel"]),
                        "bias": jnp.full((2,), fraction, jnp.float32)}
    return {**params, "detector": {**params["detector"], "params": detector}}


def load_params(config, method: str, *, allow_untrained: bool = False, key: jax.Array | None = None,
                names: Sequence[str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The params pytree of `method` from the trained checkpoints under ``config.workdir``.

    Returns ``(params, untrained)``: ``untrained`` names the networks that had no
    checkpoint and were randomly initialised instead, which only happens with
    ``allow_untrained=True`` (each from ``fold_in(key, position in network_names)``, so a
    subset asked for with `names`, e.g. ``["judges/vgg16"]``, gets the same weights as
    the full load). Otherwise a missing checkpoint raises FileNotFoundError
    listing every missing network and the `jaxdeid train ...` command for each.
    """
    check_method(method)
    key = jax.random.PRNGKey(int(config.seed)) if key is None else key
    flat, missing = {}, []
    for index, name in enumerate(network_names(config, method)):
        if names is not None and name not in names:
            continue
        try:
            flat[name] = _load_one(config, method, name)
        except FileNotFoundError:
            missing.append(name)
            if allow_untrained:
                flat[name] = _init_one(config, method, name, jax.random.fold_in(key, index))
    if missing and not allow_untrained:
        lines = "\n".join(f"  {name:<22} {train_command(config, method, name)}" for name in missing)

        directory = store_dir(config)
        where = f"missing from the {config.preset} store ({directory})" if directory is not None else \
            "the weights store is disabled"
        raise FileNotFoundError(
            f"{method}: {len(missing)} network(s) have no checkpoint under {config.workdir} and are {where}; "
            f"train them first:\n{lines}\n(or pass --allow-untrained to run with random weights: "
            f"a demo/test only, its faces are not meaningful)")
    return _nest(flat), missing


def weakened_settings(config) -> list[str]:
    """The privacy settings of `config` that are weaker than its preset's defaults, one line each.

    A run with any of them may still make faces the judges reject, but it is not the
    guarantee the defaults give, so `jaxdeid deidentify` writes no file as private then.
    """

    default = get_config(str(config.preset))
    weaker = []

    def check(name, value, base, weaker_if):
        if weaker_if(value, base):
            weaker.append(f"{name}={value!r} (default {base!r})")

    check("recognizer.threshold", float(config.recognizer.threshold), float(default.recognizer.threshold),
          lambda v, b: v > b)
    missing = [a for a in default.recognizer.judges if a not in tuple(config.recognizer.judges)]
    if missing:
        weaker.append(f"recognizer.judges lacks {', '.join(missing)} (default {tuple(default.recognizer.judges)!r})")
    check("deid.judge_views", str(config.deid.judge_views), str(default.deid.judge_views), lambda v, b: v != b)
    check("crop.score_threshold", float(config.crop.score_threshold), float(default.crop.score_threshold),
          lambda v, b: v < b)
    check("crop.iou_threshold", float(config.crop.iou_threshold), float(default.crop.iou_threshold),
          lambda v, b: v < b)
    check("deid.second_face_threshold", float(config.deid.second_face_threshold),
          float(default.deid.second_face_threshold), lambda v, b: v > b)
    check("deid.fallback_margin", float(config.deid.fallback_margin), float(default.deid.fallback_margin),
          lambda v, b: v < b)
    check("deid.valid_luminance_ratio", float(config.deid.valid_luminance_ratio),
          float(default.deid.valid_luminance_ratio), lambda v, b: v < b)
    # More cells = a finer pixelation of the replaced square around the face: more of the input shows.
    check("deid.fallback_cells", int(config.deid.fallback_cells), int(default.deid.fallback_cells),
          lambda v, b: v > b)
    check("deid.fallback_frame_cells", int(config.deid.fallback_frame_cells), int(default.deid.fallback_frame_cells),
          lambda v, b: v > b)
    return weaker

