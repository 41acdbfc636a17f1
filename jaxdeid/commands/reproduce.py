"""`jaxdeid reproduce`: run reproduce/all.py (every table and figure into results/)."""

import runpy
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "reproduce" / "all.py"


def register(subparsers):
    p = subparsers.add_parser("reproduce", help="regenerate every paper table and figure into results/")
    p.add_argument("--preset", default="small", choices=("smoke", "small", "paper"))
    p.add_argument("--only", default="", help="comma-separated subset of scripts (default: all)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_run)


def _run(args) -> int:
    if not SCRIPT.exists():
        print("jaxdeid reproduce: reproduce/all.py not found; run from a source checkout "
              "(pip install -e .)", file=sys.stderr)
        return 1
    sys.path.insert(0, str(SCRIPT.parent))
    module = runpy.run_path(str(SCRIPT), run_name="jaxdeid_reproduce")
    argv = ["--preset", args.preset] + (["--only", args.only] if args.only else [])
    for o in args.overrides:
        argv += ["--set", o]
    return module["main"](argv)
