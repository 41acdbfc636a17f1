"""Face cropping network (component 2) and crop / paste-back ops (component 8)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdeid.configs import get_config
from jaxdeid.crop import (aligned_crop, box_iou, crop, decode, detection_loss, load_trained, make_cropper,
                          make_task, paste_back, paste_back_aligned, square_boxes)
from jaxdeid.crop.detector import centre_targets
from jaxdeid.crop.ops import expand_boxes
from jaxdeid.train import run


def _psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((np.asarray(a) - np.asarray(b)) ** 2))


def _smooth_frames(n, size, seed=0):
    """Low-frequency colour images: resampling twice should barely change them."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, (n, 6, 6, 3)).astype(np.float32)
    return np.asarray(jax.image.resize(coarse, (n, size, size, 3), "cubic")).clip(0, 1)


def test_crop_of_known_box_picks_those_pixels():
    frames = np.arange(2 * 16 * 16 * 3, dtype=np.float32).reshape(2, 16, 16, 3) / (2 * 16 * 16 * 3)
    # Pixel-aligned boxes with an output the box's own size: resampling is the identity.
    boxes = np.array([[4, 2, 12, 10], [0, 8, 8, 16]], np.float32) / 16
    out = crop(frames, boxes, 8)
    np.testing.assert_allclose(out[0], frames[0, 4:12, 2:10], atol=1e-6)
    np.testing.assert_allclose(out[1], frames[1, 0:8, 8:16], atol=1e-6)
    # A 2x downsample averages 2x2 blocks (antialiased linear kernel), still centred on the box.
    half = crop(frames[:1], boxes[:1], 4)
    blocks = frames[0, 4:12, 2:10].reshape(4, 2, 4, 2, 3).mean(axis=(1, 3))
    assert np.abs(np.asarray(half[0]) - blocks).max() < 0.02


def test_crop_then_paste_back_restores_frame():
    frames = _smooth_frames(2, 64)
    boxes = np.array([[0.2, 0.3, 0.6, 0.7], [0.45, 0.1, 0.9, 0.5]], np.float32)
    margin, feather = 0.1, 0.06
    faces = crop(frames, boxes, 32, margin)
    restored = np.asarray(paste_back(frames, faces, boxes, margin, feather))
    for i in range(2):
        y0, x0, y1, x1 = (boxes[i] * 64).astype(int)
        assert _psnr(restored[i, y0:y1, x0:x1], frames[i, y0:y1, x0:x1]) > 35
        # Outside the grown box nothing changes, bit for bit.
        grown = np.asarray(expand_boxes(boxes[i:i + 1], margin))[0]
        yy, xx = np.mgrid[0:64, 0:64] + 0.5
        outside = (yy / 64 < grown[0]) | (yy / 64 > grown[2]) | (xx / 64 < grown[1]) | (xx / 64 > grown[3])
        np.testing.assert_array_equal(restored[i][outside], frames[i][outside])


def test_paste_back_puts_a_new_face_inside_the_box():
    frames = np.zeros((1, 64, 64, 3), np.float32)
    boxes = np.array([[0.25, 0.25, 0.75, 0.75]], np.float32)
    faces = np.ones((1, 32, 32, 3), np.float32)
    out = np.asarray(paste_back(frames, faces, boxes, margin=0.1, feather=0.06))
    np.testing.assert_allclose(out[0, 16:48, 16:48], 1.0, atol=1e-5)   # the box is fully replaced
    assert out[0, :8].max() == 0 and out[0, :, :8].max() == 0         # far outside untouched


def test_aligned_crop_is_square_and_round_trips():
    frames = _smooth_frames(2, 64, seed=1)
    boxes = np.array([[0.2, 0.3, 0.7, 0.6], [0.3, 0.2, 0.5, 0.6]], np.float32)
    squares = np.asarray(square_boxes(boxes, (64, 64), 0.1))
    np.testing.assert_allclose(squares[:, 2] - squares[:, 0], squares[:, 3] - squares[:, 1], atol=1e-6)
    np.testing.assert_allclose(squares[:, 2] - squares[:, 0], [0.6, 0.48], atol=1e-6)
    faces = aligned_crop(frames, boxes, 32, 0.1)
    assert faces.shape == (2, 32, 32, 3)
    restored = np.asarray(paste_back_aligned(frames, faces, boxes, 0.1, feather=0.05))
    y0, x0, y1, x1 = (boxes[0] * 64).astype(int)
    assert _psnr(restored[0, y0:y1, x0:x1], frames[0, y0:y1, x0:x1]) > 35


