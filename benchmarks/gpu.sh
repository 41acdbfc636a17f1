#!/usr/bin/env bash
# The whole benchmark suite on ONE GPU in under 8 minutes: presets paper (random weights)
# and small, every benchmark of benchmarks/ (private step fused / staged / per stage /
# baselines / bf16 vs float32 / scale-out, every training step), then benchmarks/report.py.
#
#   JAXDEID_GIT_COMMIT=$(git rev-parse HEAD) bash benchmarks/gpu.sh
#
# Works on a copy of the work tree with no .git and no internet:
#   * the commit comes from JAXDEID_GIT_COMMIT (jaxdeid/results.py reads it);
#   * wheels carried in .whl/ (dm-pix, ml-collections, tensorflow-datasets, pytest,
#     pytest-benchmark, py-cpuinfo, ...) whose distribution is not installed are installed
#     with `pip --no-index` first (an installed version is never replaced); a wheel that
#     fails (wrong Python, a missing dependency) is reported and skipped;
#   * tensorflow-datasets is never imported on the benchmark path (checked below).
#
# Environment (all optional):
#   JAXDEID_BENCH_PRESETS   presets, default "paper,small" (a dry run: "smoke")
#   JAXDEID_BENCH_ROUNDS    timed rounds per benchmark, default 3
#   JAXDEID_GPU_BUDGET_S    seconds for the warm-up phase and all pytest calls together, default 390
#                           (+ <= ~80 s of set-up, kill grace and report: under 8 min)
#   JAXDEID_BENCH_STATE     a folder kept between calls on the same (still warm) machine, default a
#                           fresh temporary one. Holds JAX's persistent compilation cache, the compile
#                           log and every finished row (JSON lines, one file per preset and group); a
#                           second call with the same folder deselects the benchmarks already measured,
#                           loads what finished compiling from the cache, and reports every row of both
#                           calls (each row names its own commit). Two calls of ~7 min cover about
#                           twice the rows of one (see "Measured" below).
#   JAXDEID_BENCH_WARM_PERCENT  share of the budget for the warm-up phase, default 0 (none; see below)
#   JAXDEID_BENCH_WARM_JOBS     concurrent warm-up processes, default 8
#   OUT                     if set, the report (json + md), the merged raw json and the log are copied here
#
# Warm-up phase (benchmarks/warm_cache.py; why: benchmarks/harness.py), off by default. The idea:
# compile every benchmark first in JAXDEID_BENCH_WARM_JOBS concurrent processes into JAX's
# persistent compilation cache, then time the rows loading executables from it. It works on a
# CPU host (2 cores, smoke, 2 jobs: 26 rows, cache loads 0.5-1.6 s against 10-44 s cold
# compiles), but on the H200 (commit c01c40b) 8 warm-up processes with the paper preset's groups
# finished NO compilation in 175 s, although one such program compiles in ~36 s alone: XLA's GPU
# compiler already spreads one compilation over the host's cores (and autotunes on the one GPU),
# so concurrent compilations only share them. Fewer jobs are untested there.
#
# Time budget. Each preset runs as two pytest calls (private step, training steps), paper
# first; each call gets `timeout -s INT` = its share of what the warm-up left of the budget
# (weights: paper private step 4, paper training steps and small private step 2, small
# training steps 1: with the default 390 s and no warm-up the paper private-step call gets 4/9 x 390 s
# = 173 s, plus whatever an earlier call leaves unused flows to the later ones). On SIGINT pytest stops after the running benchmark and
# pytest-benchmark still writes the JSON of every finished one; if it is stuck in a
# compile and gets killed 20 s later, harness.py has appended every finished row to a
# JSON-lines file (JAXDEID_BENCH_JSONL) that report.py reads instead. A slow part costs
# its own rows, not the run.
#
# Runtime. The FLOPs each step executes: `python3 benchmarks/estimate_gpu.py --preset paper
# --preset small` (XLA's count of each lowered step at the real shapes, noise loop included).
# Running them takes seconds on an H200 (small, batch 32: ours' fused step 0.2 s per call;
# paper: 1.05 s in bf16); compiling them is the run. Measured on the H200: a small-preset
# program compiles in 12-22 s, the paper fused step in 36 s (bf16) to over ~55 s (float32),
# and each private-step row adds ~10 s of tracing, lowering and FLOP counting in Python plus
# ~12 s once per process for random weights. One 8-minute call therefore measures the first
# rows of the suite in the order below (commit c01c40b: 6 small-preset rows in 330 s), and a
# second call with the same JAXDEID_BENCH_STATE continues where it stopped; the report lists
# every benchmark that got no row.
# The body is one function, parsed whole before it runs: editing this file while it runs is safe.
main() {
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
start=$(date +%s)
export JAXDEID_PROGRESS=0
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export JAXDEID_BENCH_ROUNDS="${JAXDEID_BENCH_ROUNDS:-3}"
. reproduce/provenance_env.sh
export_provenance
presets="${JAXDEID_BENCH_PRESETS:-paper,small}"
budget="${JAXDEID_GPU_BUDGET_S:-390}"
results="${JAXDEID_BENCH_OUT:-results}"
scratch=$(mktemp -d)
log="$scratch/gpu_bench.log"
exec > >(tee "$log") 2>&1
echo "== benchmarks/gpu.sh: presets $presets, rounds $JAXDEID_BENCH_ROUNDS, budget ${budget}s, commit $JAXDEID_GIT_COMMIT"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

# --- 1. offline wheels: only distributions that are not installed at all (never replaces a version)
. reproduce/offline_wheels.sh
install_missing_wheels .whl

# --- 2. environment checks: modules present, tensorflow-datasets off the benchmark path
PYTHONPATH="benchmarks${PYTHONPATH:+:$PYTHONPATH}" python3 - <<'EOF' || { echo "gpu.sh: environment check failed"; exit 1; }
import importlib, sys
missing = [m for m in ("jax", "flax", "optax", "ml_collections", "dm_pix", "PIL", "pytest", "pytest_benchmark")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing modules: {missing} (carry their wheels in .whl/)")
import jax
import jaxdeid.deid.pipeline, jaxdeid.deid.step, jaxdeid.results  # noqa: F401
import harness, report, test_private_step, test_train_steps  # noqa: F401
from jaxdeid.configs import get_config
for name, build in test_train_steps.TASKS.items():
    build(harness.bench_config("smoke"))
print("devices:", jax.devices(), "| jax", jax.__version__,
      "| tensorflow_datasets imported:", "tensorflow_datasets" in sys.modules)
if "tensorflow_datasets" in sys.modules:
    print("WARNING: the benchmark path imports tensorflow_datasets; make that import lazy")
EOF

# The private-step benchmarks in priority order (pytest runs node ids in the order given):
# ours' float32 step first, whose compiled program the bf16 comparison and the batch rows reuse.
private_nodes=(
  benchmarks/test_private_step.py::test_private_step_fused
  benchmarks/test_private_step.py::test_private_step_fused_bf16
  benchmarks/test_private_step.py::test_private_step_staged
  benchmarks/test_private_step.py::test_stage
  benchmarks/test_private_step.py::test_private_step_fused_batch_sizes
  benchmarks/test_private_step.py::test_private_step_scale_out
)

# What this run sets out to measure (report.py lists what got no row).
JAXDEID_BENCH_PRESETS=$presets python3 -m pytest --collect-only -q -p no:cacheprovider \
  "${private_nodes[@]}" benchmarks/test_train_steps.py 2>/dev/null | grep '::' > "$scratch/expected.txt"
echo "== $(wc -l < "$scratch/expected.txt") benchmarks to measure"

# --- 3. warm-up: every benchmark compiled in concurrent processes into the persistent cache
state="${JAXDEID_BENCH_STATE:-$scratch}"
mkdir -p "$state"
export JAX_COMPILATION_CACHE_DIR="$state/jax_cache"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
export JAXDEID_BENCH_COMPILE_LOG="$state/compile_log.jsonl"
warm_s=$(( budget * ${JAXDEID_BENCH_WARM_PERCENT:-0} / 100 ))
if [ "$warm_s" -gt 0 ]; then
  echo "== warm-up: ${warm_s}s, ${JAXDEID_BENCH_WARM_JOBS:-8} processes"
  python3 benchmarks/warm_cache.py --presets "$presets" --jobs "${JAXDEID_BENCH_WARM_JOBS:-8}" \
    --seconds "$warm_s" --logs "$scratch" "${private_nodes[@]}" benchmarks/test_train_steps.py
  echo "== warm-up: $(wc -l < "$JAXDEID_BENCH_COMPILE_LOG" 2>/dev/null || echo 0) compilations logged after $(( $(date +%s) - start ))s"
fi

# --- 4. pytest calls, most important first, each with its share of the remaining budget
IFS=, read -r -a preset_list <<< "$presets"
ordered=()
for p in paper small smoke; do
  for q in "${preset_list[@]}"; do [ "$p" = "$q" ] && ordered+=("$p"); done
done
calls=()
for p in "${ordered[@]}"; do calls+=("$p:private" "$p:train"); done
weight() { case "$1" in paper:private) echo 4;; *:private|paper:train) echo 2;; *) echo 1;; esac; }

