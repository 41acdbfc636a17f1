"""The weights store: shipped inference variables per preset, and the one resolution rule.

Layout: ``<root>/<preset>/manifest.json`` beside one safetensors file (or its shards)
per network. The root is ``config.weights_store``: ``"shipped"`` (default) is the
folder inside this package, ``""`` disables the store, any other value is a folder.
A network's store name is its training task's name (``light_enhance``, ``crop``,
``gan_stylegan2``, ``recognizer_vgg16``, ...), with ``_<weights_tag>`` added when the
config has one (the independent fifth recognizer: ``recognizer_resnet50_seed1``).

The resolution rule (`resolve`), used by every ``load_trained``:

1. a checkpoint of the network in ``config.workdir`` (trained on this machine);
2. else the preset's shipped weights, checked (sha256, preset, shapes) before use;
3. else FileNotFoundError naming the command that trains it.

A shipped file that fails a check raises `StoreError`: never a silent partial load,
never a quiet fall-through to random weights. Which weights a process used is
recorded through `jaxdeid.results.record_weights`, and every result's provenance
lists them.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from .. import results
from ..train import Task, restore_latest
from . import fileformat
from .fileformat import StoreError

SHIPPED_ROOT = Path(__file__).resolve().parent / "shipped"
MANIFEST = "manifest.json"
PRESET_BUDGET_BYTES = 32 * 2**20   # the whole store of one preset, manifest included


def store_name(config, task_name: str) -> str:
    """The store's name of a network trained as `task_name`, with ``config.weights_tag`` if any."""
    tag = str(config.get("weights_tag", "") or "")
    return f"{task_name}_{tag}" if tag else task_name


def store_dir(config) -> Path | None:
    """The folder of ``config.preset``'s shipped weights, or None when the store is disabled."""
    root = str(config.get("weights_store", "shipped"))
    if not root:
        return None
    return (SHIPPED_ROOT if root == "shipped" else Path(root)) / str(config.preset)


def read_manifest(directory: Path | None) -> dict[str, Any]:
    if directory is None or not (directory / MANIFEST).is_file():
        return {"networks": {}}
    try:
        return json.loads((directory / MANIFEST).read_text())
    except json.JSONDecodeError as err:
        raise StoreError(f"{directory / MANIFEST}: not valid JSON ({err})") from err


def write_manifest(directory: Path, manifest: Mapping[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MANIFEST
    ordered = {**manifest, "networks": dict(sorted(manifest.get("networks", {}).items()))}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results._to_builtin(ordered), indent=2) + "\n")
    tmp.replace(path)
    return path


def shapes_of(abstract) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{flat name: (shape, dtype)}`` of an abstract (or concrete) variables pytree."""
    leaves = jax.tree_util.tree_flatten_with_path(abstract)[0]
    out = {}
    for path, leaf in leaves:
        name = fileformat.SEPARATOR.join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
        out[name] = (tuple(int(d) for d in leaf.shape), str(jnp.dtype(leaf.dtype)))
    return out


def fingerprint(abstract) -> str:
    """sha256 of every tensor's name, shape and dtype: equal iff the config builds the same shapes."""
    lines = [f"{name}:{shape}:{dtype}" for name, (shape, dtype) in sorted(shapes_of(abstract).items())]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def abstract_inference(task: Task, inference: Callable, seed: int = 0):
    """The shapes of a task's inference variables, traced from its init (no compilation)."""
    return inference(jax.eval_shape(task.init, jax.random.PRNGKey(seed)))


def _mismatch(expected: Mapping, found: Mapping) -> str:
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing:
        return f"tensor {missing[0]!r} is missing ({len(missing)} missing in all)"
    if extra:
        return f"tensor {extra[0]!r} is not in this config's network ({len(extra)} extra in all)"
    for name in sorted(expected):
        if tuple(expected[name][0]) != tuple(found[name][0]):
            return f"tensor {name!r} has shape {tuple(found[name][0])}, this config needs {tuple(expected[name][0])}"
    return "the tensors' dtypes differ"


