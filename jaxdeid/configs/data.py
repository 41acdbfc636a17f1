"""Data: which data set, at what resolution, how it is split (docs/method.md §2, §5)."""

import ml_collections


def section(preset: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "synthfaces"            # synthfaces | vggface2 | folder
    c.root = ""                      # vggface2: tfds manual_dir; folder: <root>/<identity>/<image>
    c.resolution = {"smoke": 32, "small": 64, "paper": 128}[preset]        # face crop side
    c.scene_resolution = {"smoke": 64, "small": 128, "paper": 256}[preset]  # full frame side
    c.num_identities = {"smoke": 48, "small": 2000, "paper": 9131}[preset]
    c.images_per_identity = {"smoke": 8, "small": 16, "paper": 32}[preset]
    c.split = (0.98, 0.01, 0.01)     # train / val / test, paper §4.1
    c.split_by = "image"             # image: paper's random 98:1:1 over images; identity: disjoint people
    c.batch_size = {"smoke": 8, "small": 32, "paper": 64}[preset]
    c.max_image_pixels = 64_000_000  # larger files are rejected as absurd sizes
    c.seed = 0                       # SynthFaces identities/renders, the split and max_images draw
    # direct: render / read files on the fly (no start-up cost: smoke, tests, CI);
    # tfds: prepare once into array_record under data_dir, then tfds random access (small, paper).
    c.storage = {"smoke": "direct", "small": "tfds", "paper": "tfds"}[preset]
    c.data_dir = "runs/tfds"         # tfds data_dir for prepared data sets
    c.prepare_workers = 0            # processes rendering / decoding during tfds preparation; 0 = all CPU cores
    c.crop_margin = 0.1              # vggface2: loose box grown by this fraction per side, then squared
    c.max_images = {"smoke": 0, "small": 0, "paper": 300_000}[preset]  # folders: random subset, 0 = all (paper §4.1)
    return c
