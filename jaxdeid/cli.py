"""The `jaxdeid` command line.

Deliberately thin: it parses flags and dispatches. Each sub-command lives in its
own module under ``jaxdeid/commands/`` exposing ``register(subparsers)``, which
adds a parser whose ``func(args) -> int`` does the work, so a new command is a
new file and this one does not change.

Exit statuses (shared by every command):
  0  everything succeeded
  1  the command failed (an error message says why)
  2  bad usage
  3  partial: some inputs were rejected or could not be processed (each one reported)
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """--preset / --set / --seed / --workdir, the same on every command that builds a config."""
    parser.add_argument("--preset", default="smoke", choices=("smoke", "small", "paper"),
                        help="scale preset (SPEC §5); default: smoke")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set light.train.steps=100 (repeatable)")
    parser.add_argument("--seed", type=int, default=None, help="global seed (default: config.seed)")
    parser.add_argument("--workdir", default=None, help="checkpoints and logs (default: runs/<preset>)")


def config_from_args(args: argparse.Namespace):
    from .configs import get_config

    config = get_config(args.preset, args.overrides)
    if getattr(args, "seed", None) is not None:
        config.seed = args.seed
    if getattr(args, "workdir", None):
        config.workdir = args.workdir
    return config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxdeid",
        description="Private face image generation by de-identification in low light (JAX/Flax).",
        epilog="Exit status: 0 ok, 1 failed, 2 usage, 3 partial (some inputs rejected).")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    from . import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{commands.__name__}.{info.name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    from .train.sharding import initialize_distributed

    initialize_distributed()  # multi-host runs only (JAXDEID_DISTRIBUTED=1); see train/sharding.py
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("jaxdeid: interrupted", file=sys.stderr)
        return 130
    except (ValueError, KeyError, FileNotFoundError, NotADirectoryError) as err:
        print(f"jaxdeid {args.command}: error: {err}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