def load_shipped(config, name: str, abstract) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(variables, manifest entry)`` of shipped network `name`, or None when the store lacks it.

    Raises StoreError when a file is missing, corrupt, of another preset or network, or
    of other shapes than `abstract` (the current config's), naming the file and the field.
    """
    directory = store_dir(config)
    entry = read_manifest(directory).get("networks", {}).get(name)
    if entry is None:
        return None
    stored, metadata = fileformat.read(directory, entry["files"])
    stored = fileformat.from_storage(stored)
    first = directory / entry["files"][0]["file"]
    for field, want in (("preset", str(config.preset)), ("network", name)):
        if metadata.get(field) != want:
            raise StoreError(f"{first}: header field {field!r} is {metadata.get(field)!r}, expected {want!r}")
    expected = shapes_of(abstract)
    found = {key: (value.shape, str(value.dtype)) for key, value in stored.items()}
    if set(expected) != set(found) or any(tuple(expected[k][0]) != tuple(found[k][0]) for k in expected):
        raise StoreError(f"{first}: does not fit this config's {name} (field 'fingerprint': "
                         f"{_mismatch(expected, found)}); re-export it or drop the overrides")
    if fingerprint(abstract) != entry.get("fingerprint"):
        raise StoreError(f"{first}: manifest field 'fingerprint' {str(entry.get('fingerprint'))[:12]}… does not "
                         f"match this config's {name}; re-export it")
    restored = {key: jnp.asarray(value.astype(expected[key][1])) for key, value in stored.items()}
    return fileformat.unflatten(restored), entry


def resolve(config, task: Task, inference: Callable[[Any], Any], train_command: str) -> dict[str, Any]:
    """The trained inference variables of `task`'s network, by the one resolution rule (module doc)."""
    name = store_name(config, task.name)
    restored = restore_latest(task, config.workdir, seed=int(config.seed))
    if restored is not None:
        state, meta = restored
        step = int(meta.get("step", 0))
        results.record_weights(name, {"source": "checkpoint",
                                      "path": str(Path(config.workdir) / task.name / "checkpoints"), "step": step})
        return inference(state)
    directory = store_dir(config)
    shipped = load_shipped(config, name, abstract_inference(task, inference, int(config.seed)))
    if shipped is not None:
        variables, entry = shipped
        results.record_weights(name, {"source": "store", "sha256": [f["sha256"] for f in entry["files"]],
                                      "steps": entry.get("steps")})
        return variables
    where = "the store is disabled (weights_store='')" if directory is None else \
        f"missing from the {config.preset} store ({directory})"
    raise FileNotFoundError(f"no trained {name}: no checkpoint under {Path(config.workdir) / task.name} and "
                            f"{where}; train it with `{train_command}`")


def loaded_from_store(config, task_name: str) -> bool:
    """True when the network trained as `task_name` was last loaded from the shipped store."""
    return results.weights_used().get(store_name(config, task_name), {}).get("source") == "store"


def shipped(config, task_name: str, load: Callable[[], Any]) -> bool:
    """True when `load` (a ``load_trained``) takes the network from the store, not a workdir
    checkpoint: a script that trains what is missing then leaves it alone."""
    try:
        load()
    except FileNotFoundError:
        return False
    return loaded_from_store(config, task_name)


def trained_steps(config, task_name: str) -> int:
    """Training steps of the weights `resolve` loaded for `task_name` (0 if it loaded none)."""
    source = results.weights_used().get(store_name(config, task_name), {})
    if source.get("source") == "checkpoint":
        return int(source.get("step", 0))
    return int((source.get("steps") or {}).get("done", 0))


def storage_error(reference: np.ndarray, stored: np.ndarray) -> dict[str, float]:
    """Max and mean |Δ| of a network's outputs on stored weights against float32, and the output scale."""
    reference, stored = np.asarray(reference, np.float64), np.asarray(stored, np.float64)
    delta = np.abs(reference - stored)
    return {"max_abs": float(delta.max()), "mean_abs": float(delta.mean()),
            "output_mean_abs": float(np.abs(reference).mean())}


def round_trip(variables, codec: str) -> dict[str, Any]:
    """`variables` exactly as they come back from storage with `codec` (what a user of the store runs)."""
    flat = fileformat.flatten(jax.device_get(variables))
    back = fileformat.from_storage(fileformat.to_storage(flat, codec)[0])
    return fileformat.unflatten({k: jnp.asarray(v.astype(flat[k].dtype)) for k, v in back.items()})


def export(config, name: str, variables, entry: Mapping[str, Any], *, figure_better: Callable[[dict, dict], bool],
           codec: str, force: bool = False) -> dict[str, Any]:
    """Writes `variables` into ``config.preset``'s store as `name` and records `entry` in the manifest.

    Refuses (ValueError) to replace a shipped network whose recorded figure is better
    than the new one (``figure_better(old_entry, new_entry)``) unless `force`. Refuses a
    store over the preset's size budget.
    """
    directory = store_dir(config)
    if directory is None:
        raise ValueError("the weights store is disabled (weights_store=''); nothing to export into")
    manifest = read_manifest(directory)
    old = manifest.get("networks", {}).get(name)
    if old is not None and not force and figure_better(old, dict(entry)):
        raise ValueError(f"{name}: the shipped figure {old.get('figure')} is better than the new "
                         f"{entry.get('figure')}; pass --force to replace it anyway")
    flat = fileformat.flatten(jax.device_get(variables))
    stored, info = fileformat.to_storage(flat, codec)
    old_bytes = sum(f["bytes"] for f in (old or {}).get("files", []))
    projected = store_bytes(directory) - old_bytes + sum(v.nbytes for v in stored.values())
    if projected > PRESET_BUDGET_BYTES:
        raise ValueError(f"{name}: the {config.preset} store would take {projected / 2**20:.1f} MiB, over its "
                         f"{PRESET_BUDGET_BYTES / 2**20:.0f} MiB budget; narrow or quantise before shipping")
    header = {"network": name, "preset": str(config.preset), "fingerprint": entry["fingerprint"], "codec": codec}
    # New files first (each written atomically), then the manifest, then the old files no
    # longer listed: an interrupted export leaves the previous network loadable.
    files = fileformat.write(directory, name, stored, header)
    record = {**entry, "files": files, "codec": codec, "int8_tensors": len(info["int8"]),
              "kept_float32": info["kept_float32"],
              "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    manifest = {"preset": str(config.preset), "budget_bytes": PRESET_BUDGET_BYTES,
                "networks": {**manifest.get("networks", {}), name: record}}
    write_manifest(directory, manifest)
    kept = {f["file"] for f in files}
    for old_file in (old or {}).get("files", []):
        if old_file["file"] not in kept:
            (directory / old_file["file"]).unlink(missing_ok=True)
    return record


def store_bytes(directory: Path) -> int:
    """Bytes of every file of a preset's store, the manifest included."""
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file()) if directory.is_dir() else 0
