"""SynthFaces renderer: determinism, batch independence, shapes, scenes and difficulty."""

import numpy as np
import pytest

from jaxdeid.data import synthfaces as sf


def test_same_seed_same_bytes_and_different_seed_differs():
    ids, smp = [0, 1, 2, 3], [0, 1, 0, 5]
    a = sf.render_faces(ids, smp, 32, seed=7)
    b = sf.render_faces(ids, smp, 32, seed=7)
    c = sf.render_faces(ids, smp, 32, seed=8)
    assert a.tobytes() == b.tobytes()
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5


def test_batch_composition_and_chunking_do_not_change_an_image():
    ids = np.array([5, 9, 5, 123456, 2])
    smp = np.array([0, 3, 1, 7, 2])
    batch = sf.render_faces(ids, smp, 32, seed=3)
    alone = np.concatenate([sf.render_faces(ids[k:k + 1], smp[k:k + 1], 32, seed=3) for k in range(len(ids))])
    chunked = sf.render_faces(ids[::-1], smp[::-1], 32, seed=3, chunk=2)[::-1]
    np.testing.assert_array_equal(batch, alone)
    np.testing.assert_array_equal(batch, chunked)
    scenes, boxes = sf.render_scenes(ids, smp, 48, seed=3)
    scene_alone, box_alone = sf.render_scenes(ids[3:4], smp[3:4], 48, seed=3)
    np.testing.assert_array_equal(scenes[3:4], scene_alone)
    np.testing.assert_array_equal(boxes[3:4], box_alone)


def test_painting_windows_are_only_a_speed_up(monkeypatch):
    # Each layer is painted inside a bounding window; with one image per chunk the windows are as
    # tight as they get. Painting every layer over the whole frame must give the same bytes.
    rng = np.random.default_rng(4)
    ids, smp = rng.integers(0, 10**6, 40), rng.integers(0, 100, 40)
    windowed = sf.render_faces(ids, smp, 24, chunk=1)
    monkeypatch.setattr(sf, "_FULL_WINDOWS", True)
    full = sf.render_faces(ids, smp, 24)
    np.testing.assert_array_equal(windowed, full)


@pytest.mark.parametrize("resolution", [24, 32, 64])
def test_shapes_dtypes_and_content(resolution):
    x = sf.render_faces([0, 1], [0, 0], resolution)
    assert x.shape == (2, resolution, resolution, 3) and x.dtype == np.uint8
    assert x.std() > 20                      # not blank
    assert len(np.unique(x.reshape(-1, 3), axis=0)) > 50   # shaded, anti-aliased, not a flat palette


def test_identity_params_are_fixed_per_person_and_numerous():
    p1 = sf.identity_params([4, 8], seed=0)
    p2 = sf.identity_params([8], seed=0)
    assert len(p1) >= 20
    for name, value in p1.items():
        np.testing.assert_array_equal(value[1], p2[name][0], err_msg=name)
    q = sf.image_params([4, 4], [0, 1], seed=0)
    assert q["yaw"][0] != q["yaw"][1]        # images of one person vary


def test_two_images_of_one_person_differ_more_than_two_people_under_the_same_conditions():
    # Averaged over many pairs: same person, different sample vs different people, same sample conditions.
    rng = np.random.default_rng(0)
    n = 48
    a = rng.integers(0, 10_000, n)
    b = a + 1 + rng.integers(0, 10_000, n)
    s1, s2 = rng.integers(0, 50, n), rng.integers(50, 100, n)
    anchor = sf.render_faces(a, s1, 32).astype(np.float32)
    same_person = sf.render_faces(a, s2, 32).astype(np.float32)
    other_person_same_conditions = sf.render_faces(b, s1, 32, conditions_of=(a, s1)).astype(np.float32)
    intra = np.abs(anchor - same_person).mean()
    inter = np.abs(anchor - other_person_same_conditions).mean()
    assert intra > 1.3 * inter, (intra, inter)
    assert inter > 5                         # but identity does change the pixels


