"""Benchmark settings: which presets to run (JAXDEID_BENCH_PRESETS, default "smoke"), 4 host devices.

Run: ``python -m pytest benchmarks --benchmark-json=/tmp/bench.json`` then
``python benchmarks/report.py /tmp/bench.json``. `benchmarks/gpu.sh` runs the
paper and small presets on one GPU.
"""

import os
import sys
import time

_SESSION_START = time.perf_counter()

os.environ.setdefault("JAXDEID_PROGRESS", "0")

# Scale-out rows (test_private_step.py) need several devices; on the CPU, XLA can present
# the host as 4 devices. This must happen before jax is first imported, and changes only
# the host (CPU) platform: GPUs are counted as they are. A count already set is kept.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()


def bench_presets() -> list[str]:
    return [p for p in os.environ.get("JAXDEID_BENCH_PRESETS", "smoke").split(",") if p]


def pytest_generate_tests(metafunc):
    if "preset" in metafunc.fixturenames:
        metafunc.parametrize("preset", bench_presets())


def pytest_sessionfinish(session, exitstatus):
    # benchmarks/gpu.sh runs where tensorflow-datasets may be missing: say so if a
    # benchmark pulled it in (the step, the networks and the data on the fly never should).
    if "tensorflow_datasets" in sys.modules:
        print("\nWARNING: tensorflow_datasets was imported during the benchmarks", file=sys.stderr)


def pytest_benchmark_update_machine_info(config, machine_info):
    # The run's wall time so far (pytest-benchmark asks when it writes its JSON, at the end
    # of the session): report.py puts it in the report's provenance.
    machine_info["wall_s"] = round(time.perf_counter() - _SESSION_START, 1)
