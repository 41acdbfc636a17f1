"""`jaxdeid deidentify IN OUT` end to end on a folder of good and bad files (smoke preset).

Random networks (``--allow-untrained``), so the faces mean nothing; what is tested is
the contract: bad files are reported and skipped, every readable file gets a report,
nothing from an untrained run is named or flagged as private, output names never
collide, no output shows its input's pixels unchanged, no face the step counted as
private is recognised as its input by the white-box judges, stale outputs of earlier
runs are removed, and the exit status says "partial" (3).

One compiled private step serves every run of the module (`_cached_step`): the
configs are identical, and compiling it dominates the module's time.
"""

import json
import shutil
import zlib
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxdeid.cli import main
from jaxdeid.commands import deidentify
from jaxdeid.commands.deidentify import UNTRAINED_SUFFIX, exit_status, file_report, output_stems
from jaxdeid.data.images import letterbox
from jaxdeid.configs import get_config
from jaxdeid.crop import aligned_crop
from jaxdeid.data import read_image
from jaxdeid.data.images import HIDDEN_REASON
from jaxdeid.data.lowlight import darken_np
from jaxdeid.data.synthfaces import render_scenes
from jaxdeid.deid.step import make_jitted_private_step as _ORIGINAL_STEP

JUDGES = "('vgg16',)"
# Random recognizers map every face to nearly the same direction (cosine ~0.99 between any
# two different faces, 1.0 for the same image), so the judge threshold is set just below 1:
# "recognised" then means "still (nearly) the input face", which is what an untrained run
# can test. The fail-closed path (cap -> pixelated fallback) is covered in test_deid.py.
SETTINGS = [f"recognizer.judges={JUDGES}", "crop.score_threshold=0.0", "deid.max_iters=2",
            "recognizer.threshold=0.999"]


