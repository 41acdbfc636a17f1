"""`config.deid.compute_dtype="bfloat16"`: the networks of the private step run in bf16.

Smoke preset, batch 2, random networks (`quick_random_params`), one judge, one loop
iteration (the judge threshold is 2.0, which every cosine similarity is below, so both
dtypes take the same path and their frames can be compared pixel for pixel).

Tolerances: bf16 keeps 8 mantissa bits, a relative rounding of 2^-9 ≈ 0.2 % per
operation. Measured on this batch (CPU, jax 0.10.2): private frames differ by at most
0.0024 and 0.0006 on average (in [0, 1]; one uint8 level is 1/255 ≈ 0.0039), the random
judge's cosine similarity by 0.0017 (0.027 with a VGG16 judge added), boxes not at all.
The bounds below are 2 uint8 levels (max), 1/2 level (mean) and 0.02 (similarity): a few
times the measurement, far below what a broken cast would give (a face of noise differs
by ~0.3); a network silently left in float32 would differ by 0, which the last check
catches. (Those similarity numbers are the bf16 judges'; the reported, deciding similarities
of bf16 mode come from float32 judges run once after the loop, see the last test.)
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdeid.configs import get_config
from jaxdeid.deid.pipeline import quick_random_params, with_face_sized_boxes
from jaxdeid.deid.step import cast_floating, make_private_step

OVERRIDES = [
    "recognizer.judges=('mobilenetv3',)",
    "crop.score_threshold=0.0",   # a random detector's scores are ~0.1: count every peak as a face
    "crop.iou_threshold=0.0",     # ... and its peak may move in the released frame: any re-detection counts
    "deid.max_iters=1",
]
THRESHOLD = 2.0  # above every cosine similarity: each sample is done after one iteration


def _config(dtype=None):
    return get_config("smoke", OVERRIDES + ([f"deid.compute_dtype={dtype}"] if dtype else []))


@pytest.fixture(scope="module")
def inputs():
    config = _config()
    params = with_face_sized_boxes(quick_random_params(config, "ours", seed=0), config)
    side = config.data.scene_resolution
    noisy = 0.25 * jax.random.uniform(jax.random.PRNGKey(1), (side, side, 3))
    ramp = jnp.linspace(0.02, 0.2, side)[:, None, None] * jnp.ones((side, side, 3))
    return params, jnp.stack([noisy, ramp]).astype(jnp.float32), jax.random.PRNGKey(7)


def test_float32_is_the_default_and_has_no_bf16(inputs):
    assert get_config("smoke").deid.compute_dtype == "float32"
    params, frames, key = inputs
    f32 = str(jax.make_jaxpr(make_private_step(_config(), "ours"))(params, frames, key))
    bf16 = str(jax.make_jaxpr(make_private_step(_config("bfloat16"), "ours"))(params, frames, key))
    assert "bf16" not in f32                      # the default graph is the plain float32 one
    assert "conv_general_dilated" in bf16 and "bf16[" in bf16


def test_unknown_dtype_is_an_error():
    with pytest.raises(ValueError, match="compute_dtype"):
        make_private_step(_config("float16"), "ours")


def test_cast_floating_leaves_integers_alone():
    tree = {"w": jnp.ones((2,), jnp.float32), "step": jnp.ones((2,), jnp.int32), "flag": True}
    cast = cast_floating(tree, jnp.bfloat16)
    assert cast["w"].dtype == jnp.bfloat16 and cast["step"].dtype == jnp.int32 and cast["flag"] is True


@pytest.fixture(scope="module")
def steps(inputs):
    """Both dtypes' steps, compiled once; ``run(dtype, threshold)`` (the threshold is a run-time
    argument, so every threshold shares the compilation) and their outputs at THRESHOLD."""
    params, frames, key = inputs
    jitted = {dtype: jax.jit(make_private_step(_config(dtype), "ours")) for dtype in ("float32", "bfloat16")}

    def run(dtype, threshold):
        return jax.tree_util.tree_map(np.asarray, jitted[dtype](params, frames, key, jnp.float32(threshold)))

    return {"run": run, "outputs": {dtype: run(dtype, THRESHOLD) for dtype in jitted}}


def test_bf16_step_is_close_to_float32(steps):
    outputs = steps["outputs"]
    (frames32, diag32), (frames16, diag16) = outputs["float32"], outputs["bfloat16"]
    assert frames16.dtype == np.float32 and frames16.shape == frames32.shape
    for name in ("similarities", "private_faces", "latents", "box", "score"):
        assert diag16[name].dtype == diag32[name].dtype == np.float32, name
        assert diag16[name].shape == diag32[name].shape, name
    # Same decisions, so the frames are comparable pixel for pixel.
    for name in ("detected", "valid", "success", "iterations"):
        np.testing.assert_array_equal(diag16[name], diag32[name], err_msg=name)
    assert diag32["success"].all()
    difference = np.abs(frames16 - frames32)
    assert difference.max() < 2 / 255 and difference.mean() < 0.5 / 255, (difference.max(), difference.mean())
    assert difference.max() > 0             # bf16 really ran
    np.testing.assert_allclose(diag16["similarities"], diag32["similarities"], atol=0.02)
    # float32: the deciding similarities are the loop's and the released frame's views (no second judgement).
    np.testing.assert_array_equal(np.maximum(diag32["loop_similarities"], diag32["frame_similarities"]),
                                  diag32["similarities"])


def test_bf16_success_is_decided_by_float32_judges(steps):
    """A face the bf16 judges call private but the float32 judges do not is NOT a success.

    bf16 judges drift from float32 ones (module docstring), so a threshold test on them alone
    would release faces whose float32 similarity is at or a little above the threshold. The
    step re-judges its final faces in float32; a threshold between the two similarities of
    one sample makes the loop stop (bf16 says private) and the decision refuse it.
    """
    _, diag = steps["outputs"]["bfloat16"]
    loop, exact = diag["loop_similarities"][:, 0], diag["similarities"][:, 0]
    assert np.all(np.abs(exact - loop) > 0), (loop, exact)   # the decision really used other (float32) judges
    lenient = np.flatnonzero(loop < exact)                    # samples where bf16 errs on the unsafe side
    assert lenient.size, (loop, exact)
    i = int(lenient[0])
    threshold = float(0.5 * (loop[i] + exact[i]))
    _, decided = steps["run"]("bfloat16", threshold)
    assert decided["loop_similarities"][i, 0] < threshold <= decided["similarities"][i, 0]
    assert decided["iterations"][i] == 1                      # the loop was done with it ...
    assert decided["detected"][i] and decided["valid"][i]      # (a found, valid face: only the judges refuse)
    assert not decided["success"][i] and decided["fallback"][i] and not decided["deidentified"][i]  # ... yet refused
