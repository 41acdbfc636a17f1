"""Data-parallel sharding: 4 host-platform devices give the single-device numbers."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np, optax
    from test_train_loop import _regression_task, _cfg
    from jaxdeid.train import run
    from jaxdeid.train.sharding import data_mesh, shard_batch
    cfg = _cfg(6)
    _, records = run(_regression_task(cfg), cfg, {workdir!r})
    batch = shard_batch({{"x": np.ones((8, 3), np.float32)}}, data_mesh())
    print(json.dumps({{"devices": jax.device_count(), "losses": [r["loss"] for r in records],
                      "shards": len(batch["x"].sharding.device_set)}}))
""")


def _run(tmp_path, devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(__file__), env.get("PYTHONPATH")]))
    code = _SCRIPT.format(workdir=str(tmp_path / f"d{devices}"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_four_devices_match_one(tmp_path):
    one, four = _run(tmp_path, 1), _run(tmp_path, 4)
    assert one["devices"] == 1 and four["devices"] == 4
    assert four["shards"] == 4  # the batch really is split over the four devices
    assert one["losses"] == pytest.approx(four["losses"], rel=1e-5, abs=1e-7)


_STEP_SCRIPT = textwrap.dedent("""
    import json
    import jax, numpy as np
    from jaxdeid.configs import get_config
    from jaxdeid.deid.pipeline import quick_random_params, with_face_sized_boxes
    from jaxdeid.deid.step import make_jitted_private_step
    # Every peak a face (score threshold 0) and face-sized boxes: the noise loop runs.
    config = get_config("smoke", ["deid.max_iters=3", "recognizer.judges=('mobilenetv3',)",
                                  "crop.score_threshold=0.0"])
    params = with_face_sized_boxes(quick_random_params(config, "pggan", seed=0), config)
    x = np.random.default_rng(0).uniform(0, 0.3, (4, 64, 64, 3)).astype(np.float32)
    frames, diag = make_jitted_private_step(config, "pggan")(params, x, jax.random.PRNGKey(1), 0.9995)
    np.save({out!r}, np.asarray(frames))
    print(json.dumps({{"devices": jax.device_count(), "shards": len(frames.sharding.device_set),
                      "iterations": np.asarray(diag["iterations"]).tolist()}}))
""")


def test_private_step_sharded_matches_one_device(tmp_path):
    import numpy as np

    results = {}
    for devices in (1, 4):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
        out = tmp_path / f"frames{devices}.npy"
        proc = subprocess.run([sys.executable, "-c", _STEP_SCRIPT.format(out=str(out))], env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[devices] = (json.loads(proc.stdout.strip().splitlines()[-1]), np.load(out))
    (one, frames1), (four, frames4) = results[1], results[4]
    assert four["devices"] == 4 and four["shards"] == 4
    assert one["iterations"] == four["iterations"]
    assert sum(one["iterations"]) > 0, "the comparison must run the noise loop, not only the fallbacks"
    np.testing.assert_allclose(frames1, frames4, atol=2e-4)