def _cli_args(src, dst, workdir, *extra):
    args = ["deidentify", str(src), str(dst), "--preset", "smoke", "--workdir", str(workdir), "--batch-size", "2"]
    for setting in SETTINGS:
        args += ["--set", setting]
    return args + list(extra)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    scenes, _ = render_scenes(np.arange(3), np.zeros(3, np.int64), 64, seed=0)
    low = darken_np(np.random.default_rng(0), scenes.astype(np.float32) / 255.0, get_config("smoke").lowlight)
    low8 = np.round(low * 255).astype(np.uint8)
    Image.fromarray(low8[0]).save(root / "rgb.png")
    Image.fromarray(low8[1][:, 8:56]).save(root / "portrait.jpg", quality=95)   # not square
    Image.fromarray(low8[2]).convert("L").save(root / "gray.png")
    rgba = np.concatenate([low8[0], np.full((64, 64, 1), 255, np.uint8)], axis=-1)
    (root / "sub").mkdir()
    Image.fromarray(rgba).save(root / "sub" / "rgba.png")
    sixteen = (low[1].mean(axis=-1) * 65535).astype(np.uint16)
    Image.fromarray(sixteen).save(root / "sixteen.png")
    (root / "empty.png").write_bytes(b"")
    (root / "text.jpg").write_text("this is not an image\n")
    (root / "notes.txt").write_text("not an image either\n")
    good = (root / "rgb.png").read_bytes()
    (root / "corrupt.png").write_bytes(good[: len(good) // 2])
    # Dotted names: `with_suffix` once mapped both to OUT/2023.01.png.
    Image.fromarray(low8[2]).save(root / "2023.01.05.png")
    Image.fromarray(low8[1]).save(root / "2023.01.06.jpg", quality=95)
    Image.fromarray(low8[0]).save(root / ".hidden.png")   # reported, never silently skipped
    return root


GOOD = ("rgb.png", "portrait.jpg", "gray.png", "rgba.png", "sixteen.png", "2023.01.05.png", "2023.01.06.jpg")
BAD = ("empty.png", "text.jpg", "notes.txt", "corrupt.png", ".hidden.png")


def _random_networks(config, method, name, key):
    """Stands in for `pipeline._init_one` under ``--allow-untrained``: shape-exact random
    weights without compiling initialisers (`quick_random_variables`), seeded by the
    network's name so a second load gives the same weights. The detector's size head is
    biased to 40 % of the frame: a random detector predicts near-zero boxes, which the
    step treats as "no face" (whole frame pixelated), and the generator path would never run."""
    from jaxdeid.deid.pipeline import quick_random_variables, with_face_sized_boxes

    del key
    variables = quick_random_variables(config, method, name, seed=zlib.crc32(name.encode()))
    if name == "detector":   # the library's own helper, so the two can never drift apart
        variables = with_face_sized_boxes({"detector": variables}, config)["detector"]
    return variables


_STEPS = {}


def _cached_step(config, method="ours", num_devices=None):
    """`make_jitted_private_step`, built once per method for the whole module (every run
    here uses the same SETTINGS and batch size, so one compilation serves them all)."""
    if method not in _STEPS:
        _STEPS[method] = _ORIGINAL_STEP(config, method, num_devices)
    return _STEPS[method]


def _patch_networks(patch):
    from jaxdeid.commands import deidentify
    from jaxdeid.deid import pipeline

    patch.setattr(pipeline, "_init_one", _random_networks)
    patch.setattr(deidentify, "make_jitted_private_step", _cached_step)


@pytest.fixture(scope="module")
def result(folder, tmp_path_factory):
    from jaxdeid.deid.pipeline import load_params

    out = tmp_path_factory.mktemp("private")
    workdir = tmp_path_factory.mktemp("no_checkpoints")
    with pytest.MonkeyPatch.context() as patch:
        _patch_networks(patch)
        status = main(_cli_args(folder, out, workdir, "--allow-untrained"))
        config = get_config("smoke", SETTINGS)
        config.workdir = str(workdir)
        judges, _ = load_params(config, "ours", allow_untrained=True,
                                names=[f"judges/{a}" for a in config.recognizer.judges])
    return status, out, judges["judges"]


def test_missing_checkpoints_name_the_training_commands(folder, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "summary.json").write_text('{"private": 99}')   # an earlier run's
    status = main(_cli_args(folder, tmp_path / "out", tmp_path / "empty_workdir"))
    assert status == 1
    err = capsys.readouterr().err
    assert "jaxdeid train enhance" in err and "jaxdeid train gan --arch stylegan2" in err
    assert "--allow-untrained" in err
    assert not (tmp_path / "out" / "summary.json").exists()   # a failed run leaves no stale summary


def test_nothing_usable_is_a_failure(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"")
    assert main(_cli_args(tmp_path / "in", tmp_path / "out", tmp_path / "w", "--allow-untrained")) == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rejected"] == 1 and summary["private"] == 0


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_batch_size_below_one_is_a_usage_error(tmp_path, capsys, value):
    (tmp_path / "in").mkdir()
    args = _cli_args(tmp_path / "in", tmp_path / "out", tmp_path / "w")
    args[args.index("--batch-size") + 1] = value
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert "--batch-size" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_out_equal_to_in_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    assert main(_cli_args(tmp_path / "in", tmp_path / "in" / ".." / "in", tmp_path / "w")) == 2
    assert "OUT must differ from IN" in capsys.readouterr().err


def _reports(out):
    return {Path(r["input"]).name: r for r in
            (json.loads(p.read_text()) for p in out.rglob("*.json") if p.name != "summary.json")}


def test_partial_run_reports_every_file(result, folder):
    status, out, _ = result
    assert status == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rejected"] == len(BAD)                 # empty, text, notes.txt, corrupt, hidden
    assert summary["untrained"] == len(GOOD)               # random networks: nothing is private
    assert summary["private"] == summary["fallback"] == 0
    reports = _reports(out)
    assert set(reports) == set(GOOD) | set(BAD)
    for name in BAD:
        assert reports[name]["status"] == "rejected" and reports[name]["output"] is None
    assert reports[".hidden.png"]["reason"] == HIDDEN_REASON
    for name in GOOD:
        report = reports[name]
        assert report["step_status"] in ("private", "fallback_face_pixelated", "fallback_frame_pixelated")
        assert 1 <= report["iterations"] <= 2 and len(report["box"]) == 4 and "vgg16" in report["similarities"]
        written = Path(report["output"])
        assert written.exists()
        assert report["fallback"] == (not report["step_success"])
        # Same size as the input file (pasted back at the original resolution).
        assert list(read_image(written)[0].shape[:2]) == report["size"]
    assert reports["portrait.jpg"]["size"] == [64, 48]


def test_untrained_run_writes_nothing_private(result):
    """--allow-untrained: every output is named *.UNTRAINED_NOT_PRIVATE.png, its status is
    "untrained" and success False, whatever the step decided; the exit status is 3."""
    status, out, _ = result
    assert status == 3
    for name, report in _reports(out).items():
        assert report["success"] is False, name
        if report["status"] != "rejected":
            assert report["status"] == "untrained" and "untrained" in report["reason"]
            assert report["untrained_networks"]
    images = sorted(p.name for p in out.rglob("*.png"))
    assert len(images) == len(GOOD) and all(n.endswith(UNTRAINED_SUFFIX) for n in images), images
    # Trained or not, exit 0 needs every file private and nothing else.
    assert exit_status({"private": 2, "fallback": 0, "untrained": 0, "rejected": 0}) == 0
    assert exit_status({"private": 0, "fallback": 0, "untrained": 2, "rejected": 0}) == 3
    assert exit_status({"private": 0, "fallback": 0, "untrained": 0, "rejected": 2}) == 1


def test_output_names_keep_dots_and_never_collide(result, folder):
    _, out, _ = result
    assert (out / f"2023.01.05{UNTRAINED_SUFFIX}").exists() and (out / f"2023.01.06{UNTRAINED_SUFFIX}").exists()
    assert json.loads((out / "2023.01.05.json").read_text())["input"].endswith("2023.01.05.png")
    assert json.loads((out / "2023.01.06.json").read_text())["input"].endswith("2023.01.06.jpg")
    root = Path("/in")
    names = ["john.smith.jpg", "john.png", "a/b.jpg", "a/b.png", "a/b_jpg.png", "summary.jpg",
             "x.png", "x.FALLBACK_BLURRED.png", "C.png", "c.jpg"]
    stems = output_stems([root / n for n in names], root, taken=["summary.json"])
    assert {n: stems[root / n].as_posix() for n in names} == {
        "john.smith.jpg": "john.smith", "john.png": "john",          # dots kept: no clash
        "a/b.jpg": "a/b_jpg_2", "a/b.png": "a/b_png", "a/b_jpg.png": "a/b_jpg",
        "summary.jpg": "summary_jpg",                                 # never overwrites summary.json
        "x.png": "x_png", "x.FALLBACK_BLURRED.png": "x_FALLBACK_BLURRED_png",
        "C.png": "C_png", "c.jpg": "c_jpg"}                           # case-insensitive file systems
    keys = [str(deidentify.output_file(s, suffix)).casefold() for s in stems.values()
            for suffix in (*deidentify.IMAGE_SUFFIXES, ".json")]
    assert len(keys) == len(set(keys))
    assert output_stems([root / n for n in reversed(names)], root, taken=["summary.json"]) == stems


def test_no_output_shows_its_input_unchanged(result):
    """Decoded pixels, at the input's geometry (the outputs are 8-bit PNGs; inputs are
    jpg, gray, RGBA, 16-bit): in every output the face box the step found is replaced, not
    one pixel here and there (almost every pixel of the box differs from the input)."""
    _, out, _ = result
    checked = 0
    for report in _reports(out).values():
        if report["output"] is None:
            continue
        original, _ = read_image(report["input"])
        written, _ = read_image(report["output"])
        assert written.shape == original.shape
        difference = np.abs(np.round(written * 255) - np.round(original * 255)).max(axis=-1)
        y0, x0, y1, x1 = np.round(report["box"]).astype(int) if report["box"] else (0, 0, *original.shape[:2])
        face = difference[max(y0, 0):y1, max(x0, 0):x1]
        assert face.size and np.mean(face >= 1) > 0.9, (report["input"], report["box"], np.mean(face >= 1))
        checked += 1
    assert checked == len(GOOD)


def test_private_outputs_are_not_recognised(result):
    """Re-embed each face the step counted as private (written as untrained here) and its
    input with the judges (same random weights as the run): every similarity must be
    below the threshold."""
    from jaxdeid.recognizers.model import make_recognizer

    _, out, judges = result
    config = get_config("smoke", SETTINGS)
    side, res = config.data.scene_resolution, config.data.resolution
    checked = 0
    for report_path in out.rglob("*.json"):
        report = json.loads(report_path.read_text())
        if report.get("step_status") != "private":
            continue
        original, _ = read_image(report["input"])
        private, _ = read_image(report["output"])
        height, width = report["size"]
        frames, geometry = zip(*(letterbox(image, side) for image in (original, private)))
        top, left, new_h, new_w = geometry[0]
        y0, x0, y1, x1 = report["box"]
        box = np.asarray([(top + y0 * new_h / height) / side, (left + x0 * new_w / width) / side,
                          (top + y1 * new_h / height) / side, (left + x1 * new_w / width) / side], np.float32)
        faces = aligned_crop(jnp.asarray(np.stack(frames)), jnp.asarray(np.stack([box, box])), res,
                             config.crop.align_margin)
        for arch in config.recognizer.judges:
            embeddings = make_recognizer(config, arch).apply(judges[arch], faces, train=False)
            similarity = float(jnp.sum(embeddings[0] * embeddings[1]))
            assert similarity < config.recognizer.threshold, (report["input"], arch, similarity)
        checked += 1
    assert checked >= 1, "no face came out private: the recognition check would be empty"


def test_rerun_rejection_removes_earlier_outputs(result, tmp_path):
    """IN/rgb.png is corrupt on a rerun into the same OUT (which lies inside IN): its
    earlier image output goes, its report says rejected, OUT's files are not read.
    b.jpg, alone before, now clashes with b.png: both are renamed, and what an earlier
    run wrote at the shared name b.* goes too."""
    _, out, _ = result
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("rgb.png", "b.png", "b.jpg"):
        (photos / name).write_bytes(b"\x89PNG garbage")
    shutil.copytree(out, photos / "private")
    shutil.copy(out / f"rgb{UNTRAINED_SUFFIX}", photos / "private" / "b.png")   # "private" from a past run
    (photos / "private" / "b.json").write_text('{"status": "private"}')
    assert list((photos / "private").glob("rgb.*.png"))
    status = main(_cli_args(photos, photos / "private", tmp_path / "w", "--allow-untrained"))
    assert status == 1                                   # nothing usable; the copied outputs are not inputs
    assert not list((photos / "private").glob("rgb.*.png"))
    assert json.loads((photos / "private" / "rgb.json").read_text())["status"] == "rejected"
    assert not (photos / "private" / "b.png").exists() and not (photos / "private" / "b.json").exists()
    for name in ("b_png.json", "b_jpg.json"):
        assert json.loads((photos / "private" / name).read_text())["status"] == "rejected"
    summary = json.loads((photos / "private" / "summary.json").read_text())
    assert summary["rejected"] == 3 and summary["files"] == 3


def test_in_inside_out_and_unwritable_output(result, folder, tmp_path, monkeypatch):
    """IN inside OUT is processed (not all excluded); an output that would land on an input
    file is renamed; a file whose output cannot be written is rejected and the run goes
    on; a stale fallback from an earlier run is removed."""
    out = tmp_path / "out"
    (out / "photos" / "photos").mkdir(parents=True)
    shutil.copy(folder / "rgb.png", out / "photos" / "a.png")
    shutil.copy(folder / "gray.png", out / "photos" / "photos" / "a.png")   # natural output: out/photos/a.png
    shutil.copy(folder / "portrait.jpg", out / "photos" / "blocked.jpg")
    (out / f"blocked{UNTRAINED_SUFFIX}").mkdir()                            # cannot be written
    (out / "a.FALLBACK_BLURRED.png").write_bytes(b"stale")
    inputs = {p: p.read_bytes() for p in (out / "photos").rglob("*") if p.is_file()}
    _patch_networks(monkeypatch)
    status = main(_cli_args(out / "photos", out, tmp_path / "w", "--allow-untrained"))
    assert status == 3
    assert {p: p.read_bytes() for p in inputs} == inputs                     # no input overwritten
    reports = {Path(r["input"]).relative_to(out / "photos").as_posix(): r for r in
               (json.loads(p.read_text()) for p in out.rglob("*.json") if p.name != "summary.json")}
    assert reports["a.png"]["status"] == "untrained" and reports["a.png"]["output"] == str(out / f"a{UNTRAINED_SUFFIX}")
    assert reports["photos/a.png"]["output"] == str(out / "photos" / f"a_png{UNTRAINED_SUFFIX}")
    assert reports["blocked.jpg"]["status"] == "rejected" and "cannot write" in reports["blocked.jpg"]["reason"]
    assert not (out / "a.FALLBACK_BLURRED.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["untrained"], summary["rejected"]) == (2, 1)


def test_report_survives_non_finite_values(tmp_path):
    """A NaN score, similarity or box (a broken network) becomes null: the report can
    always be written with allow_nan=False, after the image was."""
    config = get_config("smoke", SETTINGS)
    nan = np.float32("nan")
    diag = {"success": [False], "detected": [True], "valid": [False], "deidentified": [False],
            "iterations": np.array([2]), "similarities": np.array([[nan]]), "score": np.array([nan]),
            "box": np.array([[nan, 0.1, 0.5, 0.5]], np.float32)}
    report = file_report(tmp_path / "a.png", tmp_path / "a.FALLBACK_BLURRED.png", diag, 0, config=config,
                         method="ours", judges=["vgg16"], geometry=(0, 0, 64, 64), side=64, size=(64, 64),
                         notes=[], untrained=[])
    text = json.dumps(report, allow_nan=False)
    assert report["score"] is None and report["box"] is None and report["similarities"] == {"vgg16": None}
    assert report["status"] == "fallback_face_pixelated" and "not valid" in report["reason"] and text


def test_enhance_shares_the_naming_and_the_walker(tmp_path, monkeypatch, capsys):
    """`jaxdeid enhance` (an identity network stands in for the trained enhancer: only
    the file handling is tested): dotted names keep their dots, clashing names are
    renamed, hidden images are reported, OUT inside IN is not read, OUT == IN is usage."""
    from jaxdeid.commands import enhance

    class Identity:
        def apply(self, variables, image):
            return image

    monkeypatch.setattr(enhance, "load_trained", lambda config, name: (Identity(), {}))
    src = tmp_path / "in"
    (src / "out").mkdir(parents=True)
    pixels = np.random.default_rng(1).integers(0, 255, (20, 24, 3), dtype=np.uint8)
    for name in ("john.smith.png", "john.png", "b.jpg", "b.png", ".hidden.png", "out/old.png"):
        Image.fromarray(pixels).save(src / name)
    assert main(["enhance", str(src), str(src / "out")]) == 3
    assert f"{src / '.hidden.png'}: {HIDDEN_REASON}" in capsys.readouterr().err
    assert sorted(p.relative_to(src / "out").as_posix() for p in (src / "out").rglob("*.png")) == [
        "b_jpg.png", "b_png.png", "john.png", "john.smith.png", "old.png"]
    assert main(["enhance", str(src), str(src)]) == 2


def test_settings_weaker_than_the_defaults_are_listed_and_never_private():
    """Each weakening of a privacy setting is named (so every output of such a run is
    written as *.WEAKENED_NOT_PRIVATE.png, status weakened_settings); the defaults and
    stricter settings are not."""
    from jaxdeid.deid.pipeline import weakened_settings

    assert weakened_settings(get_config("small")) == []
    assert weakened_settings(get_config("small", ["recognizer.threshold=0.2", "crop.score_threshold=0.9"])) == []
    weaker = weakened_settings(get_config("small", [
        "recognizer.threshold=0.5", "recognizer.judges=('vgg16','resnet50')", "deid.judge_views=output",
        "crop.score_threshold=0.1", "crop.iou_threshold=0.3", "deid.fallback_margin=0.1"]))
    assert [w.split("=")[0].split(" ")[0] for w in weaker] == [
        "recognizer.threshold", "recognizer.judges", "deid.judge_views", "crop.score_threshold",
        "crop.iou_threshold", "deid.fallback_margin"]
    assert "mobilenetv3, senet50" in weaker[1]
    assert exit_status({"private": 0, "fallback": 0, "untrained": 0, "weakened": 2, "rejected": 0}) == 3
    assert deidentify.WEAKENED_SUFFIX in deidentify.IMAGE_SUFFIXES
