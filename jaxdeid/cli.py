"""The `jaxdeid` command line.

Deliberately thin: it parses flags and dispatches. Each sub-command lives in its
own module under ``jaxdeid/commands/`` exposing ``register(subparsers)``, which
adds a parser whose ``func(args) -> int`` does the work, so a new command is a
new file and this one does not change.

Exit statuses are shared by every command: see ``jaxdeid/commands/common.py``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import commands
from .commands.common import EXIT_FAILED, EXIT_USAGE
from .train.sharding import initialize_distributed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxdeid",
        description="Private face image generation by de-identification in low light (JAX/Flax).",
        epilog="Exit status: 0 ok, 1 failed, 2 usage, 3 partial (some inputs rejected).")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        register = getattr(importlib.import_module(f"{commands.__name__}.{info.name}"), "register", None)
        if register is not None:   # command modules register a parser; shared helpers (common.py) do not
            register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
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
