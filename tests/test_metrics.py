"""Metric registry tests: SSIM / PSNR against scikit-image, and hand-checked protocol metrics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from jaxdeid import metrics
from jaxdeid.metrics import (auc, bootstrap_ci, cosine_similarity, enroll_gallery, identification_ci,
                             identification_rates, image_cosine_similarity, iou, make_pairs, pair_scores, psnr,
                             roc_curve, ssim, success_rate, tar_at_far, verification_ci, verification_rates)


# --------------------------------------------------------------------------- image pairs


def _face_like(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A SynthFaces-like structured image: cluttered background, shaded face ellipse, eyes, mouth, hair."""
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w]).reshape(2, 1, 1)
    background = 0.3 + 0.2 * np.sin(2 * np.pi * (rng.uniform(1, 4) * x + rng.uniform(1, 4) * y))[..., None] \
        * rng.uniform(0.2, 1.0, 3)
    face = ((y - 0.55) / 0.38) ** 2 + ((x - 0.5) / 0.3) ** 2 < 1.0
    skin = rng.uniform(0.4, 0.9, 3) * (0.7 + 0.3 * (1 - x))[..., None]  # directional light
    image = np.where(face[..., None], skin, background)
    for cx in (0.38, 0.62):
        eye = ((y - 0.45) / 0.05) ** 2 + ((x - cx) / 0.07) ** 2 < 1.0
        image[eye] = rng.uniform(0.0, 0.3, 3)
    mouth = (np.abs(y - 0.72) < 0.025) & (np.abs(x - 0.5) < 0.12)
    image[mouth] = [0.6, 0.15, 0.2]
    hair = (y < 0.3) & face
    image[hair] = rng.uniform(0.0, 0.5, 3)
    return np.clip(image + rng.normal(0, 0.02, image.shape), 0, 1)


def _image_pairs():
    """(name, a, b) float32 HWC pairs of several kinds and sizes (all >= 16 px)."""
    rng = np.random.default_rng(0)
    pairs = []
    for h, w in [(16, 16), (32, 32), (24, 40), (48, 33)]:
        noise_a, noise_b = rng.random((h, w, 3)), rng.random((h, w, 3))
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        gradient = np.stack([yy, xx, (yy + xx) / 2], -1)
        face_a, face_b = _face_like(rng, h, w), _face_like(rng, h, w)
        pairs += [
            (f"noise{h}x{w}", noise_a, noise_b),
            (f"gradient{h}x{w}", gradient, np.clip(0.8 * gradient ** 1.5 + 0.1, 0, 1)),
            (f"faces{h}x{w}", face_a, face_b),
            (f"face_lowlight{h}x{w}", face_a, np.clip(face_a ** 3 + rng.normal(0, 0.05, face_a.shape), 0, 1)),
            (f"near_identical{h}x{w}", face_a, np.clip(face_a + rng.normal(0, 1e-3, face_a.shape), 0, 1)),
        ]
    # Float32 inputs on both sides, so only the computation differs, not the data.
    return [(n, a.astype(np.float32), b.astype(np.float32)) for n, a, b in pairs]


IMAGE_PAIRS = _image_pairs()


@pytest.mark.parametrize("name,a,b", IMAGE_PAIRS, ids=[p[0] for p in IMAGE_PAIRS])
def test_ssim_and_psnr_match_scikit_image(name, a, b):
    reference_ssim = structural_similarity(a.astype(np.float64), b.astype(np.float64), gaussian_weights=True,
                                           sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1)
    reference_psnr = peak_signal_noise_ratio(a.astype(np.float64), b.astype(np.float64), data_range=1.0)
    ours_ssim = float(ssim(jnp.asarray(a)[None], jnp.asarray(b)[None])[0])  # dm-pix in float32
    ours_psnr = float(psnr(jnp.asarray(a)[None], jnp.asarray(b)[None])[0])
    assert abs(ours_ssim - reference_ssim) < 1e-4, (ours_ssim, reference_ssim)
    assert abs(ours_psnr - reference_psnr) < 1e-4, (ours_psnr, reference_psnr)


