"""The shared training loop: falling loss, checkpoints, exact resumption."""

import dataclasses
import json
import struct
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tensorboardX.proto import event_pb2

from jaxdeid.configs import get_config
from jaxdeid.train import Task, make_optimizer, restore_latest, run


def _regression_task(train_cfg, name="toy"):
    true_w = np.linspace(-1, 1, 8).astype(np.float32)
    optimizer = make_optimizer(train_cfg)

    def init(key):
        params = {"w": jax.random.normal(key, (8,)) * 0.1}
        return {"params": params, "opt_state": optimizer.init(params)}

    def batch_fn(position):
        rng = np.random.default_rng([7, position])  # a pure function of the data position
        x = rng.normal(size=(16, 8)).astype(np.float32)
        return {"x": x, "y": x @ true_w + 0.01 * rng.normal(size=16).astype(np.float32)}

    def train_step(state, batch, key):
        noise = 1e-3 * jax.random.normal(key, (8,))  # uses the step key, so resumption must restore it
        def loss_fn(params):
            return jnp.mean((batch["x"] @ (params["w"] + noise) - batch["y"]) ** 2)
        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state}, {"loss": loss}

    return Task(name=name, init=init, train_step=train_step, batch_fn=batch_fn)


def _cfg(steps):
    cfg = get_config("smoke").light.train
    cfg.steps, cfg.log_every, cfg.ckpt_every, cfg.eval_every, cfg.lr = steps, 1, 5, 5, 0.05
    return cfg


def test_loss_falls(tmp_path):
    _, records = run(_regression_task(_cfg(40)), _cfg(40), tmp_path)
    losses = [r["loss"] for r in records]
    assert len(losses) == 40
    assert losses[-1] < 0.1 * losses[0]


def test_resume_reproduces_uninterrupted_losses(tmp_path):
    cfg = _cfg(20)
    _, straight = run(_regression_task(cfg), cfg, tmp_path / "a")
    _, first = run(_regression_task(cfg), cfg, tmp_path / "b", steps=10)   # "killed" after step 10
    _, rest = run(_regression_task(cfg), cfg, tmp_path / "b")              # restarted
    resumed = [r["loss"] for r in first + rest]
    np.testing.assert_allclose(resumed, [r["loss"] for r in straight], rtol=1e-6, atol=0)
    logged = [json.loads(l)["step"] for l in (tmp_path / "b" / "toy" / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 21))


def test_restore_latest_returns_trained_state(tmp_path):
    cfg = _cfg(10)
    state, _ = run(_regression_task(cfg), cfg, tmp_path)
    restored, meta = restore_latest(_regression_task(cfg), tmp_path)
    assert meta["step"] == 10 and meta["data_position"] == 10
    np.testing.assert_array_equal(restored["params"]["w"], state["params"]["w"])
    assert restore_latest(_regression_task(cfg, name="absent"), tmp_path) is None


