"""Which source serves a data config: `get_source(config, split)`.

The storages themselves live in `sources` (direct rendering or reading, and the
random-access view of a prepared tfds data set) and `tfds_builders` (preparing one).
"""

from __future__ import annotations

from .sources import FolderSource, SynthFacesSource, TfdsSource, check_split


def get_source(config, split: str):
    """The random-access source for ``config.data`` and `split` ("train", "val", "test").

    See the module docstring for the common interface and the two storages.
    """
    check_split(split)
    data = config.data
    storage = data.storage
    if storage not in ("direct", "tfds"):
        raise ValueError(f"data.storage must be 'direct' or 'tfds', got {storage!r}")
    if data.name not in ("synthfaces", "vggface2", "folder"):
        raise ValueError(f"unknown data.name {data.name!r}; choose synthfaces, vggface2 or folder")
    if storage == "direct":
        return SynthFacesSource(config, split) if data.name == "synthfaces" else FolderSource(config, split)
    # local: tensorflow-datasets takes 0.45 s to import (measured) and is absent where only rendered
    # data is used (the GPU image): only a prepared storage pays for it.
    from .tfds_builders import prepare_face_folder, prepare_synthfaces
    if data.name == "synthfaces":
        return TfdsSource(lambda part: prepare_synthfaces(config, part, split), split)
    builder = prepare_face_folder(config)
    source = TfdsSource(lambda part: builder, split)
    if not len(source):
        raise FileNotFoundError(f"{data.root}: no usable image in split {split!r}")
    return source
