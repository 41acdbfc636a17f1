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
    for name in ("iterations", "detected", "multiple_faces", "valid", "redetected", "deidentified", "success",
                 "fallback", "replaced_mask"):
        np.testing.assert_array_equal(diag_a[name], diag_b[name], err_msg=name)
    for name in ("similarities", "loop_similarities", "frame_similarities", "box", "score", "second_score",
                 "released_box", "latents", "private_faces"):
        np.testing.assert_allclose(diag_a[name], diag_b[name], atol=2e-4, err_msg=name)


def test_everything_done_after_one_step(setup):
    """Threshold 2 (> any cosine): every face is rejected at once; one noise step each."""
    frames, diag = run(setup, "fused", 2.0)
    config = setup["config"]
    np.testing.assert_array_equal(diag["iterations"], [1, 1])
    assert diag["deidentified"].all()
    assert not diag["multiple_faces"].any()     # (with_face_sized_boxes' boxes leave no cell outside)
    # w <- w + s_0 n with n drawn from fold_in(key, 0) (docs/method.md §4.6).
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
    worst = first["loop_similarities"].max(axis=1)   # what the loop must bring below the threshold
    low, high = int(np.argmin(worst)), int(np.argmax(worst))
    assert worst[high] - worst[low] > 1e-4, f"the two samples are too alike to split: {worst}"
    threshold = float(0.5 * (worst[low] + worst[high]))
    frames, diag = run(setup, "fused", threshold)
    assert diag["iterations"][low] == 1 and diag["iterations"][high] > 1
    # The decision also needs every view of the released frame below the threshold.
    np.testing.assert_array_equal(diag["deidentified"], (diag["similarities"] < threshold).all(axis=1))
    assert (diag["iterations"] <= setup["config"].deid.max_iters).all()
    np.testing.assert_array_equal(diag["latents"][low], first["latents"][low])
    np.testing.assert_array_equal(diag["private_faces"][low], first["private_faces"][low])
    assert not np.array_equal(diag["latents"][high], first["latents"][high])
    assert_same((frames, diag), run(setup, "staged", threshold))


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


@pytest.fixture(scope="module")
def release():
    """The release stage alone (paste back, the released-frame decision, fallbacks) for the
    baseline PGGAN (no light networks) with the bright-cell detector and random judges."""
    patch = pytest.MonkeyPatch()
    patch.setattr(jaxdeid.crop, "make_detector", lambda config: BrightCellDetector())
    config = get_config("smoke", OVERRIDES + ["crop.score_threshold=0.5"])
    stages = make_stages(config, "pggan")
    patch.undo()
    params = {"detector": {}, "judges": _random_judges(config)}
    archs = tuple(a for a, _ in stages.networks.judges)

    @jax.jit
    def run_release(frames, boxes, scores, second, private, inputs, loop_sims, threshold):
        originals = jax.vmap(lambda f, b: crop_aligned(config, f, b))(frames, boxes)
        refs = jnp.stack([stages.embed(params, a, originals) for a in archs])
        return stages.release(params, params, stages.embed, frames, boxes, scores, second, private, inputs, refs,
                              loop_sims, threshold)

    def call(frames, boxes, private, inputs=None, scores=None, loop_sims=None, threshold=2.0):
        n = frames.shape[0]
        return jax.tree_util.tree_map(np.asarray, run_release(
            jnp.asarray(frames, jnp.float32), jnp.asarray(boxes, jnp.float32),
            jnp.full((n,), 0.9) if scores is None else jnp.asarray(scores), jnp.zeros((n,)),
            jnp.asarray(private, jnp.float32), jnp.asarray(private if inputs is None else inputs, jnp.float32),
            jnp.zeros((n, len(archs))) if loop_sims is None else jnp.asarray(loop_sims), jnp.float32(threshold)))

    return config, stages, call


def _random_judges(config):
    from jaxdeid.deid.pipeline import quick_random_variables
    return {a: quick_random_variables(config, "pggan", f"judges/{a}", seed=3) for a in config.recognizer.judges}


def crop_aligned(config, frame, box):
    from jaxdeid.crop import ops
    return ops.aligned_crop(frame[None], box[None], config.data.resolution, config.crop.align_margin)[0]