def test_ops_jit_without_host_round_trip():
    frames = _smooth_frames(2, 32)
    boxes = jnp.array([[0.1, 0.1, 0.6, 0.5], [0.3, 0.3, 0.9, 0.8]])

    def pipeline(f, b):
        faces = aligned_crop(f, b, 16, 0.1)
        return paste_back_aligned(f, 1.0 - faces, b, 0.1, 0.05)

    jaxpr = str(jax.make_jaxpr(pipeline)(frames, boxes))
    assert "callback" not in jaxpr
    np.testing.assert_allclose(jax.jit(pipeline)(frames, boxes), pipeline(frames, boxes), atol=1e-5)
    iou = box_iou(boxes, jnp.array([[0.1, 0.1, 0.6, 0.5], [0.0, 0.0, 0.1, 0.1]]))
    np.testing.assert_allclose(iou, [1.0, 0.0], atol=1e-6)


def test_targets_and_decoding_agree():
    """Heads equal to the training targets decode back to the true boxes."""
    boxes = jnp.array([[0.1, 0.2, 0.5, 0.45], [0.37, 0.51, 0.93, 0.88]])
    targets = centre_targets(boxes, (16, 16))
    assert np.allclose(np.asarray(targets["heatmap"]).max(axis=(1, 2)), 1.0)
    batch = boxes.shape[0]
    logit = jnp.log(targets["heatmap"] + 1e-6) - jnp.log1p(-targets["heatmap"] + 1e-6)
    fill = lambda v: jnp.broadcast_to(v[:, None, None, :], (batch, 16, 16, 2))
    outputs = {"heatmap_logits": logit[..., None], "size": fill(targets["size"]), "offset": fill(targets["offset"])}
    found, scores = decode(outputs)
    np.testing.assert_allclose(found, boxes, atol=1e-5)
    assert np.all(np.asarray(scores) > 0.99)
    loss, _ = detection_loss(outputs, boxes)
    assert np.isfinite(float(loss))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A few smoke training steps on real SynthFaces scenes (one init, one compile for the file)."""
    workdir = tmp_path_factory.mktemp("crop")
    config = get_config("smoke", ["crop.train.steps=24", "crop.train.log_every=1", "crop.train.eval_every=24",
                                  "crop.train.ckpt_every=24", "crop.train.batch_size=8", "crop.train.lr=3e-3",
                                  "crop.eval_scenes=4"])
    config.workdir = str(workdir)
    _, records = run(make_task(config), config.crop.train, workdir, seed=0)
    return config, records


def test_smoke_training_lowers_the_loss(trained):
    _, records = trained
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 24 and np.all(np.isfinite(losses))
    assert np.mean(losses[-6:]) < 0.75 * np.mean(losses[:4])
    evals = [r for r in records if "eval/detection_rate" in r]
    assert len(evals) == 1 and 0.0 <= evals[0]["eval/detection_rate"] <= 1.0


def test_detector_shapes_and_decoding(trained):
    config, _ = trained
    side = config.data.scene_resolution
    detector, variables = load_trained(config)
    assert set(variables) == {"params", "batch_stats"}
    frames = jax.random.uniform(jax.random.PRNGKey(1), (2, side, side, 3))
    outputs = jax.eval_shape(lambda v, f: detector.apply(v, f, train=False), variables, frames)
    grid = side // 4
    assert outputs["heatmap_logits"].shape == (2, grid, grid, 1)
    assert outputs["size"].shape == outputs["offset"].shape == (2, grid, grid, 2)
    faces, boxes, scores = make_cropper(config, detector)(variables, frames)
    np.testing.assert_allclose(faces, aligned_crop(frames, boxes, config.data.resolution, config.crop.align_margin),
                               atol=1e-5)
    assert faces.shape == (2, config.data.resolution, config.data.resolution, 3)
    assert boxes.shape == (2, 4) and scores.shape == (2,)
    assert np.all((np.asarray(scores) > 0) & (np.asarray(scores) < 1))
    assert np.all(np.asarray(boxes[:, 2]) >= np.asarray(boxes[:, 0]))
    assert np.all((np.asarray(boxes) >= 0) & (np.asarray(boxes) <= 1))


def test_load_trained_without_checkpoint_says_what_to_run(tmp_path):
    config = get_config("smoke")
    config.workdir = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="jaxdeid train crop"):
        load_trained(config)
