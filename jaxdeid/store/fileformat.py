"""Inference variables as safetensors files: flat tensor names, 16- or 8-bit storage, shards.

A variables pytree (nested dicts of arrays, as Flax returns them) is flattened to
``"params/b64/conv0/kernel"``-style names. Two storage codecs:

* ``float16``: every floating tensor as float16. 11 significant bits keep a weight
  within ~5e-4 (relative) of its float32 value, twice bfloat16's bits; a tensor outside
  float16's range stays float32 and is named in the metadata.
* ``int8``: weight matrices and convolution kernels of at least `INT8_MIN_ELEMENTS`
  elements (where the bytes are) as symmetric int8 with one float32 scale per output
  channel (the last axis), stored beside it as ``<name>::scale``; every other floating
  tensor (biases, normalisation statistics, small kernels) as float16.

Integer tensors keep their dtype. A file larger than the shard limit is split at
tensor boundaries into ``<stem>-00001-of-0000N.safetensors``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

SEPARATOR = "/"
STORAGE_DTYPE = np.float16
# Largest magnitude stored in float16 (its max is 65504; headroom so rounding never overflows).
FLOAT16_LIMIT = 60000.0
SHARD_LIMIT_BYTES = 15 * 2**20


class StoreError(ValueError):
    """A shipped weights file that cannot be used: corrupt, of another preset, or of other shapes."""


def flatten(variables: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """``{"params": {"conv": {"kernel": x}}}`` -> ``{"params/conv/kernel": x}`` (host numpy arrays)."""
    flat: dict[str, np.ndarray] = {}
    for key, value in variables.items():
        key = str(key)
        if SEPARATOR in key:
            raise ValueError(f"variable name {key!r} contains {SEPARATOR!r}; it cannot be stored unambiguously")
        name = f"{prefix}{SEPARATOR}{key}" if prefix else key
        if isinstance(value, Mapping):
            flat.update(flatten(value, name))
        else:
            flat[name] = np.asarray(value)
    return flat


def unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The inverse of `flatten`."""
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        node = nested
        *parents, leaf = name.split(SEPARATOR)
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


CODECS = ("float16", "int8")
INT8_MIN_ELEMENTS = 2**14
SCALE_SUFFIX = "::scale"


def _check_finite(name: str, value: np.ndarray) -> None:
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{name}: non-finite values; refusing to store a broken network")


def _quantise_int8(value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8: ``value ≈ q * scale`` with scale over the last axis."""
    flat = value.reshape(-1, value.shape[-1]).astype(np.float32)
    scale = np.max(np.abs(flat), axis=0) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.round(flat / scale), -127, 127).astype(np.int8)
    return q.reshape(value.shape), scale


def to_storage(flat: Mapping[str, np.ndarray], codec: str = "float16") -> tuple[dict[str, np.ndarray], dict]:
    """Encodes `flat` with `codec`; returns ``(stored tensors, {"kept_float32": [...], "int8": [...]})``.

    Non-finite weights are refused: a network with NaN or inf in it is not shipped.
    """
    if codec not in CODECS:
        raise ValueError(f"unknown storage codec {codec!r}; choose one of {CODECS}")
    stored: dict[str, np.ndarray] = {}
    info: dict[str, list[str]] = {"kept_float32": [], "int8": []}
    for name, value in flat.items():
        if not np.issubdtype(value.dtype, np.floating):
            stored[name] = np.ascontiguousarray(value)
            continue
        _check_finite(name, value)
        if codec == "int8" and value.ndim >= 2 and value.size >= INT8_MIN_ELEMENTS:
            stored[name], stored[name + SCALE_SUFFIX] = _quantise_int8(value)
            info["int8"].append(name)
        elif value.size and float(np.max(np.abs(value))) > FLOAT16_LIMIT:
            stored[name] = value.astype(np.float32)
            info["kept_float32"].append(name)
        else:
            stored[name] = value.astype(STORAGE_DTYPE)
    return stored, info


def from_storage(stored: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Decodes stored tensors to float32 (int8 tensors times their per-channel scale)."""
    flat = {}
    for name, value in stored.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        scale = stored.get(name + SCALE_SUFFIX)
        if scale is not None:
            flat[name] = value.astype(np.float32) * scale.astype(np.float32)
        elif np.issubdtype(value.dtype, np.floating):
            flat[name] = value.astype(np.float32)
        else:
            flat[name] = value
    return flat


def stored_bytes(shapes: Mapping[str, tuple[tuple[int, ...], str]], codec: str) -> int:
    """Bytes the tensors of these ``{name: (shape, dtype)}`` take under `codec` (headers aside)."""
    total = 0
    for shape, dtype in shapes.values():
        size = int(np.prod(shape)) if shape else 1
        if not np.issubdtype(np.dtype(dtype), np.floating):
            total += size * np.dtype(dtype).itemsize
        elif codec == "int8" and len(shape) >= 2 and size >= INT8_MIN_ELEMENTS:
            total += size + 4 * shape[-1]
        else:
            total += 2 * size
    return total


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def shard_names(stem: str, count: int) -> list[str]:
    if count == 1:
        return [f"{stem}.safetensors"]
    return [f"{stem}-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


def _split(flat: Mapping[str, np.ndarray], limit: int) -> list[dict[str, np.ndarray]]:
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in sorted(flat):
        nbytes = flat[name].nbytes
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][name] = flat[name]
        size += nbytes
    return shards


def write(directory: str | Path, stem: str, stored: Mapping[str, np.ndarray], metadata: Mapping[str, Any],
          *, shard_limit: int = SHARD_LIMIT_BYTES) -> list[dict[str, Any]]:
    """Writes `stored` as one or more safetensors files; returns ``[{"file", "sha256", "bytes"}]``.

    `metadata` (JSON-able) goes into every file's header under ``"jaxdeid"``, so a file
    separated from its manifest still says what it is.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shards = _split(stored, shard_limit)
    names = shard_names(stem, len(shards))
    header = {"jaxdeid": json.dumps(dict(metadata), sort_keys=True), "format": "np"}
    files = []
    for name, shard in zip(names, shards):
        path = directory / name
        tmp = path.with_suffix(".tmp")
        save_file(shard, str(tmp), metadata=header)
        tmp.replace(path)
        files.append({"file": name, "sha256": sha256_of(path), "bytes": path.stat().st_size})
    return files


def read(directory: str | Path, files: list[Mapping[str, Any]]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reads and checks the shards listed in a manifest entry; returns ``(stored, metadata)``.

    Every file's sha256 must match the manifest before a byte of it is trusted.
    """
    directory = Path(directory)
    flat: dict[str, np.ndarray] = {}
    metadata: dict[str, Any] = {}
    for entry in files:
        path = directory / entry["file"]
        if not path.is_file():
            raise StoreError(f"{path}: missing (listed in {directory / 'manifest.json'})")
        digest = sha256_of(path)
        if digest != entry["sha256"]:
            raise StoreError(f"{path}: sha256 {digest[:12]}… does not match the manifest's "
                             f"{entry['sha256'][:12]}… (field 'sha256'): the file is corrupt or was replaced")
        try:
            with safe_open(str(path), framework="np") as f:   # header and tensors in one read
                header = f.metadata() or {}
                flat.update({name: f.get_tensor(name) for name in f.keys()})
        except (SafetensorError, OSError, ValueError) as err:
            raise StoreError(f"{path}: not a readable safetensors file ({err})") from err
        metadata = json.loads(header.get("jaxdeid", "{}"))
    return flat, metadata
