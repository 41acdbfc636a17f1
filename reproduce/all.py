"""Regenerates every table and figure of the paper into results/, then results/README.md.

    python reproduce/all.py --preset smoke    # ~25 min on 2 CPU cores (tiny networks; CI)
    python reproduce/all.py --preset small    # the default scale for comparison with the paper
    jaxdeid reproduce --preset small          # the same

Each script trains whatever its networks lack (resuming from checkpoints under
runs/<preset>/), evaluates, and writes its .json/.md/.png through
jaxdeid.results. Scripts run as separate processes so one failure is reported
and the rest still run; the exit status is 0 only if every script succeeded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# In dependency order: light networks and recognizers before the pipeline that uses them.
SCRIPTS = ("light", "table1", "detection", "generators", "table3", "fig5", "fig6", "grids")


def run_scripts(preset: str, names, extra: list[str]) -> dict[str, dict]:
    status = {}
    for name in names:
        script = ROOT / "reproduce" / f"{name}.py"
        if not script.exists():
            status[name] = {"status": "missing", "wall_s": 0.0}
            print(f"[reproduce] {name}: reproduce/{name}.py does not exist yet; skipped", flush=True)
            continue
        print(f"[reproduce] {name}: running (preset {preset})", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script), "--preset", preset, *extra], cwd=ROOT)
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
    from summary import write_summary

    from jaxdeid.configs import get_config

    results = Path(get_config(args.preset, args.overrides).results_dir)
    write_summary(results if results.is_absolute() else ROOT / results, args.preset, status,
                  time.perf_counter() - t0)
    failed = [n for n, s in status.items() if s["status"].startswith("failed")]
    if failed:
        print(f"[reproduce] failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
