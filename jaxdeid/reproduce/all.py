"""Regenerates every table and figure of the paper into results/, then results/README.md.

    jaxdeid reproduce --preset smoke                # ~25 min on 2 CPU cores (tiny networks; CI)
    jaxdeid reproduce --preset small                # the default scale for comparison with the paper
    python -m jaxdeid.reproduce.all --preset small  # the same

Each script (a module of this package, ``python -m jaxdeid.reproduce.<name>``) trains whatever its networks lack (resuming from checkpoints under
runs/<preset>/), evaluates, and writes its .json/.md/.png through
jaxdeid.results. Scripts run as separate processes so one failure is reported
and the rest still run; the exit status is 0 only if every script succeeded.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from jaxdeid.configs import get_config
from jaxdeid.reproduce.summary import write_summary

# In dependency order: light networks and recognizers before the pipeline that uses them.
SCRIPTS = ("light", "table1", "detection", "generators", "table3", "fig5", "fig6", "grids")


def run_scripts(preset: str, names, extra: list[str]) -> dict[str, dict]:
    status = {}
    for name in names:
        print(f"[reproduce] {name}: running (preset {preset})", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", f"{__package__}.{name}", "--preset", preset, *extra])
        wall = time.perf_counter() - t0
        status[name] = {"status": "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})",
                        "wall_s": round(wall, 1)}
        print(f"[reproduce] {name}: {status[name]['status']} in {wall:.0f} s", flush=True)
    return status


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=("smoke", "small", "paper"))
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SCRIPTS)}")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override passed to every script")
    args = parser.parse_args(argv)
    names = [n for n in SCRIPTS if not args.only or n in args.only.split(",")]
    extra = [f"--set={o}" for o in args.overrides]
    t0 = time.perf_counter()
    status = run_scripts(args.preset, names, extra)
    results = Path(get_config(args.preset, args.overrides).results_dir)   # relative to the working folder
    write_summary(results, args.preset, status, time.perf_counter() - t0)
    failed = [n for n, s in status.items() if s["status"].startswith("failed")]
    if failed:
        print(f"[reproduce] failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
