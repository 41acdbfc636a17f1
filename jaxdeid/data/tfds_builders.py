"""tensorflow-datasets builders for SynthFaces and face folders, used without TensorFlow.

tfds 4.9 can write and read ``array_record`` data sets with no TensorFlow
installed, with one catch found on this machine: `tfds.features.Image` encodes
*NumPy arrays* through TensorFlow (``tf.image.encode_png``) and fails with
``No module named 'tensorflow'``. Handing it already-encoded PNG **bytes** takes a
pure-Python path, and reading back through `ArrayRecordDataSource` decodes with
Pillow. So every example here is PNG-encoded with Pillow before it reaches tfds.

Builders:

* `SynthFaces` (tfds name ``jaxdeid_synth_faces``): renders one split of
  `jaxdeid.data.synthfaces` at ``data.resolution`` (part "faces") or at
  ``data.scene_resolution`` (part "scenes", with their boxes). Each (part, split)
  is its own builder config, prepared on first use, so evaluating on the 1 % test
  split, or training a recognizer (faces only), renders nothing else.
* `FaceFolder` (``jaxdeid_face_folder``): reads a tfds ``manual_dir`` in VGGFace2's
  published layout (``data.name="vggface2"``) or any ``<root>/<identity>/<image>``
  folder (``"folder"``), crops the face with the loose box (plus margin) and
  letterboxes the frame; bad files are skipped and listed in the metadata.

Each builder config is named after a hash of the data fields that change its
content, so a different resolution or seed is prepared beside, never over, an
older one. Record order is the generation order (shuffling disabled): records
are the same examples, in the same order, as the ``storage="direct"`` source.
Labels and skipped files are stored in ``metadata.json`` so opening a prepared
split does not scan its records.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from . import sources
from .images import ImageError, check_header

# The fields of config.data that decide what a prepared data set holds.
SYNTHFACES_FIELDS = ("num_identities", "images_per_identity", "split", "split_by", "seed")
FOLDER_FIELDS = ("name", "root", "split", "split_by", "seed", "crop_margin", "max_images", "max_image_pixels")

# Renderer work item: large enough to vectorise, small enough to spread over workers
# and bound memory at 256-px scenes.
_CHUNK = 64


def _features(resolution: int, scene_resolution: int):
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(resolution, resolution, 3), encoding_format="png"),
        "scene": tfds.features.Image(shape=(scene_resolution, scene_resolution, 3), encoding_format="png"),
        "box": tfds.features.Tensor(shape=(4,), dtype=np.float32),      # (y0, x0, y1, x1) in [0, 1] of the scene
        "label": tfds.features.Scalar(dtype=np.int32),                  # identity id
    })


@dataclasses.dataclass
class DataConfig(tfds.core.BuilderConfig):
    """A tfds builder config carrying the `config.data` section it was made from."""

    data: dict = dataclasses.field(default_factory=dict)


class _Builder(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version."}

    # tfds locates a builder's source through `importlib_resources`, a package it does not
    # declare (absent on a fresh machine: "No module named 'importlib_resources'"). The
    # path only serves to find a checksums file, which these builders do not have.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(__file__)

    @property
    def data(self):

        return ml_collections.ConfigDict(self.builder_config.data)

    def _info(self) -> tfds.core.DatasetInfo:
        data = self.builder_config.data
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=_features(int(data["resolution"]), int(data["scene_resolution"])),
            supervised_keys=("image", "label"),
            disable_shuffling=True,   # keep the order of the direct source (same examples, same order)
            metadata=tfds.core.MetadataDict(),
        )


class SynthFaces(_Builder):
    """SynthFaces: procedural identities rendered as aligned face crops ("faces") or as scenes with boxes ("scenes")."""

    name = "jaxdeid_synth_faces"

    def _info(self) -> tfds.core.DatasetInfo:
        data = self.builder_config.data
        if data["part"] == "faces":
            features = tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(data["resolution"],) * 2 + (3,), encoding_format="png"),
                "label": tfds.features.Scalar(dtype=np.int32),
            })
        else:
            features = tfds.features.FeaturesDict({
                "scene": tfds.features.Image(shape=(data["scene_resolution"],) * 2 + (3,), encoding_format="png"),
                "box": tfds.features.Tensor(shape=(4,), dtype=np.float32),   # (y0, x0, y1, x1) in [0, 1]
                "label": tfds.features.Scalar(dtype=np.int32),
            })
        return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=features,
                                     disable_shuffling=True, metadata=tfds.core.MetadataDict())

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: the data are rendered
        config = _as_config(self.data)
        # One split per builder: evaluating on the 1 % test split must not wait for the
        # 98 % train split to be rendered.
        split = self.data.only_split
        examples = sources.synthfaces_split(config, split)
        self.info.metadata["num_identities"] = int(self.data.num_identities)
        per = int(self.data.images_per_identity)
        self.info.metadata["labels"] = {split: (examples // per).astype(int).tolist()}
        self.info.metadata["skipped"] = {split: []}
        return {split: self._generate_examples(examples)}

    def _generate_examples(self, examples: np.ndarray):
        part = self.data.part
        per = int(self.data.images_per_identity)
        resolution = int(self.data.resolution if part == "faces" else self.data.scene_resolution)
        chunks = [examples[start:start + _CHUNK] for start in range(0, len(examples), _CHUNK)]
        jobs = [(part, (chunk // per).astype(np.int32), (chunk % per).astype(np.int32), resolution,
                 int(self.data.seed)) for chunk in chunks]
        labels = [job[1] for job in jobs]

        def records(k, rendered):
            for example, label, (png, box) in zip(chunks[k], labels[k], rendered):
                record = {"label": int(label)}
                if part == "faces":
                    record["image"] = png
                else:
                    record.update(scene=png, box=box)
                yield int(example), record

        workers = _workers(self.data.prepare_workers)
        for k, rendered in enumerate(_map_in_order(sources.render_png_chunk, jobs, workers)):
            yield from records(k, rendered)


def _map_in_order(fn, jobs: list[tuple], workers: int):
    """``fn(*job)`` for each job, in order, over a process pool when it helps.

    A broken pool (e.g. a script without ``if __name__ == "__main__":`` under the
    spawn start method) costs speed, not the run: the remaining jobs run here.
    """
    done = 0
    workers = min(workers, len(jobs))
    if workers > 1:
        try:
            with _pool(workers) as pool:
                for result in pool.map(fn, *zip(*jobs)):
                    yield result
                    done += 1
        except BrokenProcessPool:
            print("jaxdeid data: worker processes failed; going on in this process", file=sys.stderr)
    for job in jobs[done:]:
        yield fn(*job)


def _workers(requested) -> int:
    return int(requested) if requested and int(requested) > 0 else (os.cpu_count() or 1)


def _pool(workers: int):
    # Fork is cheapest, but once JAX is imported the parent runs threads that a fork would
    # copy in a broken state; then spawn (which needs the usual `__main__` guard in scripts).
    method = "fork" if "jax" not in sys.modules and "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))


class FaceFolder(_Builder):
    """Faces from a folder: VGGFace2's published layout or any <root>/<identity>/<image> tree."""

    name = "jaxdeid_face_folder"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    VGGFace2 (data.name=vggface2): put the published archives, extracted, in the
    manual_dir (data.root): train/n000xxx/*.jpg, test/n000xxx/*.jpg and
    bb_landmark/loose_bb_train.csv, bb_landmark/loose_bb_test.csv.
    Any other face set (data.name=folder): <root>/<identity>/<image>.
    """

    def _split_generators(self, dl_manager):
        config = _as_config(self.data, root=str(dl_manager.manual_dir))
        index = sources.load_index(config)
        splits = sources.split_examples(index.labels, config.data.split, config.data.split_by, config.data.seed)
        self._index, self._config = index, config
        self._labels = {name: [] for name in sources.SPLITS}
        self._skipped = {name: [list(s) for s in index.skipped] for name in sources.SPLITS}
        self.info.metadata["num_identities"] = len(index.identity_names)
        self.info.metadata["identity_names"] = list(index.identity_names)
        # Filled while generating (a bad file is only known once read); tfds writes the
        # metadata after all splits have been generated.
        self.info.metadata["labels"] = self._labels
        self.info.metadata["skipped"] = self._skipped
        # tfds cannot write an empty split, so a split is generated only if at least one of
        # its files has a readable header (full decoding happens once, while generating).
        generators = {}
        for name, members in splits.items():
            usable = []
            for i in members:
                try:
                    check_header(index.paths[i], max_pixels=int(config.data.max_image_pixels))
                    usable.append(i)
                except ImageError as err:
                    self._skipped[name].append([err.path, err.reason])
                    print(f"jaxdeid data: skipped {err.path}: {err.reason}", file=sys.stderr)
            if usable:
                generators[name] = self._generate_examples(name, np.asarray(usable, np.int64))
        return generators

    def _generate_examples(self, split: str, members: np.ndarray):
        index, config = self._index, self._config
        data = config.data.to_dict()
        chunks = [members[start:start + _CHUNK] for start in range(0, len(members), _CHUNK)]
        jobs = [([str(index.paths[i]) for i in chunk], index.boxes[chunk], data) for chunk in chunks]
        workers = _workers(config.data.prepare_workers)
        for chunk, results in zip(chunks, _map_in_order(sources.load_png_chunk, jobs, workers)):
            for i, (ok, payload) in zip(chunk, results):
                if not ok:
                    self._skipped[split].append(list(payload))
                    print(f"jaxdeid data: skipped {payload[0]}: {payload[1]}", file=sys.stderr)
                    continue
                self._labels[split].append(int(index.labels[i]))
                yield int(i), {**payload, "label": int(index.labels[i])}


def _as_config(data, root: str | None = None):
    """A minimal full config (only ``.data``) for the shared split / crop helpers."""

    config = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict(dict(data))
    if root is not None:
        config.data.root = root
    return config


def _quiet_tfds():
    """tfds logs a warning per custom config and per missing OpenCV; our own messages suffice."""
    tfds.disable_progress_bar()
    logging.getLogger("absl").setLevel(logging.ERROR)


def _prepare(builder_cls, config, fields, manual_dir: str | None = None, part: str | None = None,
             split: str | None = None):
    _quiet_tfds()
    data = {name: config.data[name] for name in fields}
    data.update(resolution=int(config.data.resolution), scene_resolution=int(config.data.scene_resolution),
                prepare_workers=int(config.data.prepare_workers))
    if "root" in data:
        data["root"] = str(Path(data["root"]).expanduser().resolve())
    # Only what changes the content goes into the name (not the worker count).
    content = [name for name in fields if name != "root"] + (
        ["resolution"] if part == "faces" else ["scene_resolution"] if part == "scenes" else
        ["resolution", "scene_resolution"])
    name = (f"{config.data.name}{'_' + part if part else ''}{'_' + split if split else ''}_"
            f"{sources.config_fingerprint(config, tuple(content), extra=str(data.get('root', '')))}")
    if part:
        data["part"] = part
    if split:
        data["only_split"] = split
    data_dir = str(Path(config.data.data_dir).expanduser())

    def make():
        return builder_cls(config=DataConfig(name=name, description=repr(data), data=data),
                           data_dir=data_dir, file_format="array_record")

    builder = make()
    if not builder.is_prepared():
        t0 = time.perf_counter()
        print(f"jaxdeid data: preparing {builder_cls.name}/{name} under {data_dir} ...", file=sys.stderr)
        download_config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
        with contextlib.redirect_stdout(sys.stderr):  # tfds prints its banner; keep stdout for results
            builder.download_and_prepare(download_config=download_config)
        builder = make()
        print(f"jaxdeid data: prepared {builder_cls.name}/{name} in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
    return builder


def prepare_synthfaces(config, part: str = "faces", split: str = "train"):
    """The SynthFaces builder of `part` ("faces" or "scenes") and `split` for ``config.data``, prepared once."""
    if part not in ("faces", "scenes"):
        raise ValueError(f"SynthFaces part must be 'faces' or 'scenes', got {part!r}")
    if split not in sources.SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {sources.SPLITS}")
    return _prepare(SynthFaces, config, SYNTHFACES_FIELDS, part=part, split=split)


def prepare_face_folder(config):
    """The VGGFace2 / folder builder for ``config.data``, prepared (once) from ``data.root``."""
    if not config.data.root:
        raise ValueError(f"data.name={config.data.name!r} needs data.root (the tfds manual_dir)")
    root = Path(config.data.root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (data.root)")
    return _prepare(FaceFolder, config, FOLDER_FIELDS, manual_dir=str(root.resolve()))
