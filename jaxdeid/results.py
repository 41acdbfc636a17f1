"""The one results writer: every figure in results/ goes through here with provenance.

Provenance = git commit, preset, seed, device, library versions and wall time
(STYLE.md). Metric results are also appended as JSON lines to
``results/history.jsonl`` so a reviewer can see every run, not only the last.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np
from PIL.PngImagePlugin import PngInfo

_LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "dm-pix", "tensorflow-datasets")


# The source files whose digest stands for "the tree that ran" (`source_digest`).
_SOURCE_FOLDERS = ("jaxdeid", "reproduce", "benchmarks")
_SOURCE_SUFFIXES = (".py", ".sh", ".toml")


def source_digest(root: str | os.PathLike | None = None) -> str:
    """sha256 over the project's source files (path and content, sorted): the code that runs.

    A copy of the tree without ``.git`` (a GPU machine) cannot name its commit; the
    shipping script passes the commit and this digest of the committed tree
    (``JAXDEID_GIT_COMMIT``, ``JAXDEID_SOURCE_SHA256``), and `git_commit` checks the digest
    against the files that actually run.
    """

    root = Path(root) if root else Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    files = sorted(p for folder in _SOURCE_FOLDERS if (root / folder).is_dir()
                   for p in (root / folder).rglob("*") if p.is_file() and p.suffix in _SOURCE_SUFFIXES
                   and "__pycache__" not in p.parts)
    for path in files + ([root / "pyproject.toml"] if (root / "pyproject.toml").is_file() else []):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """The current commit, with ``+dirty`` when the work tree has uncommitted changes.

    A copy of the tree without ``.git`` (e.g. one shipped to a remote GPU machine) takes
    the commit from ``JAXDEID_GIT_COMMIT``, which the shipping script sets together with
    ``JAXDEID_SOURCE_SHA256``; when the files that run do not have that digest the commit
    reads ``<commit>+mismatch`` (and without a digest ``<commit>+unverified``), which no
    published result may carry (tests/test_provenance.py).
    """
    if os.environ.get("JAXDEID_GIT_COMMIT"):
        commit = os.environ["JAXDEID_GIT_COMMIT"]
        expected = os.environ.get("JAXDEID_SOURCE_SHA256")
        if not expected:
            return commit + "+unverified"
        return commit if expected == source_digest(cwd) else commit + "+mismatch"
    try:
        root = cwd or Path(__file__).resolve().parent.parent
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        # Dirty means the code differs from the commit. Result files (results/) and shipped
        # weights (jaxdeid/store/shipped/, recorded by sha256 wherever they are used) are what
        # the tools write, so a run that regenerates tracked ones stays clean.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results", ":(exclude)jaxdeid/store/shipped"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def device_description() -> str:
    """E.g. ``cpu x2 (x86_64)`` or ``NVIDIA H200 x1``."""

    devices = jax.devices()
    kind = devices[0].device_kind if devices else "none"
    if devices and devices[0].platform == "cpu":
        return f"cpu ({platform.machine()}, {os.cpu_count()} cores) x{len(devices)}"
    return f"{kind} x{len(devices)}"


# Which trained weights this process used, by store name (filled by `jaxdeid.store.resolve`).
_WEIGHTS_USED: dict[str, dict[str, Any]] = {}


def record_weights(name: str, source: Mapping[str, Any]) -> None:
    """Notes that network `name` was loaded from `source` (a checkpoint path and step, or sha256s)."""
    _WEIGHTS_USED[name] = dict(source)


def weights_used() -> dict[str, dict[str, Any]]:
    """Every trained network this process loaded so far, and where from."""
    return {name: dict(source) for name, source in sorted(_WEIGHTS_USED.items())}


def command_line(argv: list[str] | None = None) -> str:
    """The command that is running, as a user would type it: a module of this package run with
    ``python -m`` is named by its module (``python3 -m jaxdeid.reproduce.light ...``), not by the
    path of the checkout it happened to run from."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]) if argv else Path()
    package = Path(__file__).resolve().parent
    if script.suffix == ".py" and script.resolve().is_relative_to(package):
        module = ".".join(("jaxdeid",) + script.resolve().relative_to(package).with_suffix("").parts)
        argv = ["-m", module.removesuffix(".__main__")] + argv[1:]
    return shlex.join([Path(sys.executable).name, *argv])


def provenance(preset: str, seed: int, wall_s: float, **extra: Any) -> dict[str, Any]:
    return {
        "git_commit": git_commit(),
        "preset": preset,
        "seed": int(seed),
        "device": device_description(),
        "versions": library_versions(),
        # XLA settings change the last bits of every number (jaxdeid/xla_settings.py).
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "wall_s": round(float(wall_s), 3),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        # The process's own command line: a run with --set overrides says so in its result.
        "command": command_line(),
        "weights": weights_used(),
        **extra,
    }


def _to_builtin(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _to_builtin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_builtin(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = np.asarray(value).tolist()
        return _to_builtin(value) if isinstance(value, list) else value
    if isinstance(value, float) and not np.isfinite(value):
        return None if np.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def write_json(path: str | os.PathLike, payload: Mapping[str, Any], *, history: bool = True) -> Path:
    """Writes `payload` (which must hold a ``provenance`` key) as pretty JSON.

    Also appends one line to ``history.jsonl`` beside it, so earlier runs are kept.
    """
    if "provenance" not in payload:
        raise ValueError(f"{path}: every result needs a 'provenance' entry")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _to_builtin(payload)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a file
    if history:
        with open(path.parent / "history.jsonl", "a") as f:
            f.write(json.dumps({"file": path.name, **data}, sort_keys=False) + "\n")
    return path


def write_markdown(path: str | os.PathLike, body: str, prov: Mapping[str, Any]) -> Path:
    """Writes a Markdown page ending with its provenance block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    versions = ", ".join(f"{k} {v}" for k, v in prov.get("versions", {}).items())
    footer = (
        "\n\n---\n"
        f"*Provenance:* commit `{prov.get('git_commit')}`, preset `{prov.get('preset')}`, seed {prov.get('seed')}, "
        f"device {prov.get('device')}, wall time {prov.get('wall_s')} s, {prov.get('date', '')}.  \n"
        f"*Versions:* {versions}.\n"
    )
    path.write_text(body.rstrip() + footer)
    return path


def write_png(path: str | os.PathLike, image, prov: Mapping[str, Any] | None) -> Path:
    """Writes an image to PNG with its provenance as a text chunk (``provenance``, JSON).

    ``image`` is a PIL image or a matplotlib figure (saved as drawn; the caller closes it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_to_builtin(dict(prov))) if prov else None
    if hasattr(image, "savefig"):
        image.savefig(path, metadata={"provenance": text} if text else None)
    else:
        info = PngInfo()
        if text:
            info.add_text("provenance", text)
        image.save(path, pnginfo=info)
    return path


def markdown_table(header: list[str], rows: list[list[Any]], floatfmt: str = ".3f") -> str:
    def fmt(v):
        if isinstance(v, float):
            return format(v, floatfmt)
        return "—" if v is None else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
