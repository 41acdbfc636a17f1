"""The training loop shared by every network in the project.

A network plugs in as a `Task`: how to build its state, one pure train step, and a
batch function indexed by *data position*. The loop owns everything else: jit,
PRNG handling, Orbax checkpoints (state + step + data position), JSON-lines
metrics (also written as TensorBoard scalars, same folder), a progress bar and resumption.

Resumption is exact: the batch at data position ``p`` is ``task.batch_fn(p)`` (a
pure function of the seed and ``p``) and the step key is ``fold_in(seed_key, step)``,
so a run killed after step k and restarted produces the same losses as one that
never stopped (``tests/test_train_loop.py`` checks this).
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
try:   # a declared dependency; a machine without it (an offline GPU image) still trains, with JSON-lines logs only
    from tensorboardX import SummaryWriter
except ImportError:
    SummaryWriter = None

from ..progress import progress
from .sharding import data_mesh, replicate, shard_batch

State = Any      # a pytree: params, optimiser state(s), EMA weights, ...
Batch = Any
Metrics = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Task:
    """What a network contributes to the shared loop.

    Attributes:
      name: sub-folder of the workdir for checkpoints and logs (e.g. ``light_enhance``).
      init: ``init(key) -> state``.
      train_step: pure ``train_step(state, batch, key) -> (state, metrics)``; jitted by the loop.
      batch_fn: ``batch_fn(data_position) -> batch`` (host numpy arrays), deterministic.
      eval_fn: optional ``eval_fn(state) -> dict of floats``, called every ``eval_every`` steps.
      donate: donate the state buffers to the step (saves memory; off for tests that reuse them).
    """

    name: str
    init: Callable[[jax.Array], State]
    train_step: Callable[[State, Batch, jax.Array], tuple[State, Metrics]]
    batch_fn: Callable[[int], Batch]
    eval_fn: Callable[[State], Mapping[str, float]] | None = None
    donate: bool = True


def _manager(directory: Path, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
    return ocp.CheckpointManager(directory.absolute(), options=options)


def _restore(manager: ocp.CheckpointManager, step: int, abstract_state: State) -> tuple[State, dict]:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["meta"])


def restore_latest(task: Task, workdir: str | Path, seed: int = 0) -> tuple[State, dict] | None:
    """Loads the newest checkpoint of `task` (e.g. a trained network for evaluation), or None."""
    directory = Path(workdir) / task.name / "checkpoints"
    if not directory.exists():
        return None
    manager = _manager(directory, keep=1_000_000)
    step = manager.latest_step()
    if step is None:
        return None
    abstract = jax.eval_shape(task.init, jax.random.PRNGKey(seed))
    out = _restore(manager, step, abstract)
    manager.close()
    return out


def _scalarize(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in metrics.items()}


def _scalar_writer(run_dir: Path, start: int) -> Any:
    """A TensorBoard event writer in `run_dir` for a run resuming after step `start` (None off process 0,
    or without tensorboardX).

    One process writes: several writers in one folder would draw every curve once per process.
    """
    if jax.process_index() != 0 or SummaryWriter is None:
        return None
    # tensorboardX names its file by the second and the host and opens it for writing, so a
    # run resumed within the same second would overwrite the previous file: the suffix keeps
    # every run's file. purge_step: TensorBoard hides the steps after the checkpoint that a
    # killed run had logged before dying; this run logs them again.
    return SummaryWriter(str(run_dir), purge_step=start + 1 if start else None,
                         filename_suffix=f".{uuid.uuid4().hex[:8]}")


def _write_scalars(writer: Any, record: Mapping[str, Any]) -> None:
    """Every number of a metrics record but its step, as a TensorBoard scalar at that step."""
    if writer is None:
        return
    for name, value in record.items():
        if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(name, value, global_step=int(record["step"]))


def run(task: Task, train_cfg, workdir: str | Path, *, seed: int = 0, steps: int | None = None,
        desc: str | None = None, log: Callable[[dict], None] | None = None) -> tuple[State, list[dict]]:
    """Trains `task` up to ``steps`` (default ``train_cfg.steps``), resuming from its latest checkpoint.

    Returns the final state and the metric records written in this call.
    Logs go to ``<workdir>/<task.name>/metrics.jsonl`` and, every number of each record as a
    TensorBoard scalar at its step, to an ``events.out.tfevents.*`` file beside it (a new
    file per call, so a resumed run appends); checkpoints to ``.../checkpoints``.
    """
    total = int(train_cfg.steps if steps is None else steps)
    run_dir = Path(workdir) / task.name
    run_dir.mkdir(parents=True, exist_ok=True)
    manager = _manager(run_dir / "checkpoints", keep=train_cfg.keep_checkpoints)
    seed_key = jax.random.PRNGKey(seed)

    start = manager.latest_step()
    if start is None:
        state = task.init(jax.random.fold_in(seed_key, 0x1A1D))
        start, data_position = 0, 0
    else:
        abstract = jax.eval_shape(task.init, jax.random.fold_in(seed_key, 0x1A1D))
        state, meta = _restore(manager, start, abstract)
        data_position = int(meta["data_position"])

    # Data parallel over every device: batch split along ``data``, state replicated (sharding.py).
    mesh = data_mesh()
    state = replicate(state, mesh)
    step_fn = jax.jit(task.train_step, donate_argnums=(0,) if task.donate else ())
    records: list[dict] = []
    metrics_file = open(run_dir / "metrics.jsonl", "a")
    scalars = _scalar_writer(run_dir, start) if start < total else None   # a finished run logs nothing

    def emit(record: dict) -> None:
        """One metrics record: returned, appended to the JSON lines, and as TensorBoard scalars."""
        records.append(record)
        metrics_file.write(json.dumps(record) + "\n")
        _write_scalars(scalars, record)

    def save(step: int):
        manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            meta=ocp.args.JsonSave({"step": step, "data_position": data_position, "seed": seed})), force=True)
        if scalars is not None:
            scalars.flush()   # what a checkpoint covers is on disk in TensorBoard's file too

    t0 = time.perf_counter()
    # A wall-clock budget (compilation included): the run saves where it is and stops, so a
    # shared machine's deadline costs the steps not taken, never the steps taken since the
    # last periodic checkpoint. Resuming later continues exactly from there.
    max_seconds = float(train_cfg.get("max_seconds", 0) or 0)
    bar = progress(range(start, total), total=total, initial=start, desc=desc or task.name)
    pending: list[tuple[int, Metrics]] = []
    try:
        for step in bar:
            batch = shard_batch(task.batch_fn(data_position), mesh)
            state, metrics = step_fn(state, batch, jax.random.fold_in(seed_key, step))
            data_position += 1
            done = step + 1
            pending.append((done, metrics))
            out_of_time = bool(max_seconds) and time.perf_counter() - t0 > max_seconds
            if done % train_cfg.log_every == 0 or done == total or out_of_time:
                for s, m in pending:  # device->host sync only at log time, keeps the step async
                    emit({"step": s, **_scalarize(m), "time_s": round(time.perf_counter() - t0, 3)})
                pending.clear()
                metrics_file.flush()
                bar.set_postfix({k: f"{v:.4g}" for k, v in records[-1].items() if k not in ("step", "time_s")})
                if log:
                    log(records[-1])
            if task.eval_fn is not None and (done % train_cfg.eval_every == 0 or done == total):
                emit({"step": done, **{f"eval/{k}": float(v) for k, v in task.eval_fn(state).items()}})
                metrics_file.flush()  # a run stopped before the next log step keeps its eval line
            if done % train_cfg.ckpt_every == 0 or done == total or out_of_time:
                save(done)
            if out_of_time and done < total:
                # Written to the log only (not returned): callers read losses from the records.
                metrics_file.write(json.dumps({"step": done, "stopped": f"max_seconds={max_seconds:g}",
                                               "time_s": round(time.perf_counter() - t0, 3)}) + "\n")
                break
        if start >= total and manager.latest_step() is None:
            save(total)
    finally:
        metrics_file.close()
        if scalars is not None:
            scalars.close()   # flushes
        manager.wait_until_finished()
        manager.close()
        bar.close()
    return state, records


@dataclasses.dataclass(frozen=True)
class TrainingReport:
    """What one training call did: each network's `fit` returns it, `jaxdeid train` prints it and
    picks the exit status from it."""

    name: str                          # the task: its folder under the work folder
    workdir: Path
    records: list[dict]                # metric records written by this call (none: already trained)
    steps: int                         # the schedule's length
    outputs: tuple[Path, ...] = ()     # figures written after training (sample grids, reconstructions)

    @property
    def run_dir(self) -> Path:
        return Path(self.workdir) / self.name

    @property
    def losses(self) -> list[float]:
        """The main loss per record: ``loss``, or a GAN's generator loss ``loss_G``."""
        return [float(r["loss"] if "loss" in r else r["loss_G"]) for r in self.records if "loss" in r or "loss_G" in r]

    @property
    def finite(self) -> bool:
        """False when the last record with losses holds a non-finite one (``loss*``: L, L_G, L_D, terms)."""
        with_losses = [r for r in self.records if any(k.startswith("loss") for k in r)]
        if not with_losses:
            return True
        return all(np.isfinite(float(v)) for k, v in with_losses[-1].items() if k.startswith("loss"))

    def summary(self) -> str:
        if not self.records:
            return f"{self.name}: already trained to {self.steps} steps ({self.run_dir})"
        steps = [int(r["step"]) for r in self.records if "step" in r]
        text = f"{self.name}: step {max(steps) if steps else '?'} of {self.steps}"
        if self.losses:
            text += f", loss {self.losses[0]:.4f} -> {self.losses[-1]:.4f}"
        evals = [r for r in self.records if any(k.startswith("eval/") for k in r)]
        if evals:
            text += ", " + ", ".join(f"val {k[5:]} {v:.3f}" for k, v in evals[-1].items() if k.startswith("eval/"))
        text += f"; checkpoints in {self.run_dir / 'checkpoints'}"
        return text + "".join(f"; wrote {path}" for path in self.outputs)


def read_metrics(workdir: str | Path, name: str) -> list[dict]:
    """All records of a task's metrics.jsonl (across resumptions)."""
    path = Path(workdir) / name / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stack_batches(items: Iterable[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    items = list(items)
    return {k: np.stack([it[k] for it in items]) for k in items[0]}


def tree_size(tree) -> int:
    """Number of scalars in a pytree (parameter counts)."""
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def ema_update(ema, new, decay: float):
    return jax.tree_util.tree_map(lambda e, n: decay * e + (1.0 - decay) * n.astype(e.dtype), ema, new)


def zeros_like_tree(tree):
    return jax.tree_util.tree_map(jnp.zeros_like, tree)