def _faces(n, res):
    """Faces the bright-cell detector finds at their centre: dim, with a bright middle."""
    faces = np.full((n, res, res, 3), 0.3, np.float32)
    faces[:, res // 2 - res // 6:res // 2 + res // 6, res // 2 - res // 6:res // 2 + res // 6] = 0.95
    return faces


def _dark_frames(n, side, seed=3):
    return 0.1 + 0.05 * np.asarray(jax.random.uniform(jax.random.PRNGKey(seed), (n, side, side, 3)))


def test_no_face_pixelates_the_whole_frame_and_a_success_replaces_the_whole_square(release):
    """No face -> whole frame pixelated; success -> the private face inside a square none of
    whose pixels is the input's, the rest of the frame untouched, and the mask says so."""
    config, stages, call = release
    side, res = config.data.scene_resolution, config.data.resolution
    frames = _dark_frames(2, side)
    boxes = np.asarray([[0.375, 0.375, 0.625, 0.625]] * 2, np.float32)
    faces = _faces(2, res)                                 # the detector finds it again
    out, flags = call(frames, boxes, faces, scores=[0.1, 0.9])
    assert not flags["detected"][0] and flags["fallback"][0] and not flags["success"][0]
    block = side // config.deid.fallback_frame_cells
    np.testing.assert_allclose(out[0, :block, :block], out[0, 0, 0] * np.ones((block, block, 3)), atol=1e-6)
    assert np.abs(out[0] - frames[0]).min() > 0 and flags["replaced_mask"][0].min() == 1.0
    assert flags["redetected"][1] and flags["success"][1] and not flags["fallback"][1]
    np.testing.assert_allclose(out[1, side // 2, side // 2], 0.95, atol=1e-5)    # the private face
    mask = flags["replaced_mask"][1] > 0
    assert not np.any(np.isclose(out[1][mask], frames[1][mask], atol=1e-7).all(axis=-1))  # no input pixel inside
    np.testing.assert_array_equal(out[1][~mask], frames[1][~mask])                        # outside: untouched
    # The replaced square is the fallback square: the face box grown by deid.fallback_margin.
    side_px = mask.any(axis=1).sum()
    assert side_px == pytest.approx((1 + 2 * config.deid.fallback_margin) * 0.25 * side, abs=1.5)
    # A confident but degenerate (3 px) box is not a face: whole-frame fallback too.
    tiny = jnp.asarray([[0.5, 0.5, 0.5 + 3 / side, 0.5 + 3 / side]], jnp.float32)
    assert not bool(stages.found(tiny, jnp.asarray([0.99]), jnp.asarray([0.0]))[0])


def test_nan_dark_or_vanished_faces_are_not_valid(release):
    config, _, call = release
    side, res = config.data.scene_resolution, config.data.resolution
    frames = _dark_frames(3, side)
    boxes = np.asarray([[0.375, 0.375, 0.625, 0.625]] * 3, np.float32)
    faces = _faces(3, res)
    faces[0, 3, 3, 0] = np.nan         # not finite
    faces[1] = 0.01                    # far darker than the input face
    faces[2] = 0.12                    # as bright as its input, but no face is found there any more
    inputs = _faces(3, res)
    inputs[2] = 0.12
    out, flags = call(frames, boxes, faces, inputs=inputs)
    assert not flags["valid"].any() and flags["fallback"].all() and flags["detected"].all()
    assert flags["redetected"][1] is not None and not flags["redetected"][2]
    assert np.isfinite(out).all()


def test_the_decision_is_taken_on_the_released_frame(release):
    """The loop saw only dissimilar faces (similarities 0), but the released frame still shows
    the original face: its views match the reference, so it is not a success."""
    config, _, call = release
    side = config.data.scene_resolution
    frames = _dark_frames(1, side)
    frames[:, 20:44, 20:44] = 0.9 - 0.3 * np.asarray(jax.random.uniform(jax.random.PRNGKey(5), (1, 24, 24, 3)))
    boxes = np.asarray([[0.375, 0.375, 0.625, 0.625]], np.float32)
    original = np.stack([np.asarray(crop_aligned(config, jnp.asarray(frames[0]), jnp.asarray(boxes[0])))])
    out, flags = call(frames, boxes, original, threshold=0.9)
    assert (flags["frame_similarities"].max(axis=1) > 0.9).all()
    assert not flags["deidentified"][0] and not flags["success"][0] and flags["fallback"][0]
    np.testing.assert_array_equal(flags["similarities"], np.maximum(0.0, flags["frame_similarities"]))


@pytest.mark.parametrize("shift", ["up", "down", "left", "right", "diagonal", "larger"])
# (the bright-cell detector's boxes are a quarter of the frame, so the step's box is that size)
def test_no_pixel_of_the_true_face_stays_original_when_the_box_is_off_by_iou_half(release, shift):
    """The step's box sits at IoU 0.5 from the true face box; a frame released as private keeps
    no original pixel inside the true box (the replaced square covers it)."""
    from jaxdeid.crop.ops import box_iou

    config, _, call = release
    side, res = config.data.scene_resolution, config.data.resolution
    s = 0.25
    true = np.asarray([0.375, 0.375, 0.625, 0.625], np.float32)
    d = s / 3                                   # equal boxes shifted by a third of a side: IoU 1/2
    dd = s * (1 - np.sqrt(2 / 3))              # the diagonal shift with IoU 1/2
    offsets = {"up": (-d, 0), "down": (d, 0), "left": (0, -d), "right": (0, d), "diagonal": (dd, dd)}
    if shift == "larger":                      # the true face sqrt(2) larger than the box, same centre: IoU 1/2
        g = 0.5 * s * (np.sqrt(2) - 1)
        box, true = true, true + np.asarray([-g, -g, g, g], np.float32)
    else:
        dy, dx = offsets[shift]
        box = true + np.asarray([dy, dx, dy, dx], np.float32)
    assert float(box_iou(jnp.asarray(box[None]), jnp.asarray(true[None]))[0]) == pytest.approx(0.5, abs=0.02)
    frames = np.asarray(jax.random.uniform(jax.random.PRNGKey(6), (1, side, side, 3))) * 0.3
    faces = _faces(1, res)
    out, flags = call(frames, box[None], faces)
    assert flags["success"][0], "the test needs a frame released as private"
    y0, x0, y1, x1 = np.round(true * side).astype(int)
    assert (flags["replaced_mask"][0, y0:y1, x0:x1] == 1.0).all()
    assert not np.isclose(out[0, y0:y1, x0:x1], frames[0, y0:y1, x0:x1], atol=1e-7).all(axis=-1).any()


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


def test_second_face_pixelates_the_whole_frame(monkeypatch):
    """Detect + finish on a frame with two faces (two confident peaks) and one with one face."""
    monkeypatch.setattr(jaxdeid.crop, "make_detector", lambda config: BrightCellDetector())
    config = get_config("smoke", OVERRIDES + ["crop.score_threshold=0.5"])
    stages = make_stages(config, "pggan")
    side, res = config.data.scene_resolution, config.data.resolution
    frames = 0.1 + 0.05 * np.asarray(jax.random.uniform(jax.random.PRNGKey(4), (2, side, side, 3)))
    frames[:, 12:20, 12:20] = 0.9            # a face in both frames (peak cell (3, 3))
    frames[0, 44:52, 44:52] = 0.9            # a second face in frame 0, far outside the first's square
    faces = jnp.asarray(_faces(2, res))      # found again in the released frame

    params = {"detector": {}, "judges": _random_judges(config)}

    @jax.jit
    def detect_and_finish(frames):
        boxes, scores, second = stages.detect(params, frames)
        refs = jnp.stack([stages.embed(params, a, faces) for a, _ in stages.networks.judges])
        out, flags = stages.release(params, params, stages.embed, frames, boxes, scores, second, faces, faces, refs,
                                    jnp.zeros((2, len(refs))), jnp.float32(2.0))
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
    np.testing.assert_allclose(out[1, 14, 14], 0.95, atol=1e-5)
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
    from jaxdeid.components import MethodNetworks
    from jaxdeid.deid.finetune import make_task

    config = get_config("smoke", [f"workdir={tmp_path}"])
    networks = MethodNetworks(config, "stylegan2")
    with pytest.raises(FileNotFoundError, match="jaxdeid train gan --arch stylegan2"):
        make_task(config, networks)
    assert make_task(config, networks, allow_untrained=True).name == "deid_finetune"
