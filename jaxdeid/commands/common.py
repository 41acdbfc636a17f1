"""What every `jaxdeid` command shares: exit statuses and the config flags.

Exit statuses (library code returns values; only commands choose these):
  0  everything succeeded
  1  the command failed (an error message says why)
  2  bad usage
  3  partial: some inputs were rejected or could not be processed (each one reported)
"""

from __future__ import annotations

import argparse

from ..configs import get_config

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """--preset / --set / --seed / --workdir, the same on every command that builds a config."""
    parser.add_argument("--preset", default="smoke", choices=("smoke", "small", "paper"),
                        help="scale preset (docs/method.md, 'Presets'); default: smoke")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set light.train.steps=100 (repeatable)")
    parser.add_argument("--seed", type=int, default=None, help="global seed (default: config.seed)")
    parser.add_argument("--workdir", default=None, help="checkpoints and logs (default: runs/<preset>)")


def config_from_args(args: argparse.Namespace):
    config = get_config(args.preset, args.overrides)
    if getattr(args, "seed", None) is not None:
        config.seed = args.seed
    if getattr(args, "workdir", None):
        config.workdir = args.workdir
    return config


def status_of_counts(usable: int, rejected: int) -> int:
    """The exit status of a command over many inputs: 1 when none is usable, 3 when some were rejected."""
    if usable == 0:
        return EXIT_FAILED
    return EXIT_PARTIAL if rejected else EXIT_OK
