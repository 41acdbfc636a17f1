"""Random-access data sources: SynthFaces, VGGFace2 (tfds manual_dir) and plain folders.

`get_source(config, split)` in `catalog` is the one entry point (re-exported by `jaxdeid.data`).
Every source has the same surface:

    len(src), src.labels (int32 identity ids), src.num_identities,
    src.get(indices)    -> {"image": float32 [B,R,R,3], "label": int32 [B]}     R = data.resolution
    src.scenes(indices) -> {"image": float32 [B,S,S,3], "box": float32 [B,4],
                            "label": int32 [B]}                                   S = data.scene_resolution
    src.skipped         -> [(path, reason), ...] files left out of this split

Storage (``config.data.storage``):

* ``"direct"`` renders SynthFaces on the fly / reads image files on the fly. Zero
  start-up cost, so it is the default of the **smoke** preset: tests and CI must
  start in seconds, and at 32 px one busy CPU core renders ~200 faces/s (a smoke
  batch of 8 in ~40 ms), less than a training step takes.
* ``"tfds"`` prepares the split once with a tensorflow-datasets builder into
  ``array_record`` files under ``config.data.data_dir`` and reads them back with
  ``tfds`` random access (`ArrayRecordDataSource`), no TensorFlow involved: images
  are PNG-encoded with Pillow when writing and decoded with Pillow when reading.
  Default for **small** and **paper**, where a run reads every example many times
  and decoding a stored PNG (a 64-px batch of 32 in ~50 ms on a busy core) is far
  cheaper than rendering it again (~130 faces/s at 64 px, ~7 scenes/s at 128 px),
  or than decoding a large VGGFace2 JPEG and cropping it again. SynthFaces faces
  and scenes are prepared separately, each on first use, so a recognizer never
  waits for scenes; and each split separately, so evaluating on the 1 % test split
  renders only that split.

Both storages give the same examples in the same order for the same config: for
SynthFaces the same bytes; for folders the stored crops are rounded to 8 bits
(within 0.5/255 of the direct crops). The tests check both.

Splits (paper §4.1): 98:1:1 at random over images (``split_by="image"``, the paper's
protocol; one person appears in several splits), or over identities
(``split_by="identity"``, disjoint people, for open-set evaluation). Each non-empty
fraction gets at least one item, so tiny fixtures still have a val and a test split.
Labels are the data set's global identity ids in both modes; ``num_identities`` is
their count over the whole data set.
"""

from __future__ import annotations

import csv
import hashlib
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path

import ml_collections
import numpy as np
from PIL import Image

from ..progress import progress
from . import synthfaces
from .images import ImageError, is_image_candidate, letterbox, read_image, resize

SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------- splits

def split_counts(n: int, fractions) -> tuple[int, int, int]:
    """Item counts for (train, val, test): rounded fractions, at least 1 for each non-zero one."""
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.shape != (3,) or (fractions < 0).any() or fractions.sum() <= 0:
        raise ValueError(f"data.split must be three non-negative fractions, got {tuple(fractions)}")
    fractions = fractions / fractions.sum()
    counts = []
    for f in fractions[1:]:
        c = int(round(n * f))
        counts.append(max(c, 1) if f > 0 and n >= 3 else c)
    val, test = counts
    train = n - val - test
    if train < 0:
        raise ValueError(f"cannot split {n} items as {tuple(fractions)}")
    return train, val, test


def split_indices(n: int, fractions, seed: int) -> dict[str, np.ndarray]:
    """A seeded random partition of ``range(n)`` into train/val/test (each sorted)."""
    perm = np.random.default_rng([0x5917, int(seed) & 0xFFFFFFFF]).permutation(n)
    train, val, _ = split_counts(n, fractions)
    parts = (perm[:train], perm[train:train + val], perm[train + val:])
    return {name: np.sort(part).astype(np.int64) for name, part in zip(SPLITS, parts)}


