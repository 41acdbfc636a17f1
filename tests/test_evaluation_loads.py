"""jaxdeid.reproduce.common restores each shared network once per process (fig5/fig6/table3/grids speed).

The checkpoint reader is replaced by a counter that hands out tiny numpy "variables", so
the test needs no trained network and no compilation: it checks that evaluating several
methods reads the detector, the light networks and the judges once, the per-method
encoder/generator once per method, and that the params are exactly what
`jaxdeid.deid.pipeline.load_params` returns.
"""

import collections

import numpy as np
import pytest

from jaxdeid.configs import get_config
from jaxdeid.deid import pipeline
from jaxdeid.deid.pipeline import load_params
from jaxdeid.reproduce import common


@pytest.fixture
def counted_loads(monkeypatch):
    calls = collections.Counter()

    def fake_load_one(config, method, name):
        key = name if name not in ("encoder", "generator") else f"{method}:{name}"
        calls[key] += 1
        # Shared networks must not depend on the method; per-method ones do.
        return {"w": np.full((2,), float(sum(map(ord, key))), np.float32)}

    monkeypatch.setattr(pipeline, "_load_one", fake_load_one)
    monkeypatch.setattr(common, "_SHARED_NETWORKS", {})
    monkeypatch.setattr(common, "_PARAMS_MEMO", {})
    return calls


def _flat(params):
    import jax

    return [(jax.tree_util.keystr(p), np.asarray(v).tolist()) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]]


def test_shared_networks_are_restored_once(counted_loads, tmp_path):
    config = get_config("smoke")
    config.workdir = str(tmp_path)
    methods = ("ours", "pggan", "stylegan2")
    loaded = {m: common._load_networks(config, m, allow_untrained=False) for m in methods}
    for judge in config.recognizer.judges:
        assert counted_loads[f"judges/{judge}"] == 1
    assert counted_loads["detector"] == 1 and counted_loads["enhance"] == 1 and counted_loads["attenuate"] == 1
    for m in methods:
        assert counted_loads[f"{m}:encoder"] == 1 and counted_loads[f"{m}:generator"] == 1
    # Same pytree (keys, order and values) as a plain full load.
    for m in methods:
        params, missing = loaded[m]
        expected, expected_missing = load_params(config, m)
        assert missing == expected_missing == []
        assert list(params) == list(expected) and list(params["judges"]) == list(expected["judges"])
        assert _flat(params) == _flat(expected)


def test_missing_networks_are_not_memoised(counted_loads, monkeypatch, tmp_path):
    """A network without a checkpoint is looked up again next time (it may have been trained since)."""
    config = get_config("smoke")
    config.workdir = str(tmp_path)
    real = pipeline._load_one

    def detector_missing(config, method, name):
        if name == "detector":
            counted_loads["detector_tries"] += 1
            raise FileNotFoundError("no detector")
        return real(config, method, name)

    monkeypatch.setattr(pipeline, "_load_one", detector_missing)
    with pytest.raises(FileNotFoundError, match="jaxdeid train crop"):
        common._load_networks(config, "pggan", allow_untrained=False)
    with pytest.raises(FileNotFoundError):
        common._load_networks(config, "stylegan1", allow_untrained=False)
    assert counted_loads["detector_tries"] == 2
