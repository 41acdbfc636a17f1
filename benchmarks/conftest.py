"""Benchmark settings: which presets to run (JAXDEID_BENCH_PRESETS, default "smoke").

Run: ``python -m pytest benchmarks --benchmark-json=/tmp/bench.json`` then
``python benchmarks/report.py /tmp/bench.json``. `benchmarks/gpu.sh` runs the
paper and small presets on one GPU.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("JAXDEID_PROGRESS", "0")


def bench_presets() -> list[str]:
    return [p for p in os.environ.get("JAXDEID_BENCH_PRESETS", "smoke").split(",") if p]


def pytest_generate_tests(metafunc):
    if "preset" in metafunc.fixturenames:
        metafunc.parametrize("preset", bench_presets())