def test_image_metrics_are_batched_and_jittable():
    a = np.stack([p[1] for p in IMAGE_PAIRS if p[1].shape == (32, 32, 3)])
    b = np.stack([p[2] for p in IMAGE_PAIRS if p[2].shape == (32, 32, 3)])
    batched = jax.jit(lambda x, y: (ssim(x, y), psnr(x, y), image_cosine_similarity(x, y)))(a, b)
    for values in batched:
        assert values.shape == (len(a),)
    for i in range(len(a)):  # a batch gives the same per-image values as one image at a time
        np.testing.assert_allclose(batched[0][i], ssim(a[i:i + 1], b[i:i + 1])[0], atol=1e-6)
    assert float(ssim(a[:1], a[:1])[0]) == pytest.approx(1.0, abs=1e-6)
    assert math.isinf(float(psnr(a[:1], a[:1])[0]))


def test_cosine_similarity():
    a = jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [3.0, 4.0]])
    b = jnp.array([[0.0, 2.0], [2.0, 2.0], [1.0, 0.0], [-3.0, -4.0]])
    np.testing.assert_allclose(cosine_similarity(a, b), [0.0, 1.0, 0.0, -1.0], atol=1e-6)
    images = np.random.default_rng(1).random((2, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(image_cosine_similarity(images, 0.5 * images), [1.0, 1.0], atol=1e-6)
    flat = images.reshape(2, -1)
    expected = np.sum(flat[0] * flat[1]) / np.linalg.norm(flat[0]) / np.linalg.norm(flat[1])
    assert float(image_cosine_similarity(images[:1], images[1:])[0]) == pytest.approx(expected, abs=1e-6)


# --------------------------------------------------------------------------- registry


def test_registry_lists_every_table_metric():
    expected = {"ssim", "psnr", "cosine_similarity", "image_cosine_similarity", "verification", "roc",
                "tar_at_far", "identification", "success_rate", "iou"}
    assert expected <= set(metrics.list_metrics())
    assert metrics.get_metric("ssim").fn is ssim
    assert metrics.get_metric("verification").kind == "verification"
    assert set(metrics.list_metrics("pairwise")) >= {"ssim", "psnr", "cosine_similarity"}
    with pytest.raises(KeyError, match="registered metrics"):
        metrics.get_metric("no_such_metric")
    with pytest.raises(ValueError, match="already registered"):
        metrics.register_metric("ssim", kind="pairwise")(lambda a, b: a)


# --------------------------------------------------------------------------- verification (1:1)


def test_verification_rates_hand_computed():
    # genuine: 0.9, 0.3 (== threshold: accepted), 0.29, -0.1 -> TPR 2/4
    # impostor: 0.5, 0.1, 0.0, 0.2                            -> FPR 1/4; accuracy (2 + 3) / 8
    similarities = np.array([0.9, 0.3, 0.29, -0.1, 0.5, 0.1, 0.0, 0.2])
    is_genuine = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    rates = verification_rates(similarities, is_genuine, threshold=0.3)
    assert rates["tpr"] == 0.5 and rates["fpr"] == 0.25
    assert rates["accuracy"] == (2 + 3) / 8
    assert (rates["tp"], rates["fn"], rates["fp"], rates["tn"]) == (2, 2, 1, 3)
    assert verification_rates(similarities, is_genuine, threshold=0.15)["fpr"] == 0.5  # 0.5 and 0.2 pass
    assert verification_rates(similarities, is_genuine, threshold=0.0)["fpr"] == 1.0   # 0.0 >= 0.0


def test_make_pairs_balanced_deterministic_and_correct():
    labels = np.repeat(np.arange(6), [1, 2, 3, 4, 5, 6])  # identity 0 has one image: never genuine
    genuine, impostor = make_pairs(labels, 50, seed=3)
    assert genuine.shape == impostor.shape == (50, 2)
    assert np.all(labels[genuine[:, 0]] == labels[genuine[:, 1]])
    assert np.all(genuine[:, 0] != genuine[:, 1])
    assert np.all(labels[impostor[:, 0]] != labels[impostor[:, 1]])
    assert not np.any(labels[genuine[:, 0]] == 0)
    again = make_pairs(labels, 50, seed=3)
    np.testing.assert_array_equal(genuine, again[0])
    np.testing.assert_array_equal(impostor, again[1])
    assert not np.array_equal(genuine, make_pairs(labels, 50, seed=4)[0])
    # Identities are drawn uniformly, not by image count.
    genuine_many, _ = make_pairs(labels, 5000, seed=0)
    counts = np.bincount(labels[genuine_many[:, 0]], minlength=6)[1:]
    assert counts.min() > 0.8 * 1000 and counts.max() < 1.2 * 1000

    # Across sets: column 0 indexes probes, column 1 references; probe id 7 has no reference.
    probe_labels, reference_labels = np.array([0, 1, 2, 7]), np.array([2, 2, 1, 0, 0])
    g, i = make_pairs(probe_labels, 40, seed=1, reference_labels=reference_labels)
    assert np.all(probe_labels[g[:, 0]] == reference_labels[g[:, 1]])
    assert np.all(probe_labels[i[:, 0]] != reference_labels[i[:, 1]])
    with pytest.raises(ValueError, match="two or more images"):
        make_pairs(np.arange(5), 3, seed=0)


def test_pair_scores():
    embeddings = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    similarities, is_genuine = pair_scores(embeddings, np.array([[0, 1]]), np.array([[0, 2]]))
    np.testing.assert_allclose(similarities, [1.0, 0.0])
    np.testing.assert_array_equal(is_genuine, [True, False])


def test_roc_monotone_perfect_and_random():
    rng = np.random.default_rng(0)
    is_genuine = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    separated = np.r_[rng.uniform(0.5, 1.0, 200), rng.uniform(-1.0, 0.4, 200)]
    fpr, tpr, thresholds = roc_curve(separated, is_genuine)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0) and np.all(np.diff(thresholds) < 0)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert auc(fpr, tpr) == pytest.approx(1.0)
    random_scores = rng.uniform(-1, 1, 400)
    assert auc(*roc_curve(random_scores, is_genuine)[:2]) == pytest.approx(0.5, abs=0.07)
    # Ties collapse into one point: all-equal scores give the chance diagonal exactly.
    fpr, tpr, _ = roc_curve(np.zeros(400), is_genuine)
    np.testing.assert_array_equal(fpr, [0, 1])
    np.testing.assert_array_equal(tpr, [0, 1])
    assert metrics.get_metric("roc")(separated, is_genuine)["auc"] == pytest.approx(1.0)


def test_tar_at_far_constructed():
    # 10 impostors at 0.05, 0.15, ..., 0.95; 10 genuine at 0.5..0.9 and 0.96..1.0
    impostor = np.linspace(0.05, 0.95, 10)
    genuine = np.array([0.5, 0.6, 0.7, 0.8, 0.9, 0.96, 0.97, 0.98, 0.99, 1.0])
    scores = np.r_[genuine, impostor]
    is_genuine = np.r_[np.ones(10, bool), np.zeros(10, bool)]
    result = tar_at_far(scores, is_genuine, far_targets=(0.0, 0.1, 0.25, 0.5))
    # FAR 0: threshold above 0.95 accepts the 5 genuine > 0.95.
    assert result[0.0]["tar"] == 0.5 and result[0.0]["far"] == 0.0 and not result[0.0]["resolved"]
    # FAR 0.1: one impostor (0.95) may pass; threshold 0.9 accepts genuine >= 0.9 -> 6/10.
    assert result[0.1]["tar"] == 0.6 and result[0.1]["far"] == pytest.approx(0.1) and result[0.1]["resolved"]
    # FAR 0.25 -> at most 2 impostors (0.95, 0.85): threshold 0.8 accepts 7 genuine.
    assert result[0.25]["tar"] == 0.7 and result[0.25]["far"] == pytest.approx(0.2)
    assert result[0.25]["threshold"] == pytest.approx(0.8)
    # FAR 0.5 -> 5 impostors (>= 0.55): threshold 0.5 accepts all 10 genuine.
    assert result[0.5]["tar"] == 1.0 and result[0.5]["far"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- identification (1:N)


def test_identification_on_constructed_gallery():
    # Three identities along the axes, two clean images each.
    clean = np.array([[1.0, 0.1, 0.0], [2.0, -0.2, 0.0], [0.0, 1.0, 0.0], [0.0, 3.0, 0.3], [0.0, 0.0, 1.0],
                      [0.1, 0.0, 1.0]])
    clean_labels = np.array([5, 5, 7, 7, 9, 9])
    gallery, gallery_labels = enroll_gallery(clean, clean_labels)
    np.testing.assert_array_equal(gallery_labels, [5, 7, 9])
    np.testing.assert_allclose(np.linalg.norm(gallery, axis=1), 1.0, atol=1e-6)
    assert np.argmax(gallery[0]) == 0 and np.argmax(gallery[1]) == 1 and np.argmax(gallery[2]) == 2
    probes = np.array([
        [1.0, 0.0, 0.0],    # id 5 -> own identity (TP)
        [0.0, 1.0, 0.05],   # id 5 -> matches 7 (FP)
        [0.0, 0.0, 1.0],    # id 7 -> matches 9 (FP)
        [-1.0, -1.0, -1.0],  # id 9 -> nobody above 0.3 (reject)
    ])
    probe_labels = np.array([5, 5, 7, 9])
    rates = identification_rates(probes, probe_labels, gallery, gallery_labels, threshold=0.3)
    assert rates["tpr_1n"] == 0.25 and rates["fpr_1n"] == 0.5 and rates["reject_1n"] == 0.25
    assert rates["tpr_1n"] + rates["fpr_1n"] + rates["reject_1n"] == pytest.approx(1.0)
    assert rates["rank1"] == 0.25
    assert metrics.get_metric("identification")(probes, probe_labels, gallery, gallery_labels)["fpr_1n"] == 0.5


# --------------------------------------------------------------------------- success rate and IoU


def test_iou():
    a = jnp.array([0.0, 0.0, 0.5, 0.5])
    assert float(iou(a, a)) == pytest.approx(1.0)
    assert float(iou(a, jnp.array([0.5, 0.5, 1.0, 1.0]))) == 0.0
    assert float(iou(a, jnp.array([0.25, 0.0, 0.75, 0.5]))) == pytest.approx(1 / 3)  # half overlap
    assert float(iou(a, jnp.array([0.0, 0.0, 0.25, 0.25]))) == pytest.approx(0.25)   # nested
    assert float(iou(jnp.zeros(4), jnp.zeros(4))) == 0.0                             # degenerate, not NaN
    assert iou(jnp.zeros((3, 4)), jnp.zeros((3, 4))).shape == (3,)


def test_success_rate_parts():
    """The step's decisions are read as they are; the true box can only take a detection away."""
    n = 5
    step_flags = {"detected": np.array([1, 1, 1, 1, 1], bool),
                  "valid": np.array([1, 0, 0, 1, 1], bool),          # images 1, 2: the step found them invalid
                  "deidentified": np.array([1, 1, 1, 0, 1], bool)}   # image 3: a judge still matches
    similarities = {"vgg16": np.array([0.1, 0.1, 0.1, 0.1, np.nan]),
                    "resnet50": np.array([0.2, 0.0, 0.0, 0.3, 0.29])}
    true_boxes = np.array([[0.1, 0.1, 0.9, 0.9]] * n, np.float32)
    true_boxes[0] = np.nan             # image 0: true box unknown -> only the step's detection counts
    pred_boxes = np.array([[0.5, 0.5, 1.0, 1.0]] + [[0.1, 0.1, 0.9, 0.9]] * 3 + [[0.6, 0.6, 1.0, 1.0]],
                          np.float32)  # image 4: IoU 0.0625 -> not detected
    result = success_rate(step_flags, pred_boxes=pred_boxes, true_boxes=true_boxes, similarities=similarities,
                          threshold=0.3)
    flags = result["flags"]
    np.testing.assert_array_equal(flags["detected"], [1, 1, 1, 1, 0])
    np.testing.assert_array_equal(flags["valid"], [1, 0, 0, 1, 1])
    np.testing.assert_array_equal(flags["deidentified"], [1, 1, 1, 0, 1])
    np.testing.assert_array_equal(flags["success"], [1, 0, 0, 0, 0])
    assert result["rate"] == 0.2
    assert (result["detected_rate"], result["valid_rate"], result["deidentified_rate"]) == (0.8, 0.6, 0.8)
    assert result["reject_rate"] == {"vgg16": 0.8, "resnet50": 0.8}   # NaN (never judged) is not a rejection
    missed = success_rate({**step_flags, "detected": np.array([0, 1, 1, 1, 1], bool)})
    assert missed["flags"]["success"].tolist() == [False, False, False, False, True]
    with pytest.raises(ValueError, match="both"):
        success_rate(step_flags, pred_boxes=pred_boxes)


# --------------------------------------------------------------------------- bootstrap CIs


def _synthetic_verification(num_identities: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_identities), 4)
    genuine, impostor = make_pairs(labels, 10 * num_identities, seed=seed)
    similarities = np.r_[rng.normal(0.5, 0.2, len(genuine)), rng.normal(0.1, 0.2, len(impostor))]
    is_genuine = np.r_[np.ones(len(genuine), bool), np.zeros(len(impostor), bool)]
    pair_identities = labels[np.r_[genuine[:, 0], impostor[:, 0]]]
    return similarities, is_genuine, pair_identities


def test_bootstrap_ci_contains_estimate_narrows_and_is_deterministic():
    widths = []
    for num_identities in (10, 160):
        similarities, is_genuine, pair_identities = _synthetic_verification(num_identities, seed=0)
        point = verification_rates(similarities, is_genuine, 0.3)
        ci = verification_ci(similarities, is_genuine, pair_identities, threshold=0.3, num_resamples=200, seed=1)
        for key in ("tpr", "fpr", "accuracy"):
            low, high = ci[key]
            assert low <= point[key] <= high, (key, low, point[key], high)
        widths.append(ci["tpr"][1] - ci["tpr"][0])
        assert ci == verification_ci(similarities, is_genuine, pair_identities, threshold=0.3, num_resamples=200,
                                     seed=1)
    assert widths[1] < 0.6 * widths[0], widths  # 16x identities: ~4x narrower in theory

    # Scalar statistic, and identities really are the resampling unit: items of one identity move together.
    values = np.array([0.0, 0.0, 1.0, 1.0])
    low, high = bootstrap_ci(lambda idx: values[idx].mean(), np.array([0, 0, 1, 1]), num_resamples=100, seed=0)
    assert 0.0 <= low <= 0.5 <= high <= 1.0 and {low, high} <= {0.0, 0.5, 1.0}


def test_identification_ci():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(30, 16))
    clean_labels = np.repeat(np.arange(30), 3)
    gallery, gallery_labels = enroll_gallery(centers[clean_labels] + 0.3 * rng.normal(size=(90, 16)), clean_labels)
    probe_labels = np.repeat(np.arange(30), 2)
    probes = centers[probe_labels] + 1.0 * rng.normal(size=(60, 16))
    point = identification_rates(probes, probe_labels, gallery, gallery_labels)
    ci = identification_ci(probes, probe_labels, gallery, gallery_labels, num_resamples=200, seed=0)
    for key in ("tpr_1n", "fpr_1n"):
        assert ci[key][0] <= point[key] <= ci[key][1]
        assert ci[key][0] < ci[key][1]


