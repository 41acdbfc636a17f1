"""`jaxdeid train NETWORK`: train one network through the shared loop.

Each network registers a trainer as ``"module:function"``; the function takes
``(config, args)`` and returns an exit status. Imports are lazy so `--help` is fast.
"""

import importlib

from ..cli import add_config_flags, config_from_args

# name: ("module:function", help text, [(extra flag, argparse kwargs), ...])
TRAINERS = {
}


def register(subparsers):
    p = subparsers.add_parser("train", help="train a network (resumes from its latest checkpoint)")
    sub = p.add_subparsers(dest="network", metavar="NETWORK", required=True)
    for name, (target, help_text, extra) in sorted(TRAINERS.items()):
        q = sub.add_parser(name, help=help_text)
        add_config_flags(q)
        for flag, kwargs in extra:
            q.add_argument(flag, **kwargs)
        q.set_defaults(func=_runner(target))


def _runner(target: str):
    def run(args) -> int:
        module, func = target.split(":")
        return getattr(importlib.import_module(module), func)(config_from_args(args), args)
    return run
