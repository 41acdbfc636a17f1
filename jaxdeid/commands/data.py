"""`jaxdeid data ...`: look at and check the data.

    jaxdeid data check FOLDER [--bad-only]
    jaxdeid data preview [--preset small] [--out results/synthfaces_preview.png]
                         [--identities 12 --per-identity 6] [--scenes 8]

Each sub-command is one entry of SUBCOMMANDS: (name, help, register-arguments function,
run function taking (config, args) and returning an exit status).
"""

from __future__ import annotations

import time
from pathlib import Path

from ..data.check import check_folder
from ..data.preview import face_grid, scene_grid
from ..results import provenance, write_json
from .common import add_config_flags, config_from_args, status_of_counts


def _preview_args(p):
    p.add_argument("--out", default="results/synthfaces_preview.png",
                   help="face grid PNG (default: results/synthfaces_preview.png)")
    p.add_argument("--scenes-out", default=None,
                   help="scene PNG (default: <out's folder>/synthfaces_scenes.png)")
    p.add_argument("--identities", type=int, default=12, help="rows: one identity each (default 12)")
    p.add_argument("--per-identity", type=int, default=6,
                   help="(normal, low-light) pairs per identity (default 6)")
    p.add_argument("--scenes", type=int, default=8, help="scenes in the scene PNG (default 8; 0 = none)")
    p.add_argument("--first-identity", type=int, default=0, help="identity id of the first row (default 0)")


def _preview(config, args) -> int:

    if args.identities < 1 or args.per_identity < 1 or args.scenes < 0:
        raise ValueError("--identities and --per-identity must be >= 1, --scenes >= 0")
    if config.data.name != "synthfaces":
        raise ValueError(f"data preview draws SynthFaces; config.data.name is {config.data.name!r}")
    start = time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid, face_stats = face_grid(args.identities, args.per_identity, int(config.data.resolution),
                                 config.lowlight, seed=int(config.data.seed), first_identity=args.first_identity)
    grid.save(out, optimize=True)
    print(f"wrote {out}: {args.identities} identities x {args.per_identity} (normal | low-light) pairs at "
          f"{config.data.resolution} px; rendering speed {face_stats['faces_per_s']:.0f} faces/s wall, "
          f"{face_stats['faces_per_cpu_s']:.0f} faces per CPU-second")
    payload = {"faces": face_stats, "lowlight": config.lowlight.to_dict()}
    if args.scenes:
        scenes_out = Path(args.scenes_out) if args.scenes_out else out.parent / "synthfaces_scenes.png"
        scenes_out.parent.mkdir(parents=True, exist_ok=True)
        image, scene_stats = scene_grid(args.scenes, int(config.data.scene_resolution), seed=int(config.data.seed),
                                        first_identity=args.first_identity)
        image.save(scenes_out, optimize=True)
        print(f"wrote {scenes_out}: {args.scenes} scenes at {config.data.scene_resolution} px with their boxes")
        payload["scenes"] = scene_stats
    # The images are drawn with the data set's own seed (config.data.seed), so the preview shows
    # exactly what training sees; provenance records that seed.
    payload["provenance"] = provenance(config.preset, config.data.seed, time.perf_counter() - start,
                                       command="jaxdeid data preview")
    write_json(out.with_suffix(".json"), payload, history=False)
    return 0


def _check_args(p):
    p.add_argument("folder", help="folder (or one file) to check, recursively")
    p.add_argument("--bad-only", action="store_true", help="list only rejected files (and the summary)")


def _check(config, args) -> int:
    usable, rejected = check_folder(args.folder, max_pixels=int(config.data.max_image_pixels), bad_only=args.bad_only)
    return status_of_counts(usable, rejected)


# name: (help, add-arguments function, run function)
SUBCOMMANDS = {
    "check": ("read every image under FOLDER and report file by file (exit 0 all ok, 3 some rejected, "
              "1 none usable)", _check_args, _check),
    "preview": ("write PNG grids of SynthFaces identities with low-light pairs, and scenes with boxes",
                _preview_args, _preview),
}


def register(subparsers):
    p = subparsers.add_parser("data", help="look at and check the data (SynthFaces preview, ...)")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    for name, (help_text, add_args, func) in SUBCOMMANDS.items():
        q = sub.add_parser(name, help=help_text)
        add_config_flags(q)
        add_args(q)
        q.set_defaults(func=_runner(func))


def _runner(func):
    def run(args) -> int:
        return func(config_from_args(args), args)
    return run
