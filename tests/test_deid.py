"""The private step: fused == staged, the done-mask loop, fail-closed fallbacks, L_A / L_F.

Smoke preset (32 px faces, 64 px frames), batch 2, random networks (shape-exact numpy
weights, `quick_random_params`: compiling seven initialisers would dominate), two
white-box judges. Compilation dominates, so one fused and one staged pipeline are
built per module and the judge threshold is passed at run time (one compile serves
every threshold the tests need).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdeid.crop

from jaxdeid.configs import get_config
from jaxdeid.deid import make_private_step, make_staged_pipeline
from jaxdeid.deid.pipeline import quick_random_params, with_face_sized_boxes
from jaxdeid.deid.losses import finetune_terms, similarity_judgment_loss
from jaxdeid.crop import decode
from jaxdeid.deid.step import make_stages, pixelate



OVERRIDES = [
    "recognizer.judges=('vgg16','mobilenetv3')",
    "crop.score_threshold=0.0",   # a random detector's scores are ~0.1: count every peak as a face
    "deid.max_iters=3",
]


@pytest.fixture(scope="module")
def setup():
    config = get_config("smoke", OVERRIDES)
    params = with_face_sized_boxes(quick_random_params(config, "ours", seed=0), config)
    side = config.data.scene_resolution
    # Two different low-light frames: a dim noisy one and a darker smooth gradient.
    noisy = 0.25 * jax.random.uniform(jax.random.PRNGKey(1), (side, side, 3))
    ramp = jnp.linspace(0.02, 0.2, side)[:, None, None] * jnp.ones((side, side, 3))
    frames = jnp.stack([noisy, ramp]).astype(jnp.float32)
    fused = jax.jit(make_private_step(config, "ours"))
    staged = make_staged_pipeline(config, "ours")
    return {"config": config, "params": params, "frames": frames, "fused": fused, "staged": staged,
            "key": jax.random.PRNGKey(7), "runs": {}}


def run(setup, which, threshold):
    """Cached runs: each (pipeline, threshold) is computed once per module."""
    cache = setup["runs"]
    if (which, threshold) not in cache:
        fn = setup[which]
        out = fn(setup["params"], setup["frames"], setup["key"], jnp.float32(threshold) if which == "fused"
                 else threshold)
        cache[(which, threshold)] = jax.tree_util.tree_map(np.asarray, out)
    return cache[(which, threshold)]


def assert_same(a, b):
    frames_a, diag_a = a
    frames_b, diag_b = b
    np.testing.assert_allclose(frames_a, frames_b, atol=2e-4)
    for name in ("iterations", "detected", "multiple_faces", "valid", "deidentified", "success", "fallback"):
        np.testing.assert_array_equal(diag_a[name], diag_b[name], err_msg=name)
    for name in ("similarities", "loop_similarities", "box", "score", "second_score", "latents", "private_faces"):
        np.testing.assert_allclose(diag_a[name], diag_b[name], atol=2e-4, err_msg=name)


def test_everything_done_after_one_step(setup):
    """Threshold 2 (> any cosine): every face is rejected at once; one noise step each."""
    frames, diag = run(setup, "fused", 2.0)
    config = setup["config"]
    np.testing.assert_array_equal(diag["iterations"], [1, 1])
    assert diag["deidentified"].all()
    assert not diag["multiple_faces"].any()     # (with_face_sized_boxes' boxes leave no cell outside)
    # w <- w + s_0 n with n drawn from fold_in(key, 0) (SPEC §4.6).
    noise = np.asarray(jax.random.normal(jax.random.fold_in(setup["key"], 0), diag["latents"].shape))
    np.testing.assert_allclose(diag["latents"], diag["initial_latents"] + config.deid.sigma_start * noise,
                               atol=1e-5)
    assert_same((frames, diag), run(setup, "staged", 2.0))


def test_cap_means_failure_and_fallback(setup):
    """Threshold −2 (< any cosine): nothing is ever rejected -> cap, failure, pixelated fallback."""
    frames, diag = run(setup, "fused", -2.0)
    config = setup["config"]
    np.testing.assert_array_equal(diag["iterations"], [config.deid.max_iters] * 2)
    assert not diag["deidentified"].any() and not diag["success"].any() and diag["fallback"].all()
    inputs = np.asarray(setup["frames"])
    for i in range(2):
        assert not np.array_equal(frames[i], inputs[i])
        # Inside the face box the output is the block-pixelated input, not the original face and
        # not the generated one.
        y0, x0, y1, x1 = (np.asarray(diag["box"][i]) * inputs.shape[1]).round().astype(int)
        face_in, face_out = inputs[i, y0:y1, x0:x1], frames[i, y0:y1, x0:x1]
        if face_in.size:
            assert np.abs(face_out - face_in).mean() > 1e-3 or face_in.std() < 1e-3
    assert_same((frames, diag), run(setup, "staged", -2.0))


def test_done_samples_are_frozen_and_fused_matches_staged(setup):
    """A threshold between the two samples' first-step similarities: one is done after one
    step (latents frozen there), the other keeps going; fused and staged agree."""
    _, first = run(setup, "fused", 2.0)
    worst = first["similarities"].max(axis=1)        # what must fall below the threshold
    low, high = int(np.argmin(worst)), int(np.argmax(worst))
    assert worst[high] - worst[low] > 1e-4, f"the two samples are too alike to split: {worst}"
    threshold = float(0.5 * (worst[low] + worst[high]))
    frames, diag = run(setup, "fused", threshold)
    assert diag["iterations"][low] == 1 and diag["deidentified"][low]
    assert diag["iterations"][high] > 1
    assert (diag["iterations"] <= setup["config"].deid.max_iters).all()
    np.testing.assert_array_equal(diag["latents"][low], first["latents"][low])
    np.testing.assert_array_equal(diag["private_faces"][low], first["private_faces"][low])
    assert not np.array_equal(diag["latents"][high], first["latents"][high])
    assert_same((frames, diag), run(setup, "staged", threshold))


@pytest.fixture(scope="module")
def finish():
    """The finish stage alone (paste back / fallbacks), jitted once for the two tests below."""
    config = get_config("smoke", OVERRIDES + ["crop.score_threshold=0.5"])
    stages = make_stages(config, "pggan")
    return config, stages, jax.jit(stages.finish)


def test_no_face_blurs_the_whole_frame(finish):
    """No face -> whole frame pixelated; success -> face pasted back."""
    config, stages, finish_fn = finish
    side, res = config.data.scene_resolution, config.data.resolution
    frames = jax.random.uniform(jax.random.PRNGKey(3), (2, side, side, 3))
    boxes = jnp.asarray([[0.3, 0.3, 0.7, 0.7]] * 2, jnp.float32)
    faces = jnp.full((2, res, res, 3), 0.5)
    out, flags = finish_fn(frames, boxes, jnp.asarray([0.1, 0.9]), jnp.zeros((2,)), faces, faces,
                           jnp.asarray([True, True]))
    out, frames = np.asarray(out), np.asarray(frames)
    assert not flags["detected"][0] and flags["fallback"][0] and not flags["success"][0]
    cells = config.deid.fallback_frame_cells
    block = side // cells
    # Pixelated: constant within each block, and nowhere equal to the input frame.
    np.testing.assert_allclose(out[0, :block, :block], out[0, 0, 0] * np.ones((block, block, 3)), atol=1e-6)
    assert np.abs(out[0] - frames[0]).mean() > 0.05
    assert flags["success"][1] and not flags["fallback"][1]
    np.testing.assert_allclose(out[1, side // 2, side // 2], 0.5, atol=1e-5)    # the private face
    np.testing.assert_array_equal(out[1, 0, 0], frames[1, 0, 0])               # outside: untouched
    # A confident but degenerate (3 px) box is not a face: whole-frame fallback too.
    tiny = jnp.asarray([[0.5, 0.5, 0.5 + 3 / side, 0.5 + 3 / side]], jnp.float32)
    assert not bool(stages.found(tiny, jnp.asarray([0.99]), jnp.asarray([0.0]))[0])


def test_nan_or_dark_faces_are_not_valid(finish):
    config, _, finish_fn = finish
    side, res = config.data.scene_resolution, config.data.resolution
    frames = jnp.full((2, side, side, 3), 0.2)
    faces = jnp.full((2, res, res, 3), 0.2).at[0, 3, 3, 0].set(jnp.nan).at[1].set(0.01)   # NaN; too dark
    out, flags = finish_fn(frames, jnp.asarray([[0.3, 0.3, 0.7, 0.7]] * 2), jnp.asarray([0.9, 0.9]), jnp.zeros((2,)),
                           faces, jnp.full((2, res, res, 3), 0.2), jnp.asarray([True, True]))
    assert not np.asarray(flags["valid"]).any() and np.asarray(flags["fallback"]).all()
    assert np.isfinite(np.asarray(out)).all()
    # The fallback really replaced the face square: pixelating a flat frame keeps it flat,
    # so check the flags, and that no NaN leaked into the frame.
    assert np.asarray(flags["detected"]).all() and not np.asarray(flags["success"]).any()


def test_decode_reports_the_best_score_outside_the_face_square():
    grid = 16
    logits = np.full((3, grid, grid, 1), -6.0, np.float32)
    logits[0, 4, 4], logits[0, 12, 12] = 5.0, 4.6     # two faces far apart
    logits[1, 4, 4], logits[1, 5, 5] = 5.0, 4.0       # one face; a neighbouring cell of its own peak
    logits[2, 4, 4], logits[2, 7, 4] = 5.0, 2.0       # one face; a weak peak just outside its box
    heads = {"heatmap_logits": jnp.asarray(logits), "size": jnp.full((3, grid, grid, 2), 4.0),   # 4-cell boxes
             "offset": jnp.full((3, grid, grid, 2), 0.5)}
    boxes, scores = decode(heads)                       # the one-face form is unchanged
    boxes_m, scores_m, second = decode(heads, exclusion_margin=0.1)
    np.testing.assert_array_equal(boxes, boxes_m)
    np.testing.assert_array_equal(scores, scores_m)
    sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))
    # Square around the box centre (4.5, 4.5) cells, side 1.2 * 4 = 4.8: cells 2..6 are inside.
    np.testing.assert_allclose(second, [sigmoid(4.6), sigmoid(-6.0), sigmoid(2.0)], rtol=1e-5)
    # A wider margin (side 8: cells 1..8) swallows the weak peak at row 7.
    np.testing.assert_allclose(decode(heads, exclusion_margin=0.5)[2][2], sigmoid(-6.0), rtol=1e-5)


class BrightCellDetector(nn.Module):
    """Test double for the face detector: a confident heat-map peak on every bright 4x4 cell.

    Returns the real detector's heads (stride 4) so the step's own decoding runs on them;
    every box is a quarter of the frame a side.
    """

    @nn.compact
    def __call__(self, images, train: bool = False):
        batch, height, width, _ = images.shape
        grid_h, grid_w = height // 4, width // 4
        cells = images.mean(-1).reshape(batch, grid_h, 4, grid_w, 4).mean(axis=(2, 4))
        return {"heatmap_logits": (40.0 * (cells - 0.5))[..., None],
                "size": jnp.full((batch, grid_h, grid_w, 2), 0.25 * grid_h),
                "offset": jnp.full((batch, grid_h, grid_w, 2), 0.5)}


def test_second_face_pixelates_the_whole_frame(monkeypatch):
    """Detect + finish on a frame with two faces (two confident peaks) and one with one face."""
    monkeypatch.setattr(jaxdeid.crop, "make_detector", lambda config: BrightCellDetector())
    config = get_config("smoke", OVERRIDES + ["crop.score_threshold=0.5"])
    stages = make_stages(config, "pggan")
    side, res = config.data.scene_resolution, config.data.resolution
    frames = 0.1 + 0.05 * np.asarray(jax.random.uniform(jax.random.PRNGKey(4), (2, side, side, 3)))
    frames[:, 12:20, 12:20] = 0.9            # a face in both frames (peak cell (3, 3))
    frames[0, 44:52, 44:52] = 0.9            # a second face in frame 0, far outside the first's square
    faces = jnp.full((2, res, res, 3), 0.5)

    @jax.jit
    def detect_and_finish(frames):
        boxes, scores, second = stages.detect({"detector": {}}, frames)
        out, flags = stages.finish(frames, boxes, scores, second, faces, faces, jnp.asarray([True, True]))
        return out, flags, second

    out, flags, second = jax.tree_util.tree_map(np.asarray, detect_and_finish(jnp.asarray(frames, jnp.float32)))
    assert second[0] > 0.99 and second[1] < 1e-3, second
    # Two faces: not a success, flagged, and the whole frame pixelated (the second face too).
    assert flags["multiple_faces"][0] and not flags["detected"][0]
    assert not flags["success"][0] and flags["fallback"][0]
    np.testing.assert_allclose(out[0], np.asarray(pixelate(jnp.asarray(frames[:1]),
                                                           config.deid.fallback_frame_cells))[0], atol=1e-6)
    assert np.abs(out[0, 44:52, 44:52] - frames[0, 44:52, 44:52]).min() > 0.05
    # One face: unaffected by the check, the private face pasted, the rest of the frame untouched.
    assert not flags["multiple_faces"][1] and flags["detected"][1] and flags["success"][1]
    np.testing.assert_allclose(out[1, 16, 16], 0.5, atol=1e-5)
    np.testing.assert_array_equal(out[1, 40:, 40:], frames[1, 40:, 40:])


def test_fused_and_staged_refuse_frames_with_a_second_face(setup):
    """Every heat-map cell confident (bias +20): each frame has a 'second face' -> no noise loop,
    whole-frame fallback, in the fused step and its staged twin alike."""
    params = setup["params"]
    detector = dict(params["detector"]["params"])
    detector["heatmap"] = {**detector["heatmap"], "bias": jnp.full((1,), 20.0, jnp.float32)}
    # Boxes ~0.4 of the frame (the size head's output is a fraction of the frame, rescaled to
    # cells by the model), so cells outside the face square exist.
    detector["size"] = {**detector["size"], "bias": jnp.full((2,), 0.4, jnp.float32)}
    params = {**params, "detector": {**params["detector"], "params": detector}}
    fused = jax.tree_util.tree_map(np.asarray, setup["fused"](params, setup["frames"], setup["key"],
                                                              jnp.float32(2.0)))
    frames, diag = fused
    assert diag["multiple_faces"].all() and not diag["detected"].any()
    assert not diag["success"].any() and diag["fallback"].all()
    np.testing.assert_array_equal(diag["iterations"], [0, 0])
    assert np.isnan(diag["similarities"]).all()
    assert (diag["second_score"] > 0.99).all() and (diag["box"][:, 2:] - diag["box"][:, :2] < 0.6).all()
    expected = np.asarray(pixelate(setup["frames"], setup["config"].deid.fallback_frame_cells))
    np.testing.assert_allclose(frames, expected, atol=1e-6)
    assert_same(fused, jax.tree_util.tree_map(np.asarray, setup["staged"](params, setup["frames"], setup["key"], 2.0)))


def test_similarity_judgment_loss_and_lf():
    refs = jnp.asarray([[[1.0, 0.0]], [[0.0, 1.0]]])          # [J=2, B=1, E=2]
    same = refs
    orthogonal = jnp.asarray([[[0.0, 1.0]], [[1.0, 0.0]]])
    assert float(similarity_judgment_loss(same, refs, 0.3, 0.1)) == pytest.approx(0.8)   # relu(1 - 0.2)
    assert float(similarity_judgment_loss(orthogonal, refs, 0.3, 0.1)) == 0.0
    images = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 3))
    logits = jnp.asarray([0.3, -1.2])
    terms = finetune_terms(fake_logits=logits, real_logits=-logits, r1=0.0, r1_gamma=0.0, private=images,
                           original=images, reconstruction=images, private_embeddings=same,
                           original_embeddings=refs, threshold=0.3, la_margin=0.1, chi=(1.0, 0.5, 0.3, 0.1))
    assert float(terms["L_s"]) == pytest.approx(0.0, abs=1e-5) and float(terms["L_C"]) == 0.0
    expected = terms["L_G"] + terms["L_D"] + 0.5 * terms["L_s"] + 0.3 * terms["L_A"] + 0.1 * terms["L_C"]
    assert float(terms["L_F"]) == pytest.approx(float(expected))
    # The sign note: with chi_1 = 1 the fake-logit terms of the printed L_G and L_D cancel.
    grad = jax.grad(lambda f: finetune_terms(
        fake_logits=f, real_logits=-logits, r1=0.0, r1_gamma=0.0, private=images, original=images,
        reconstruction=images, private_embeddings=same, original_embeddings=refs, threshold=0.3,
        la_margin=0.1, chi=(1.0, 0.5, 0.3, 0.1))["L_F"])(logits)
    np.testing.assert_allclose(grad, 0.0, atol=1e-7)


def test_lf_finetuning_fails_closed_without_trained_networks(tmp_path):
    """`jaxdeid train deid` never fine-tunes a random generator against random judges unless
    asked to: it fails naming the command that trains what is missing."""
    from jaxdeid.deid.losses import make_task

    config = get_config("smoke", [f"workdir={tmp_path}"])
    with pytest.raises(FileNotFoundError, match="jaxdeid train gan --arch stylegan2"):
        make_task(config)
    assert make_task(config, allow_untrained=True).name == "deid_finetune"