raws=()
failed=()
for i in "${!calls[@]}"; do
  call=${calls[$i]}
  preset=${call%%:*}
  group=${call##*:}
  left=$(( start + budget - $(date +%s) ))
  weights=0
  for c in "${calls[@]:$i}"; do weights=$(( weights + $(weight "$c") )); done
  limit=$(( left * $(weight "$call") / weights ))
  if [ "$limit" -lt 20 ]; then
    echo "== $call: skipped (${left}s of the budget left)"
    continue
  fi
  raw="$scratch/bench_${preset}_${group}.json"
  rows="$state/bench_${preset}_${group}.jsonl"
  if [ "$group" = private ]; then nodes=("${private_nodes[@]}"); else nodes=(benchmarks/test_train_steps.py); fi
  # Rows an earlier call with the same JAXDEID_BENCH_STATE measured are not measured again.
  done_ids=()
  if [ -s "$rows" ]; then
    mapfile -t done_ids < <(python3 -c 'import json, sys
for line in open(sys.argv[1]):
    if line.strip(): print(json.loads(line)["fullname"])' "$rows")
  fi
  deselect=()
  for id in "${done_ids[@]}"; do deselect+=(--deselect "$id"); done
  echo "== $call: timeout ${limit}s (${#done_ids[@]} rows from an earlier call)"
  t0=$(date +%s)
  JAXDEID_BENCH_PRESETS=$preset JAXDEID_BENCH_JSONL="$rows" timeout -s INT -k 20 "$limit" \
    python3 -m pytest -q -p no:cacheprovider "${nodes[@]}" "${deselect[@]}" --benchmark-json="$raw" \
    --benchmark-columns=mean,stddev,rounds
  rc=$?
  echo "== $call: exit $rc after $(( $(date +%s) - t0 ))s"
  # 1 = a benchmark raised (a defect, not the budget): the run fails even if rows came back;
  # 2 = interrupted (SIGINT at the time limit), 124/137 = killed at the limit: rows cut off.
  [ "$rc" -eq 1 ] && failed+=("$call")
  # pytest-benchmark's JSON (machine_info) when pytest got to write it, then every row appended
  # one by one (this call's and earlier calls'); report.py keeps one entry per benchmark.
  [ -s "$raw" ] && raws+=("$raw")
  [ -s "$rows" ] && raws+=("$rows")
done

# --- 5. report
if [ "${#raws[@]}" -eq 0 ]; then
  echo "gpu.sh: no benchmark finished"; status=1
else
  python3 benchmarks/report.py "${raws[@]}" --preset "$presets" --out "$results" --expected "$scratch/expected.txt" \
    --environment-only | tee "$scratch/report.txt"
  status=${PIPESTATUS[0]}
fi
if [ "${#failed[@]}" -gt 0 ]; then
  echo "gpu.sh: a benchmark raised in: ${failed[*]} (see the log above)"; status=1
fi
echo "== total $(( $(date +%s) - start ))s"
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  tag=$(sed -n 's/.*benchmarks_\(.*\)\.\*.*/\1/p' "$scratch/report.txt" 2>/dev/null)
  [ -n "$tag" ] && for f in "$results/benchmarks_${tag}.json" "$results/benchmarks_${tag}.md" "$results/benchmarks_${tag}_raw.json"; do
    [ -e "$f" ] && cp "$f" "$OUT/"
  done
  cp "$log" "$OUT/"
  cp "$JAXDEID_BENCH_COMPILE_LOG" "$scratch/compile_log.jsonl" 2>/dev/null
  # The warm-up processes' logs and the compile log, one archive (the device returns 8 files at most).
  (cd "$scratch" && ls warm_*.log compile_log.jsonl 2>/dev/null | tar -czf "$OUT/warm_logs.tar.gz" -T -)
fi
return "$status"
}

main "$@"; exit $?
