"""`jaxdeid reproduce`: every table and figure into results/ (`jaxdeid.reproduce.all`)."""

from ..reproduce import all as reproduce_all


def register(subparsers):
    p = subparsers.add_parser("reproduce", help="regenerate every paper table and figure into results/")
    p.add_argument("--preset", default="small", choices=("smoke", "small", "paper"))
    p.add_argument("--only", default="", help="comma-separated subset of scripts (default: all)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_run)


def _run(args) -> int:
    argv = ["--preset", args.preset] + (["--only", args.only] if args.only else [])
    for o in args.overrides:
        argv += ["--set", o]
    return reproduce_all.main(argv)
