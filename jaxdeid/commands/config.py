"""`jaxdeid config`: print the resolved config of a preset (with overrides)."""

from .common import add_config_flags, config_from_args


def register(subparsers):
    p = subparsers.add_parser("config", help="print the resolved config for a preset")
    add_config_flags(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    print(config_from_args(args))
    return 0
