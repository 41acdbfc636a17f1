"""Fails when a reproduced result leaves its stated tolerance band.

    python -m jaxdeid.reproduce.check_bands results/smoke/bands.json [--results DIR]

The bands file maps ``"<file>.json:<dotted.key>"`` to ``[low, high]`` (either may
be null for one-sided). CI runs the smoke reproduce and then this check, so a
change that silently breaks a network (a loss that no longer falls, a detector
that no longer finds faces) turns CI red even though every unit test passes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def lookup(data, dotted: str):
    for part in dotted.split("."):
        data = data[part]
    return data


def check(bands: dict, results: Path) -> list[str]:
    failures = []
    for target, band in bands.items():
        if target.startswith("_"):
            continue  # comments
        low, high = band
        name, dotted = target.split(":", 1)
        path = results / name
        if not path.exists():
            failures.append(f"{target}: {path} is missing")
            continue
        try:
            value = lookup(json.loads(path.read_text()), dotted)
        except (KeyError, TypeError):
            failures.append(f"{target}: key not found")
            continue
        if value is None or not isinstance(value, (int, float)) or math.isnan(value):
            failures.append(f"{target}: {value!r} is not a number")
        elif (low is not None and value < low) or (high is not None and value > high):
            failures.append(f"{target}: {value:.4g} outside [{low}, {high}]")
        else:
            print(f"ok   {target} = {value:.4g} in [{low}, {high}]")
    return failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bands")
    parser.add_argument("--results", default=None, help="results folder (default: the bands file's folder)")
    args = parser.parse_args(argv)
    bands_path = Path(args.bands)
    failures = check(json.loads(bands_path.read_text()), Path(args.results) if args.results else bands_path.parent)
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    print(f"{len(failures)} band(s) violated" if failures else "all results inside their bands")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