def split_examples(example_labels: np.ndarray, fractions, split_by: str, seed: int) -> dict[str, np.ndarray]:
    """Indices of examples per split, by image (paper) or by identity (disjoint people)."""
    example_labels = np.asarray(example_labels)
    if split_by == "image":
        return split_indices(len(example_labels), fractions, seed)
    if split_by == "identity":
        ids = np.unique(example_labels)
        parts = split_indices(len(ids), fractions, seed)
        return {name: np.flatnonzero(np.isin(example_labels, ids[part])).astype(np.int64)
                for name, part in parts.items()}
    raise ValueError(f"data.split_by must be 'image' or 'identity', got {split_by!r}")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")


def _report_skips(skipped, where: str) -> None:
    for path, reason in skipped:
        print(f"jaxdeid data: skipped {path}: {reason}", file=sys.stderr)
    if skipped:
        print(f"jaxdeid data: {len(skipped)} file(s) skipped in {where}", file=sys.stderr)


# ----------------------------------------------------------------------------- SynthFaces

def synthfaces_split(config, split: str) -> np.ndarray:
    """Global example numbers of a SynthFaces split (example k = identity k // n, sample k % n)."""
    data = config.data
    per = int(data.images_per_identity)
    labels = np.repeat(np.arange(int(data.num_identities), dtype=np.int32), per)
    return split_examples(labels, data.split, data.split_by, data.seed)[split]


class SynthFacesSource:
    """SynthFaces rendered on the fly (``storage="direct"``): nothing is stored."""

    def __init__(self, config, split: str):
        check_split(split)
        self.resolution = int(config.data.resolution)
        self.scene_resolution = int(config.data.scene_resolution)
        self.seed = int(config.data.seed)
        self.num_identities = int(config.data.num_identities)
        self._per = int(config.data.images_per_identity)
        self.examples = synthfaces_split(config, split)
        self.labels = (self.examples // self._per).astype(np.int32)
        self.samples = (self.examples % self._per).astype(np.int32)
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.examples)

    def get(self, indices) -> dict[str, np.ndarray]:

        indices = np.asarray(indices, dtype=np.int64)
        faces = synthfaces.render_faces(self.labels[indices], self.samples[indices], self.resolution, seed=self.seed)
        return {"image": np.asarray(faces, np.float32) / 255.0, "label": self.labels[indices]}

    def scenes(self, indices) -> dict[str, np.ndarray]:

        indices = np.asarray(indices, dtype=np.int64)
        frames, boxes = synthfaces.render_scenes(self.labels[indices], self.samples[indices], self.scene_resolution,
                                      seed=self.seed)
        return {"image": np.asarray(frames, np.float32) / 255.0, "box": np.asarray(boxes, np.float32),
                "label": self.labels[indices]}


# ----------------------------------------------------------------------------- folders

@dataclass
class FaceIndex:
    """Every candidate image of a folder data set, before splitting.

    ``boxes`` are loose face boxes in pixels (x, y, w, h) or NaN where none is known
    (then the whole image is the face).
    """

    root: Path
    paths: list[Path]
    labels: np.ndarray                 # int32 [N] identity id
    identity_names: list[str]          # id -> folder name (e.g. n000002)
    boxes: np.ndarray                  # float32 [N, 4] (x, y, w, h) pixels, NaN = unknown
    skipped: list[tuple[str, str]] = field(default_factory=list)   # not even a candidate


def _list_identity_folders(root: Path, skipped: list) -> list[tuple[str, list[Path]]]:
    out = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            skipped.append((str(entry), "not inside an identity folder (<root>/<identity>/<image>)"))
            continue
        files = []
        for path in sorted(p for p in entry.rglob("*") if p.is_file() and not p.name.startswith(".")):
            if is_image_candidate(path):
                files.append(path)
            else:
                skipped.append((str(path), f"not an image file (extension {path.suffix or 'none'!r})"))
        out.append((entry.name, files))
    return out


