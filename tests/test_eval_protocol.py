"""The evaluation protocol's padded-batch runner (shared by the evaluation and `jaxdeid deidentify`)."""

from __future__ import annotations

import numpy as np

from jaxdeid.eval.protocol import run_padded


def test_run_padded_calls_one_shape_and_drops_the_padding():
    seen = []

    def fn(x):
        seen.append(x.shape)
        return {"double": 2 * x, "sum": x.sum(axis=1)}

    inputs = np.arange(14, dtype=np.float32).reshape(7, 2)
    pieces = run_padded(fn, inputs, 3)
    assert seen == [(3, 2)] * 3                          # 7 rows: 3 + 3 + (1 real + 2 padding)
    double = np.concatenate([p["double"] for p in pieces])
    np.testing.assert_array_equal(double, 2 * inputs)     # padding rows dropped, order kept
    np.testing.assert_array_equal(np.concatenate([p["sum"] for p in pieces]), inputs.sum(axis=1))
    assert [len(p["sum"]) for p in pieces] == [3, 3, 1]