def test_max_seconds_saves_and_stops_then_resumes_exactly(tmp_path):
    """A run out of wall-clock budget saves where it stopped; the rest resumes bit-exact."""
    cfg = _cfg(20)
    _, straight = run(_regression_task(cfg), cfg, tmp_path / "a")
    limited = _cfg(20)
    limited.max_seconds = 1e-9   # spent after the first step
    _, first = run(_regression_task(limited), limited, tmp_path / "b")
    assert [r["step"] for r in first] == [1]
    _, meta = restore_latest(_regression_task(cfg), tmp_path / "b")
    assert meta["step"] == 1 and meta["data_position"] == 1
    lines = [json.loads(l) for l in (tmp_path / "b" / "toy" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["stopped"].startswith("max_seconds")
    _, rest = run(_regression_task(cfg), cfg, tmp_path / "b")
    np.testing.assert_allclose([r["loss"] for r in first + rest], [r["loss"] for r in straight], rtol=1e-6, atol=0)


def _events(run_dir):
    """Every TensorBoard event file in `run_dir`, oldest first: {file name: [Event, ...]}.

    The files are TFRecords (8-byte length, 4-byte CRC, the serialized Event, 4-byte CRC);
    tensorboard's reader is not a dependency, tensorboardX's protobuf classes are.
    """
    files = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns):
        data, offset, events = path.read_bytes(), 0, []
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            events.append(event_pb2.Event.FromString(data[offset + 12:offset + 12 + length]))
            offset += 12 + length + 4
        files[path.name] = events
    return files


def _scalars(events):
    """{tag: [(step, value), ...]} of a list of events."""
    scalars = defaultdict(list)
    for event in events:
        for value in event.summary.value:
            scalars[value.tag].append((event.step, value.simple_value))
    return dict(scalars)


def test_tensorboard_scalars_mirror_the_json_lines(tmp_path):
    """Every number of every metrics.jsonl record is a TensorBoard scalar at the record's step."""
    cfg = _cfg(6)
    task = dataclasses.replace(_regression_task(cfg), eval_fn=lambda state: {"w_norm": jnp.linalg.norm(
        state["params"]["w"])})
    run(task, cfg, tmp_path)
    lines = [json.loads(l) for l in (tmp_path / "toy" / "metrics.jsonl").read_text().splitlines()]
    files = _events(tmp_path / "toy")
    assert len(files) == 1
    scalars = _scalars(next(iter(files.values())))
    expected = defaultdict(list)
    for line in lines:
        for name, value in line.items():
            if name != "step":
                expected[name].append((line["step"], value))
    assert set(scalars) == set(expected) == {"loss", "time_s", "eval/w_norm"}
    for name, points in expected.items():
        assert [s for s, _ in scalars[name]] == [s for s, _ in points], name
        np.testing.assert_allclose([v for _, v in scalars[name]], [v for _, v in points], rtol=1e-6, err_msg=name)
    assert [s for s, _ in scalars["loss"]] == list(range(1, 7))
    assert [s for s, _ in scalars["eval/w_norm"]] == [5, 6]


def test_resumed_run_appends_tensorboard_events(tmp_path):
    """A resumed run writes a second events file (same second, same host) and leaves the first intact."""
    cfg = _cfg(6)
    _, first = run(_regression_task(cfg), cfg, tmp_path, steps=3)
    _, rest = run(_regression_task(cfg), cfg, tmp_path)
    files = list(_events(tmp_path / "toy").values())
    assert len(files) == 2
    assert [s for s, _ in _scalars(files[0])["loss"]] == [1, 2, 3]
    assert [s for s, _ in _scalars(files[1])["loss"]] == [4, 5, 6]
    np.testing.assert_allclose([v for _, v in _scalars(files[0])["loss"] + _scalars(files[1])["loss"]],
                               [r["loss"] for r in first + rest], rtol=1e-6)
    # The resumed file hides whatever a killed run had logged after its checkpoint (step 3).
    starts = [e.step for e in files[1] if e.HasField("session_log") and e.session_log.status == e.session_log.START]
    assert starts == [4]
    run(_regression_task(cfg), cfg, tmp_path)   # already finished: no new file
    assert len(_events(tmp_path / "toy")) == 2


def test_training_report_says_what_ran_and_fails_on_a_non_finite_loss(tmp_path):
    """The report `jaxdeid train` prints and picks its exit status from."""
    from jaxdeid.train import TrainingReport

    done = TrainingReport("net", tmp_path, [], 10)
    assert done.finite and "already trained to 10 steps" in done.summary()
    records = [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25, "eval/acc": 0.9}]
    ran = TrainingReport("net", tmp_path, records, 10, (tmp_path / "grid.png",))
    assert ran.finite and "step 2 of 10, loss 0.5000 -> 0.2500, val acc 0.900" in ran.summary()
    assert "grid.png" in ran.summary()
    assert not TrainingReport("net", tmp_path, records + [{"step": 3, "loss": float("nan")}], 10).finite
    gan = [{"step": 1, "loss_G": 1.0, "loss_D": 0.5}, {"step": 2, "loss_G": 0.9, "loss_D": float("nan")}]
    assert not TrainingReport("gan", tmp_path, gan, 10).finite          # a GAN's losses are loss_G / loss_D
    assert "loss 1.0000 -> 0.9000" in TrainingReport("gan", tmp_path, gan[:1] + [{"step": 2, "loss_G": 0.9}], 10).summary()
