"""Operations of the weights store on the project's networks: export, verify, status.

`jaxdeid.store` holds the format and the resolution rule; `jaxdeid.components` knows
each network kind. This module joins them: it exports a trained checkpoint with what
it measured on the stored weights (figure, storage error), verifies shipped files
against the current config, and lists every network of a preset with its status.
``jaxdeid weights`` (jaxdeid/commands/weights.py) is its command line.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from .components import PROBE_COUNT, Entry, store_entries
from .results import device_description, git_commit
from .store import (StoreError, abstract_inference, export, fingerprint, load_shipped, read_manifest, round_trip,
                    shapes_of, storage_error, store_dir)
from .store.fileformat import stored_bytes
from .train import restore_latest
from .train.loop import read_metrics, tree_size


def training_wall_s(workdir: str, task_name: str) -> float:
    """Training wall time summed over resumptions (each run's clock restarts at 0 in metrics.jsonl)."""
    total, last = 0.0, 0.0
    for record in read_metrics(workdir, task_name):
        if "time_s" not in record:      # evaluation lines carry no clock
            continue
        t = float(record["time_s"])
        if t < last:
            total += last
        last = t
    return round(total + last, 1)


def figure_value(record: dict | None) -> float | None:
    figure = (record or {}).get("figure") or {}
    return figure.get("value")


def figure_better(old: dict, new: dict) -> bool:
    """True when the shipped entry's figure beats the new one.

    Only comparable entries count: the same shapes (fingerprint) and the same figure. A
    shipped network that no longer fits the config, or was measured on another figure,
    never blocks its replacement.
    """
    before, after = figure_value(old), figure_value(new)
    if before is None or after is None or old.get("fingerprint") != new.get("fingerprint"):
        return False
    if (old.get("figure") or {}).get("name") != (new.get("figure") or {}).get("name"):
        return False
    higher = bool((new.get("figure") or {}).get("higher_is_better", True))
    return before > after if higher else before < after


def export_entry(entry: Entry, *, force: bool = False, device: str | None = None) -> dict:
    """Exports one network from its workdir checkpoint; returns its manifest record."""
    config, task = entry.config, entry.task()
    restored = restore_latest(task, config.workdir, seed=int(config.seed))
    if restored is None:
        raise FileNotFoundError(f"{entry.name}: no checkpoint under {Path(config.workdir) / task.name}; "
                                f"train it first: {entry.train_command}")
    state, meta = restored
    evaluate = None
    if entry.figure and task.eval_fn is not None:
        evaluate = lambda stored: task.eval_fn(entry.component.merge(state, stored))  # noqa: E731
    return export_variables(entry, entry.component.inference(state), step=int(meta.get("step", 0)),
                            evaluate=evaluate, force=force, device=device,
                            train_wall_s=training_wall_s(config.workdir, task.name),
                            final_train_loss=final_train_loss(config.workdir, task.name))


def final_train_loss(workdir: str, task_name: str) -> float | None:
    """Mean training loss over the last 5 % of logged steps (the latest value of a step that was redone)."""
    by_step = {r["step"]: r["loss"] for r in read_metrics(workdir, task_name) if "loss" in r}
    if not by_step:
        return None
    tail = max(1, max(by_step) // 20)
    return float(np.mean([loss for step, loss in by_step.items() if step > max(by_step) - tail]))


def export_variables(entry: Entry, variables, *, step: int, evaluate=None, force: bool = False,
                     device: str | None = None, train_wall_s: float | None = None,
                     final_train_loss: float | None = None) -> dict:
    """Measures `variables` as stored (figure by `evaluate(stored)`, probe error) and writes them to the store."""
    config = entry.config
    codec = str(config.weights_codec)
    stored = round_trip(variables, codec)
    figure = None
    if evaluate is not None:
        scores = evaluate(stored)
        figure = {"name": entry.figure, "value": float(scores[entry.figure]), "target": entry.target,
                  "split": "val", "higher_is_better": entry.component.higher_is_better,
                  "measured_on": f"stored ({codec}) weights", "all": {k: float(v) for k, v in scores.items()}}
    probe = jax.jit(lambda v: entry.component.probe(config, entry.arch, v))
    error = storage_error(np.asarray(probe(variables)), np.asarray(probe(stored)))
    record = {
        "kind": entry.component.kind, "architecture": entry.arch or entry.component.kind,
        "fingerprint": fingerprint(variables), "parameters": tree_size(variables),
        "storage_error": {**error, "probe": f"{PROBE_COUNT} fixed smooth random inputs (jaxdeid.components)"},
        "steps": {"done": int(step), "planned": int(_train_section(entry).steps)},
        "figure": figure, "git_commit": git_commit(), "device": device or device_description(),
        "train_wall_s": train_wall_s, "final_train_loss": final_train_loss, "seed": int(config.seed),
        "train_command": entry.train_command,
    }
    return export(config, entry.name, variables, record, figure_better=figure_better, codec=codec, force=force)


def _train_section(entry: Entry):
    config, kind = entry.config, entry.component.kind
    return {"enhance": config.light.train, "attenuate": config.light.train, "crop": config.crop.train,
            "gan": config.gan.train, "encoder": config.encoder.train, "recognizer": config.recognizer.train,
            "deid": config.deid.train}[kind]


def verify_entry(entry: Entry) -> dict:
    """Loads one shipped network with every check `resolve` makes; returns its manifest record."""
    shipped = load_shipped(entry.config, entry.name,
                           abstract_inference(entry.task(), entry.component.inference, int(entry.config.seed)))
    if shipped is None:
        raise StoreError(f"{entry.name}: not in the {entry.config.preset} store")
    return shipped[1]


def status_rows(config) -> list[dict]:
    manifest = read_manifest(store_dir(config)).get("networks", {})
    rows = []
    for entry in store_entries(config):
        task_dir = Path(entry.config.workdir) / entry.task().name / "checkpoints"
        shipped = manifest.get(entry.name)
        local = task_dir.is_dir() and any(p.name.isdigit() for p in task_dir.iterdir())
        row = {"network": entry.name, "status": "shipped" if shipped else ("local checkpoint" if local else "missing"),
               "local_checkpoint": local, "target": entry.target, "figure_name": entry.figure}
        if shipped:
            figure = shipped.get("figure") or {}
            row.update(steps=shipped["steps"], figure=figure_value(shipped), parameters=shipped["parameters"],
                       bytes=sum(f["bytes"] for f in shipped["files"]),
                       figure_name=figure.get("name", row["figure_name"]), target=figure.get("target", row["target"]))
        else:
            abstract = abstract_inference(entry.task(), entry.component.inference, int(entry.config.seed))
            row.update(steps={"done": 0, "planned": int(_train_section(entry).steps)}, figure=None,
                       parameters=tree_size(abstract), train_command=entry.train_command,
                       bytes=stored_bytes(shapes_of(abstract), str(config.weights_codec)))
        rows.append(row)
    return rows