# --------------------------------------------------------------------------- plots


def test_plot_roc_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    is_genuine = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    curves = {
        "good": roc_curve(np.r_[rng.normal(1, 0.5, 100), rng.normal(0, 0.5, 100)], is_genuine)[:2],
        "chance": roc_curve(rng.normal(size=200), is_genuine)[:2],
    }
    for log_x in (False, True):
        path = metrics.plot_roc(curves, tmp_path / f"roc_{log_x}.png", title="test", log_x=log_x)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_reported_numbers_go_through_the_registry():
    """The modules that compute what results/ reports look registered metrics up by name
    (`get_metric`) instead of importing the functions: no direct import of a registered one."""
    import ast
    from pathlib import Path

    from jaxdeid.metrics import get_metric, list_metrics

    registered = set(list_metrics()) | {get_metric(name).fn.__name__ for name in list_metrics()}
    package = Path(__file__).resolve().parents[1] / "jaxdeid"
    reporting = [*package.glob("eval/*.py"), *package.glob("reproduce/*.py"), *package.glob("*/evaluate.py"),
                 package / "encoder" / "train.py", package / "crop" / "ops.py"]
    direct = []
    for path in reporting:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1] in ("metrics", "success", "image",
                                                                                          "verification", "frechet",
                                                                                          "identification"):
                direct += [f"{path.name}: {a.name}" for a in node.names if a.name in registered]
    assert len(reporting) > 10 and direct == []