def test_identity_is_learnable_even_by_nearest_neighbour_on_raw_pixels():
    # Nearest neighbour on the raw central face pixels (cosine) already finds the same person far
    # above chance: identity cues are strong and consistent across pose, light and background.
    people, shots = 16, 6
    ids = np.repeat(np.arange(people), shots)
    smp = np.tile(np.arange(shots), people)
    x = sf.render_faces(ids, smp, 32).astype(np.float32)
    f = x[:, 6:26, 8:24].reshape(len(x), -1)
    f -= f.mean(1, keepdims=True)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    sim = f @ f.T
    np.fill_diagonal(sim, -np.inf)
    accuracy = (ids[sim.argmax(1)] == ids).mean()
    assert accuracy > 0.3, accuracy          # chance is 1/16


def test_scenes_boxes_and_face_inside():
    ids, smp = np.arange(6), np.zeros(6, int)
    scenes, boxes = sf.render_scenes(ids, smp, 64, seed=1)
    assert scenes.shape == (6, 64, 64, 3) and scenes.dtype == np.uint8
    assert boxes.shape == (6, 4) and boxes.dtype == np.float32
    assert np.all(boxes >= 0) and np.all(boxes <= 1)
    side = boxes[:, 2] - boxes[:, 0]
    np.testing.assert_allclose(side, boxes[:, 3] - boxes[:, 1], atol=1e-6)
    assert np.all((side >= 0.25 - 1e-6) & (side <= 0.6 + 1e-6))
    again, boxes2 = sf.render_scenes(ids, smp, 64, seed=1)
    assert again.tobytes() == scenes.tobytes() and np.array_equal(boxes, boxes2)
    # The face is where the box says: swapping in another person under the same conditions changes
    # mostly the pixels inside the box (the rest is background, clothes, neck and long hair).
    others, _ = sf.render_scenes(ids + 100, smp, 64, seed=1, conditions_of=(ids, smp))
    for k in range(len(ids)):
        y0, x0, y1, x1 = np.round(boxes[k] * 64).astype(int)
        inside = np.zeros((64, 64), bool)
        inside[y0:y1, x0:x1] = True
        changed = np.abs(scenes[k].astype(int) - others[k].astype(int)).max(-1) > 12
        assert changed[inside].mean() > 0.25, k
        assert changed[inside].sum() > 1.5 * changed[~inside].sum(), k


def test_scene_face_matches_the_aligned_crop():
    # Cropping the scene at the box enlarged by FACE_BOX_MARGIN gives (about) render_faces' image.
    from PIL import Image

    ids, smp = np.array([3, 11, 40]), np.array([2, 0, 5])
    scenes, boxes = sf.render_scenes(ids, smp, 128, seed=0, min_size=0.45, max_size=0.5)
    faces = sf.render_faces(ids, smp, 32, seed=0).astype(np.float32)
    other = sf.render_faces(ids[::-1], smp[::-1], 32, seed=0).astype(np.float32)
    m = sf.FACE_BOX_MARGIN
    for k in range(len(ids)):
        y0, x0, y1, x1 = boxes[k] * 128
        pad = (y1 - y0) * m
        crop = Image.fromarray(scenes[k]).crop((x0 - pad, y0 - pad, x1 + pad, y1 + pad)).resize((32, 32), Image.BILINEAR)
        crop = np.asarray(crop, np.float32)
        centre = (slice(10, 22), slice(10, 22))      # the face itself, away from the backgrounds
        err_same = np.abs(crop[centre] - faces[k][centre]).mean()
        err_other = np.abs(crop[centre] - other[k][centre]).mean() if k != 1 else np.inf
        assert err_same < 25 and err_same < err_other, (k, err_same, err_other)


def test_bad_arguments():
    with pytest.raises(ValueError):
        sf.render_faces([0, 1], [0], 32)
    with pytest.raises(ValueError):
        sf.render_faces([0], [0], 4)
