"""Data sources and batching: fixtures written here (VGGFace2 layout, plain folder), read back via both storages."""

import csv
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxdeid.configs import get_config
from jaxdeid.data import batch_indices, get_source, make_batch_fn, pk_batch_indices
from jaxdeid.data.batching import iterate_batches
from jaxdeid.data.sources import split_counts, split_examples

IDENTITIES = ("n000002", "n000005", "n000017")   # VGGFace2-style identity folders


def _face_jpeg(path, seed, size=(60, 48)):
    """A small JPEG with a bright 'face' rectangle where its loose box says."""
    width, height = size
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    image[10:40, 12:36] = 220
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=95)


@pytest.fixture
def vggface2_root(tmp_path):
    """train/ + test/ identity folders with loose_bb CSVs, plus two bad files."""
    root = tmp_path / "vggface2"
    rows = {"train": [], "test": []}
    seed = 0
    for part, ids in (("train", IDENTITIES[:2]), ("test", IDENTITIES[2:])):
        for name in ids:
            for k in range(1, 5):
                stem = f"{k:04d}_01"
                _face_jpeg(root / part / name / f"{stem}.jpg", seed)
                rows[part].append([f"{name}/{stem}", 12, 10, 24, 30])
                seed += 1
    (root / "train" / IDENTITIES[0] / "0009_01.jpg").write_text("not a jpeg")  # text named .jpg
    (root / "train" / IDENTITIES[1] / "0010_01.jpg").write_bytes(b"")            # empty
    (root / "bb_landmark").mkdir()
    for part, part_rows in rows.items():
        with open(root / "bb_landmark" / f"loose_bb_{part}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["NAME_ID", "X", "Y", "W", "H"])
            writer.writerows(part_rows)
    return root


@pytest.fixture
def folder_root(tmp_path):
    """<root>/<identity>/<image>: 4 people x 5 images of mixed formats, one grayscale, one RGBA."""
    root = tmp_path / "faces"
    for i in range(4):
        for k in range(5):
            _face_jpeg(root / f"person{i}" / f"{k}.jpg", 100 + 10 * i + k, size=(40, 40))
    Image.fromarray(np.full((32, 32), 128, np.uint8), mode="L").save(root / "person0" / "gray.png")
    Image.fromarray(np.full((32, 32, 4), 200, np.uint8), mode="RGBA").save(root / "person1" / "rgba.png")
    (root / "person2" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    return root


def _config(name, root="", storage="direct", data_dir="", **overrides):
    config = get_config("smoke")
    config.data.name = name
    config.data.root = str(root)
    config.data.storage = storage
    config.data.data_dir = str(data_dir)
    for key, value in overrides.items():
        config.data[key] = value
    return config


def _fake_render_faces(identities, samples, resolution, seed=0):
    """A cheap stand-in renderer for storage tests: pixel values encode (identity, sample, seed)."""
    ids, smp = np.asarray(identities), np.asarray(samples)
    base = (ids * 7 + smp * 3 + seed) % 256
    grid = np.add.outer(base, np.arange(resolution * resolution * 3)).reshape(len(ids), resolution, resolution, 3)
    return (grid % 256).astype(np.uint8)


def _fake_render_scenes(identities, samples, scene_resolution, seed=0):
    boxes = np.stack([np.full(len(identities), 0.1), 0.2 + 0.01 * np.asarray(samples),
                      np.full(len(identities), 0.6), 0.7 + 0.01 * np.asarray(samples)], 1).astype(np.float32)
    return _fake_render_faces(identities, samples, scene_resolution, seed), boxes


@pytest.fixture
def fake_renderer(monkeypatch):
    from jaxdeid.data import synthfaces

    monkeypatch.setattr(synthfaces, "render_faces", _fake_render_faces)
    monkeypatch.setattr(synthfaces, "render_scenes", _fake_render_scenes)


# ----------------------------------------------------------------------------- splits

@pytest.mark.parametrize("n", [3, 100, 384, 1000, 32000])
def test_split_counts_98_1_1(n):
    train, val, test = split_counts(n, (0.98, 0.01, 0.01))
    assert train + val + test == n and val >= 1 and test >= 1
    assert abs(val - 0.01 * n) <= 1 and abs(test - 0.01 * n) <= 1


@pytest.mark.parametrize("split_by", ["image", "identity"])
def test_synthfaces_splits_disjoint_and_covering(split_by):
    config = _config("synthfaces", split_by=split_by, num_identities=300, images_per_identity=4)
    sources = {s: get_source(config, s) for s in ("train", "val", "test")}
    examples = [sources[s].examples for s in ("train", "val", "test")]
    everything = np.concatenate(examples)
    assert len(everything) == 1200 and len(np.unique(everything)) == 1200   # disjoint and covering
    unit = 300 if split_by == "identity" else 1200
    for s, fraction in zip(("train", "val", "test"), (0.98, 0.01, 0.01)):
        assert abs(len(sources[s]) / 1200 - fraction) <= 1.0 / unit + 1e-9
        assert sources[s].labels.dtype == np.int32 and sources[s].num_identities == 300
    people = [set(sources[s].labels.tolist()) for s in ("train", "val", "test")]
    if split_by == "identity":
        assert not (people[0] & people[1]) and not (people[0] & people[2]) and not (people[1] & people[2])
    else:
        assert people[1] <= people[0]  # by image: test people are also seen in training


def test_split_examples_is_seeded():
    labels = np.repeat(np.arange(50), 4)
    a = split_examples(labels, (0.98, 0.01, 0.01), "image", 0)
    b = split_examples(labels, (0.98, 0.01, 0.01), "image", 0)
    c = split_examples(labels, (0.98, 0.01, 0.01), "image", 1)
    assert all(np.array_equal(a[s], b[s]) for s in a) and not np.array_equal(a["test"], c["test"])


# ----------------------------------------------------------------------------- SynthFaces

def test_synthfaces_direct_uses_the_real_renderer():
    config = _config("synthfaces")
    source = get_source(config, "test")
    batch = source.get(np.arange(2))
    assert batch["image"].shape == (2, 32, 32, 3) and batch["image"].dtype == np.float32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0 and batch["image"].std() > 0.02
    np.testing.assert_array_equal(batch["label"], source.labels[:2])
    scenes = source.scenes(np.arange(2))
    assert scenes["image"].shape == (2, 64, 64, 3) and scenes["box"].shape == (2, 4)
    assert (scenes["box"][:, 2:] > scenes["box"][:, :2]).all()
    again = get_source(config, "test").get(np.arange(2))
    assert np.array_equal(again["image"], batch["image"])  # same seed -> same bytes


def test_synthfaces_tfds_matches_direct(tmp_path, fake_renderer):
    config = _config("synthfaces", storage="tfds", data_dir=tmp_path / "tfds", num_identities=10,
                     images_per_identity=3)
    prepared = get_source(config, "train")
    prepared.get(np.arange(3))
    prepared_now = sorted(p.parent.parent.name.rsplit("_", 1)[0] for p in (tmp_path / "tfds").rglob("*.array_record*"))
    assert prepared_now == ["synthfaces_faces_train"]   # scenes and other splits: only when first asked for
    config.data.storage = "direct"
    direct = get_source(config, "train")
    assert len(prepared) == len(direct) == 28
    np.testing.assert_array_equal(prepared.labels, direct.labels)
    picks = np.array([0, 5, 27, 5])
    for fetch in ("get", "scenes"):
        a, b = getattr(prepared, fetch)(picks), getattr(direct, fetch)(picks)
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype
            np.testing.assert_allclose(a[key], b[key], atol=1e-6)
    # Prepared once: a second open reads the stored files (no re-render).
    files = sorted((tmp_path / "tfds").rglob("*array_record*"))
    assert len(files) == 2                         # (faces, scenes) of the train split
    mtimes = [f.stat().st_mtime_ns for f in files]
    config.data.storage = "tfds"
    assert len(get_source(config, "val")) == 1
    assert len(get_source(config, "train")) == 28
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert len(list((tmp_path / "tfds").rglob("*array_record*"))) == 3   # + faces of val


def test_no_tensorflow_anywhere():
    code = ("import sys, numpy as np\n"
            "from jaxdeid.data import tfds_builders, get_source\n"
            "import tensorflow_datasets\n"
            "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


# ----------------------------------------------------------------------------- folders

@pytest.mark.parametrize("storage", ["direct", "tfds"])
def test_vggface2_fixture(vggface2_root, tmp_path, storage, capsys):
    config = _config("vggface2", vggface2_root, storage, tmp_path / "tfds", split=(0.6, 0.2, 0.2))
    sources = {s: get_source(config, s) for s in ("train", "val", "test")}
    assert sum(len(s) for s in sources.values()) == 12          # 2 bad files of 14 skipped
    assert all(s.num_identities == 3 for s in sources.values())
    skipped = {p.split("/")[-1]: r for p, r in sum((s.skipped for s in sources.values()), [])}
    assert "0009_01.jpg" in skipped and "not an image" in skipped["0009_01.jpg"]
    assert "0010_01.jpg" in skipped and "empty" in skipped["0010_01.jpg"]
    labels = np.concatenate([s.labels for s in sources.values()])
    assert sorted(np.bincount(labels).tolist()) == [4, 4, 4]
    train = sources["train"]
    faces = train.get(np.arange(len(train)))
    assert faces["image"].shape == (len(train), 32, 32, 3) and faces["image"].dtype == np.float32
    # The loose box (x=12, y=10, w=24, h=30) is the bright block: the crop is mostly face.
    assert faces["image"][:, 8:24, 8:24].mean() > 0.7
    scenes = train.scenes(np.arange(2))
    assert scenes["image"].shape == (2, 64, 64, 3)
    # 60x48 frame letterboxed into 64x64: resized to 64x51 with 6 px of black above it.
    sx, sy, top = 64 / 60, 51 / 48, 6
    expected = np.array([top + 10 * sy, 12 * sx, top + 40 * sy, 36 * sx]) / 64
    assert scenes["image"][:, :top].max() == 0 and scenes["image"][:, top + 51:].max() == 0
    np.testing.assert_allclose(scenes["box"][0], expected, atol=1e-5)
    assert "skipped" in capsys.readouterr().err


def test_folder_fixture_direct_and_tfds_agree(folder_root, tmp_path, monkeypatch):
    from jaxdeid.data import tfds_builders

    monkeypatch.setattr(tfds_builders, "_CHUNK", 4)   # several work items: exercises the process pool
    direct = {s: get_source(_config("folder", folder_root, split=(0.5, 0.25, 0.25)), s)
              for s in ("train", "val", "test")}
    prepared = {s: get_source(_config("folder", folder_root, "tfds", tmp_path / "tfds", split=(0.5, 0.25, 0.25),
                                      prepare_workers=2), s)
                for s in ("train", "val", "test")}
    assert sum(len(s) for s in direct.values()) == 22   # 20 JPEGs + gray + RGBA; the corrupt PNG is skipped
    for split in direct:
        np.testing.assert_array_equal(direct[split].labels, prepared[split].labels)
        idx = np.arange(len(direct[split]))
        a, b = direct[split].get(idx), prepared[split].get(idx)
        np.testing.assert_allclose(a["image"], b["image"], atol=0.51 / 255)   # stored as 8-bit PNG
    reasons = [r for s in direct.values() for p, r in s.skipped if p.endswith("corrupt.png")]
    assert reasons and ("corrupt" in reasons[0] or "not an image" in reasons[0])


@pytest.mark.parametrize("storage", ["direct", "tfds"])
def test_split_with_only_bad_files(folder_root, tmp_path, storage):
    config = _config("folder", folder_root, storage, tmp_path / "tfds", split=(0.5, 0.25, 0.25))
    from jaxdeid.data.sources import folder_split

    index, val = folder_split(config, "val")
    for i in val:                                # every file of the val split becomes empty
        index.paths[i].write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no usable image in split 'val'"):
        get_source(config, "val")
    assert len(get_source(config, "train")) > 0 and len(get_source(config, "test")) > 0


def test_folder_missing_or_empty(tmp_path):
    (tmp_path / "empty" / "person").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no image files"):
        get_source(_config("folder", tmp_path / "empty"), "train")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        get_source(_config("folder", tmp_path / "nowhere"), "train")
    with pytest.raises(FileNotFoundError, match="not a VGGFace2 folder"):
        get_source(_config("vggface2", tmp_path / "empty"), "train")


# ----------------------------------------------------------------------------- batching

def test_batch_indices_epochs_and_determinism():
    n, batch = 10, 4
    stream = np.concatenate([batch_indices(n, batch, 7, p) for p in range(5)])   # 20 = two epochs
    assert sorted(stream[:10].tolist()) == list(range(10)) and sorted(stream[10:].tolist()) == list(range(10))
    assert not np.array_equal(stream[:10], stream[10:])                            # reshuffled per epoch
    assert np.array_equal(batch_indices(n, batch, 7, 3), batch_indices(n, batch, 7, 3))
    assert not np.array_equal(batch_indices(1000, 8, 7, 0), batch_indices(1000, 8, 8, 0))
    assert batch_indices(n, batch, 7, 2).dtype == np.int64
    with pytest.raises(ValueError):
        batch_indices(0, 4, 0, 0)


def test_pk_batches():
    labels = np.array([0] * 6 + [1] * 2 + [2] * 5 + [3] * 1 + [4] * 4, np.int32)
    for position in range(6):
        idx = pk_batch_indices(labels, 3, 4, seed=1, position=position)
        assert idx.shape == (12,) and idx.dtype == np.int64
        groups = labels[idx].reshape(3, 4)
        assert (groups == groups[:, :1]).all() and len(set(groups[:, 0].tolist())) == 3
        for row, person in zip(idx.reshape(3, 4), groups[:, 0]):
            if (labels == person).sum() >= 4:
                assert len(set(row.tolist())) == 4           # without replacement when possible
    assert np.array_equal(pk_batch_indices(labels, 3, 4, 1, 2), pk_batch_indices(labels, 3, 4, 1, 2))
    visited = np.concatenate([labels[pk_batch_indices(labels, 5, 2, 3, p)] for p in range(4)])
    assert np.bincount(visited).tolist() == [8] * 5          # identities drawn epoch-wise: equal visits
    firsts = [set(labels[pk_batch_indices(labels, 2, 1, 4, p)].tolist()) for p in range(4)]
    assert not firsts[0] & firsts[1] and not firsts[2] & firsts[3]   # 5 people, P=2: 2 batches per epoch
    with pytest.raises(ValueError, match="identities"):
        pk_batch_indices(labels, 6, 2, 0, 0)


def test_batch_fn_and_iterator_resume(fake_renderer):
    source = get_source(_config("synthfaces"), "train")
    batch_fn = make_batch_fn(source, 4, seed=3)
    straight = [b for _, b in iterate_batches(batch_fn, 0, 4)]
    resumed = [b for _, b in iterate_batches(batch_fn, 2, 4)]
    for a, b in zip(straight[2:], resumed):
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["label"], b["label"])
    assert straight[0]["image"].shape == (4, 32, 32, 3)
    pk = make_batch_fn(source, 0, seed=3, pk=(2, 3))(5)
    assert pk["label"].shape == (6,) and len(set(pk["label"][:3].tolist())) == 1


def test_prepared_split_preloads_into_memory_with_workers(tmp_path, fake_renderer):
    """The recognizers' in-memory train split from a prepared tfds split, several chunks and
    workers asked for (what a GPU run does): same images as the source, no pickling error."""
    from jaxdeid.recognizers.splits import InMemorySource

    config = _config("synthfaces", storage="tfds", data_dir=tmp_path / "tfds", num_identities=10,
                     images_per_identity=3)
    source = get_source(config, "train")
    held = InMemorySource(source, workers=2, chunk=8)
    picks = np.arange(len(source))
    np.testing.assert_allclose(held.get(picks)["image"], source.get(picks)["image"], atol=1 / 255)
    np.testing.assert_array_equal(held.get(picks)["label"], source.labels)
