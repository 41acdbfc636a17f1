"""Data: SynthFaces (the embedded default), VGGFace2 and plain folders; low-light synthesis.

Public API (the data contract every network codes against):

    get_source(config, split)                      random-access source of a split (see `catalog`)
    batch_indices(n, batch_size, seed, position)   epoch-wise shuffled batch, pure in (seed, position)
    pk_batch_indices(labels, P, K, seed, position) P identities x K images, for triplet training
    make_batch_fn(source, batch_size, seed)        -> batch_fn(position) for `jaxdeid.train.Task`
    read_image(path, max_pixels=...)               safe reading: (float32 HxWx3, notes) or ImageError
    write_image(path, image)                       atomic 8-bit PNG
    scan_folder(root)                              (good paths, [(path, reason)]) going on after bad files

Nothing here imports TensorFlow; `tfds` is used in its no-TensorFlow mode.
"""

from .batching import batch_indices, iterate_batches, make_batch_fn, pk_batch_indices
from .images import ImageError, read_image, scan_folder, write_image
from .catalog import get_source
from .sources import SPLITS

__all__ = ["get_source", "batch_indices", "pk_batch_indices", "make_batch_fn", "iterate_batches",
           "read_image", "write_image", "scan_folder", "ImageError", "SPLITS"]