def index_folder(root) -> FaceIndex:
    """A ``<root>/<identity>/<image>`` folder; identities are sorted folder names."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (expected <root>/<identity>/<image>)")
    skipped: list = []
    paths, labels, names = [], [], []
    for name, files in _list_identity_folders(root, skipped):
        if not files:
            skipped.append((str(root / name), "identity folder with no image files"))
            continue
        names.append(name)
        paths += files
        labels += [len(names) - 1] * len(files)
    if not paths:
        raise FileNotFoundError(f"{root}: no image files found (expected <root>/<identity>/<image>)")
    boxes = np.full((len(paths), 4), np.nan, np.float32)
    return FaceIndex(root, paths, np.asarray(labels, np.int32), names, boxes, skipped)


def read_loose_boxes(csv_path: Path) -> dict[str, tuple[float, float, float, float]]:
    """VGGFace2 ``loose_bb_*.csv``: NAME_ID (e.g. ``n000002/0001_01``), X, Y, W, H in pixels."""
    boxes = {}
    with open(csv_path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or [h.strip().upper() for h in header[:5]] != ["NAME_ID", "X", "Y", "W", "H"]:
            raise ValueError(f"{csv_path}: expected header NAME_ID,X,Y,W,H, got {header}")
        for row in reader:
            if len(row) < 5:
                continue
            try:
                boxes[row[0].strip()] = tuple(float(v) for v in row[1:5])
            except ValueError:
                continue  # a malformed row: that image falls back to its whole frame
    return boxes


def index_vggface2(root) -> FaceIndex:
    """VGGFace2 in its published layout under a tfds manual_dir.

    ``train/`` and ``test/`` of ``n000xxx/*.jpg`` (their identities are disjoint) are
    pooled, as the paper draws its images at random from the data set and splits
    them 98:1:1 itself; ``bb_landmark/loose_bb_{train,test}.csv`` give the boxes.
    """
    root = Path(root).expanduser()
    parts = [p for p in ("train", "test") if (root / p).is_dir()]
    if not parts:
        raise FileNotFoundError(f"{root}: not a VGGFace2 folder (no train/ or test/ inside); "
                                "set data.root to the tfds manual_dir holding train/, test/ and bb_landmark/")
    skipped: list = []
    paths, labels, boxes = [], [], []
    names: dict[str, int] = {}
    for part in parts:
        csv_path = root / "bb_landmark" / f"loose_bb_{part}.csv"
        loose = read_loose_boxes(csv_path) if csv_path.is_file() else {}
        if not csv_path.is_file():
            skipped.append((str(csv_path), "missing loose bounding-box file: whole images used as faces"))
        for name, files in _list_identity_folders(root / part, skipped):
            if not files:
                skipped.append((str(root / part / name), "identity folder with no image files"))
                continue
            label = names.setdefault(name, len(names))
            for path in files:
                paths.append(path)
                labels.append(label)
                boxes.append(loose.get(f"{name}/{path.stem}", (np.nan,) * 4))
    if not paths:
        raise FileNotFoundError(f"{root}: no image files in train/ or test/")
    return FaceIndex(root, paths, np.asarray(labels, np.int32), list(names),
                     np.asarray(boxes, np.float32).reshape(-1, 4), skipped)


def _valid_box(box, height: int, width: int) -> bool:
    x, y, w, h = (float(v) for v in box)
    return (np.isfinite([x, y, w, h]).all() and w >= 2 and h >= 2
            and x < width and y < height and x + w > 0 and y + h > 0)


def face_crop(image: np.ndarray, box_xywh, margin: float, resolution: int) -> np.ndarray:
    """A square crop around the face box, enlarged by `margin` per side, black outside the frame.

    The square keeps the aspect ratio of the face (a plain resize of the loose box
    would squash it); without a valid box the whole image is letterboxed.
    """
    height, width = image.shape[:2]
    if _valid_box(box_xywh, height, width):
        x, y, w, h = (float(v) for v in box_xywh)
        side = max(w, h) * (1.0 + 2.0 * margin)
        cx, cy = x + w / 2.0, y + h / 2.0
    else:
        side = float(max(height, width))
        cx, cy = width / 2.0, height / 2.0
    side_px = max(int(round(side)), 1)
    x0, y0 = int(round(cx - side_px / 2.0)), int(round(cy - side_px / 2.0))
    canvas = np.zeros((side_px, side_px, 3), np.float32)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + side_px, width), min(y0 + side_px, height)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return resize(canvas, resolution, resolution)


def scene_with_box(image: np.ndarray, box_xywh, scene_resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole frame letterboxed into an S×S square and its face box (y0, x0, y1, x1) in [0, 1]."""
    height, width = image.shape[:2]
    frame, (top, left, new_h, new_w) = letterbox(image, scene_resolution)
    if _valid_box(box_xywh, height, width):
        x, y, w, h = (float(v) for v in box_xywh)
    else:
        x, y, w, h = 0.0, 0.0, float(width), float(height)
    x0, y0 = max(x, 0.0), max(y, 0.0)
    x1, y1 = min(x + w, float(width)), min(y + h, float(height))
    box = np.array([top + y0 * new_h / height, left + x0 * new_w / width,
                    top + y1 * new_h / height, left + x1 * new_w / width], np.float32) / scene_resolution
    return frame, np.clip(box, 0.0, 1.0)


def load_index(config) -> FaceIndex:
    """The candidate list for ``data.name`` in {"vggface2", "folder"}, subsampled to ``data.max_images``."""
    data = config.data
    if not data.root:
        raise ValueError(f"data.name={data.name!r} needs data.root (--set data.root=/path/to/folder)")
    index = index_vggface2(data.root) if data.name == "vggface2" else index_folder(data.root)
    if data.max_images and len(index.paths) > int(data.max_images):
        # Paper §4.1: "300,000 images chosen at random" from VGGFace2.
        keep = np.sort(np.random.default_rng([0xC401, int(data.seed)]).choice(
            len(index.paths), int(data.max_images), replace=False))
        index = FaceIndex(index.root, [index.paths[i] for i in keep], index.labels[keep],
                          index.identity_names, index.boxes[keep], index.skipped)
    return index


def folder_split(config, split: str) -> tuple[FaceIndex, np.ndarray]:
    index = load_index(config)
    return index, split_examples(index.labels, config.data.split, config.data.split_by, config.data.seed)[split]


def load_example(path, box, config) -> dict[str, np.ndarray]:
    """One file -> face crop, letterboxed scene and scene box; raises `ImageError` for bad files."""
    data = config.data
    image, _ = read_image(path, max_pixels=int(data.max_image_pixels))
    face = face_crop(image, box, float(data.crop_margin), int(data.resolution))
    scene, scene_box = scene_with_box(image, box, int(data.scene_resolution))
    return {"image": face, "scene": scene, "box": scene_box}


class FolderSource:
    """VGGFace2 or ``<root>/<identity>/<image>`` read from the files (``storage="direct"``).

    Every file of the split is read once when the source is built; files that fail
    are reported (one line each, on stderr and in ``skipped``) and left out.
    """

    def __init__(self, config, split: str):

        check_split(split)
        self.config = config
        index, members = folder_split(config, split)
        self.num_identities = len(index.identity_names)
        self.identity_names = index.identity_names
        self.skipped = list(index.skipped)
        keep = []
        for i in progress(members, desc=f"checking {config.data.name} {split}"):
            try:
                read_image(index.paths[i], max_pixels=int(config.data.max_image_pixels))
                keep.append(i)
            except ImageError as err:
                self.skipped.append((err.path, err.reason))
        _report_skips(self.skipped, f"{index.root} ({split})")
        if not keep:
            raise FileNotFoundError(f"{index.root}: no usable image in split {split!r}")
        keep = np.asarray(keep, np.int64)
        self.paths = [index.paths[i] for i in keep]
        self.boxes = index.boxes[keep]
        self.labels = index.labels[keep]

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, indices) -> list[dict]:
        return [load_example(self.paths[i], self.boxes[i], self.config) for i in np.asarray(indices, np.int64)]

    def get(self, indices) -> dict[str, np.ndarray]:
        items = self._load(indices)
        return {"image": np.stack([it["image"] for it in items]),
                "label": self.labels[np.asarray(indices, np.int64)]}

    def scenes(self, indices) -> dict[str, np.ndarray]:
        items = self._load(indices)
        return {"image": np.stack([it["scene"] for it in items]), "box": np.stack([it["box"] for it in items]),
                "label": self.labels[np.asarray(indices, np.int64)]}


# ----------------------------------------------------------------------------- tfds

class TfdsSource:
    """A split prepared by tfds builders, read through `ArrayRecordDataSource` (no TensorFlow).

    ``open_part(part)`` returns a prepared builder holding ``part`` ("faces": image +
    label; "scenes": scene + box + label). SynthFaces keeps them apart, so training
    a recognizer never waits for scenes to be rendered; a folder data set stores
    both in one builder (decoding the file is the shared cost).
    """

    # Reads stored records: nothing to gain from worker processes, and the builder handles
    # (closures over the config) cannot be pickled to one (recognizers.splits.InMemorySource).
    renders_on_read = False

    def __init__(self, open_part, split: str):
        check_split(split)
        self.split = split
        self._open_part = open_part
        self._data: dict[str, object] = {}
        meta = self._builder_meta("faces")
        self.num_identities = int(meta["num_identities"])
        self.labels = np.asarray(meta["labels"][split], np.int32)
        self.skipped = [tuple(s) for s in meta.get("skipped", {}).get(split, [])]

    def _builder_meta(self, part: str):
        builder = self._open_part(part)
        if self.split not in builder.info.splits:  # tfds writes no empty split
            raise FileNotFoundError(f"{builder.data_dir}: no usable image in split {self.split!r}")
        source = builder.as_data_source(split=self.split)
        labels = builder.info.metadata["labels"][self.split]
        if len(source) != len(labels):
            raise RuntimeError(f"{builder.data_dir}: split {self.split} has {len(source)} records but its "
                               f"metadata lists {len(labels)} labels; delete that folder and prepare again")
        if part != "faces" and hasattr(self, "labels") and not np.array_equal(labels, self.labels):
            raise RuntimeError(f"{builder.data_dir}: scenes and faces disagree on the labels of {self.split}")
        self._data[part] = source
        return builder.info.metadata

    def _records(self, part: str, indices) -> list[dict]:
        if part not in self._data:
            self._builder_meta(part)
        return self._data[part].__getitems__([int(i) for i in np.asarray(indices, np.int64)])

    def __len__(self) -> int:
        return len(self.labels)

    def get(self, indices) -> dict[str, np.ndarray]:
        records = self._records("faces", indices)
        return {"image": np.stack([r["image"] for r in records]).astype(np.float32) / 255.0,
                "label": np.asarray([r["label"] for r in records], np.int32)}

    def scenes(self, indices) -> dict[str, np.ndarray]:
        records = self._records("scenes", indices)
        return {"image": np.stack([r["scene"] for r in records]).astype(np.float32) / 255.0,
                "box": np.stack([r["box"] for r in records]).astype(np.float32),
                "label": np.asarray([r["label"] for r in records], np.int32)}


def png_bytes(image_uint8: np.ndarray) -> bytes:
    """PNG encoding by Pillow: tfds stores bytes as given, never calling TensorFlow's encoder."""

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image_uint8)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def render_png_chunk(part: str, identities, samples, resolution: int, seed: int) -> list[tuple[bytes, np.ndarray]]:
    """Renders SynthFaces faces or scenes and PNG-encodes them (a process-pool work item)."""

    if part == "faces":
        images = synthfaces.render_faces(identities, samples, resolution, seed=seed)
        boxes = np.zeros((len(images), 4), np.float32)
    else:
        images, boxes = synthfaces.render_scenes(identities, samples, resolution, seed=seed)
    return [(png_bytes(image), box) for image, box in zip(np.asarray(images), np.asarray(boxes, np.float32))]


def load_png_chunk(paths, boxes, data: dict) -> list[tuple[bool, object]]:
    """Reads, crops and PNG-encodes files (a process-pool work item).

    Returns per file ``(True, {"image", "scene", "box"})`` or ``(False, (path, reason))``.
    """

    config = ml_collections.ConfigDict({"data": data})
    out = []
    for path, box in zip(paths, boxes):
        try:
            example = load_example(path, box, config)
        except ImageError as err:
            out.append((False, (err.path, err.reason)))
            continue
        out.append((True, {"image": png_bytes(to_uint8(example["image"])),
                           "scene": png_bytes(to_uint8(example["scene"])), "box": example["box"]}))
    return out


def config_fingerprint(config, fields: tuple[str, ...], extra: str = "") -> str:
    """A short stable hash of the data fields that change what a prepared data set contains."""
    text = repr([(name, config.data[name]) for name in fields]) + extra
    return hashlib.sha1(text.encode()).hexdigest()[:10]
