#!/usr/bin/env bash
# Every small-preset network that a CPU cannot train in reasonable time (the four recognizers,
# the black-box fifth recognizer, the three GANs, their encoders and the L_F fine-tuning),
# then every reproduce script that needs them, on ONE GPU in one device call (or two: phases).
#
#   JAXDEID_GIT_COMMIT=$(git rev-parse HEAD) bash reproduce/gpu_small.sh
#
# Meant for a copy of the work tree on a GPU machine with no .git and no internet:
#   * the commit comes from JAXDEID_GIT_COMMIT (jaxdeid/results.py reads it);
#   * missing Python packages come from wheels carried in .whl/ (see benchmarks/gpu.sh);
#   * checkpoints trained on the CPU may be carried along: runs/small/light_enhance,
#     runs/small/light_attenuate and runs/small/crop (the light networks and the detector
#     train in minutes to an hour on 2 CPU cores; nothing here retrains what exists).
#
# Order, with the device shared by concurrent processes (each gets a fixed share of its memory):
#   1. prepare the SynthFaces tfds splits once, with every CPU core;
#   2. in parallel: Table 1 (four recognizers, --jobs 4), the independent fifth recognizer
#      (seed 1) of the black-box test, the three GANs, and the light networks and the
#      detector unless their checkpoints came along;
#   3. in parallel, as soon as the GANs are done: the three encoders;
#   4. in parallel: jaxdeid/reproduce/generators.py; the private outputs that do not need L_F (one
#      `table3.py --outputs-only` process per method and run, so their compilations overlap);
#      the L_F fine-tuning of ours, then ours' private outputs;
#   5. in parallel, from those cached outputs: table3, fig5, fig6, grids; then results/README.md.
#      (Detection is measured on the CPU: jaxdeid/reproduce/detection.py needs only the carried networks.)
# Every training gets a wall-clock budget (`<section>.train.max_seconds`, a fraction of what is
# left of JAXDEID_GPU_BUDGET_S when its stage starts): the training loop saves where it is and
# stops, and that checkpoint is what the evaluation uses (every result file records the steps
# its networks trained for). Evaluations run with --no-train. A failed stage costs its own rows.
#
# Environment (all optional):
#   JAXDEID_GPU_BUDGET_S   seconds for stages 1-5 together (default 540)
#   JAXDEID_GPU_PHASE      all (default) | train | evaluate (see "Two calls, one machine" below)
#                          | generators (issue 5 alone: see "Generators alone" below)
#   JAXDEID_GPU_ARCHS      GANs (and their encoders) trained by phase generators, space separated
#                          (default "stylegan2 stylegan1 pggan")
#   JAXDEID_GPU_PRESET     preset (default small; "smoke" for a dry run of the plumbing)
#   JAXDEID_GPU_SET        extra config overrides, space separated (e.g. "gan.train.steps=3000")
#   JAXDEID_GPU_PAGES      result pages of stage 5 (default "table3 fig5 fig6 grids")
#   JAXDEID_GPU_EXTRA      a command run in the background from stage 2 on (its log: extra.log)
#   OUT                    if set: $OUT/results_<preset>_<phase>.tar.gz (what results/ gained) and the logs
#
# Two calls, one machine. The device stays warm ~30 s after a call and keeps the work tree's
# ignored files (checkpoints, prepared data) for the next call, so the whole job fits a
# 15-minute device allowance as two back-to-back calls (measured: start + transfer ~30 s):
#   JAXDEID_GPU_PHASE=train    JAXDEID_GPU_BUDGET_S=560  (timeout 600): stages 1-3 and L_F
#   JAXDEID_GPU_PHASE=evaluate JAXDEID_GPU_BUDGET_S=200  (timeout 240), at once: stages 4-5
# JAXDEID_GPU_PHASE=all (default) runs everything in one call with smaller training budgets.
#
# Generators alone. JAXDEID_GPU_PHASE=generators trains only what jaxdeid/reproduce/generators.py
# measures: the GANs of JAXDEID_GPU_ARCHS with the device to themselves (no recognizers, light
# networks or detector beside them) and, concurrently, the one recognizer whose embeddings the
# Fréchet distance uses (resnet50); then their encoders; then generators.py --archs (the other
# archs' rows say "not measured in this run"). Budget split: GANs 45 %, encoders 50 % of the rest,
# the remaining ~25 % for generators.py (it compiles the recognizer's embedding, the generation
# and the inversion: more than the 32 s it had in the first H200 run, which it spent compiling).
# Measured on one H200 (commit 1ac820b, budget 400 s, JAXDEID_GPU_ARCHS=stylegan2): data 14 s;
# StyleGAN2 alone (beside the resnet50 recognizer for its first ~60 s): first step at 44 s
# (compilation), then 25.3 steps/s: 3274 of 5000 steps in its 173-s budget (1679 when it shared
# the device with everything); the recognizer's 3000 steps in 117 s (val acc 0.945); the encoder
# 1890 of 3000 steps in 113 s (first step at 31 s, 23 steps/s), val SSIM 0.459, PSNR 19.3 dB.
#
# Measured on one H200 (commit e502ccd, phase all, budget 550 s, everything concurrent):
# tfds preparation 24 s; in the 220-s GAN stage PGGAN reached 4201 steps, StyleGAN1 2108 and
# StyleGAN2 1679 (of 5000); the encoders 844-1111 steps in ~140 s (val SSIM 0.37-0.42). The
# small preset's full schedule therefore needs several such runs; each run resumes where the
# saved checkpoints stop only while the machine stays warm (a fresh machine starts bare).
# Dry run of the plumbing on a CPU (~25 min on 2 cores), reading data as the small preset does
# (prepared tfds storage, the recognizers' train split preloaded by worker processes):
#   OUT=/tmp/dry/out JAXDEID_GPU_PRESET=smoke JAXDEID_GPU_BUDGET_S=1500 JAXDEID_GPU_SET="data.storage=tfds \
#   recognizer.preload_train=True workdir=/tmp/dry/runs results_dir=/tmp/dry/results" bash reproduce/gpu_small.sh
main() {
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
start=$(date +%s)
preset="${JAXDEID_GPU_PRESET:-small}"
budget="${JAXDEID_GPU_BUDGET_S:-540}"
phase="${JAXDEID_GPU_PHASE:-all}"
case "$phase" in all|train|evaluate|generators) ;;
  *) echo "JAXDEID_GPU_PHASE must be all, train, evaluate or generators"; return 2;; esac
archs="${JAXDEID_GPU_ARCHS:-stylegan2 stylegan1 pggan}"
export JAXDEID_PROGRESS=0
export PYTHONUNBUFFERED=1
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
. reproduce/provenance_env.sh
export_provenance
sets=()
for item in ${JAXDEID_GPU_SET:-}; do sets+=(--set "$item"); done
# The work and results folders of this config (overrides included).
read -r workdir results < <(python3 -c "
import sys; from jaxdeid.configs import get_config
c = get_config(sys.argv[1], sys.argv[2:]); print(c.workdir, c.results_dir)" "$preset" ${JAXDEID_GPU_SET:-} 2>/dev/null)
workdir=${workdir:-runs/$preset}; results=${results:-results}
scratch=$(mktemp -d)
log="$scratch/gpu_${preset}.log"
exec > >(tee "$log") 2>&1
stamp="$scratch/start.stamp"; touch "$stamp"
echo "== reproduce/gpu_small.sh: phase $phase, preset $preset, budget ${budget}s, commit $JAXDEID_GIT_COMMIT, overrides: ${sets[*]:-none}"
[ "$phase" = generators ] && echo "== GANs and encoders: $archs"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

left() { echo $(( start + budget - $(date +%s) )); }
# wait_all LABEL PID...: waits for each process and logs its exit status.
wait_all() { local label=$1 pid; shift; for pid in "$@"; do wait "$pid"; echo "== $label process $pid: exit $?"; done; }
# train_for SECONDS SECTION LOG ARGS...: `jaxdeid train ARGS` within about SECONDS of wall time:
# the loop saves and stops when <SECTION>.train.max_seconds is spent, which it counts from its own
# start; start-up before it and the final checkpoint, samples and validation after it took
# 24-48 s on the H200 (GAN stage 197 s for a 173-s budget, encoder stage 161 s for 113 s), so the
# loop gets SECONDS - 30 (at least 30). `timeout` 60 s after SECONDS is only the net.
train_for() {
  local seconds=$1 section=$2 name=$3; shift 3
  local loop_s=$(( seconds > 60 ? seconds - 30 : 30 ))
  timeout -s INT -k 15 "$(( seconds + 60 ))" python3 -m jaxdeid train "$@" --preset "$preset" "${sets[@]}" \
    --set "$section.train.max_seconds=$loop_s" > "$scratch/$name.log" 2>&1
}

# One network of kind $1 (gan, encoder) per architecture of $archs, concurrently, within $2 % of
# the time left; waits for all of them.
train_each_arch() {
  local kind=$1 seconds=$(( $(left) * $2 / 100 )) pids=() arch
  for arch in $archs; do
    train_for "$seconds" "$kind" "${kind}_$arch" "$kind" --arch "$arch" & pids+=($!)
  done
  wait_all "$kind" "${pids[@]}"
}

# --- 0. offline wheels (only distributions that are not installed at all)
. reproduce/offline_wheels.sh
install_missing_wheels .whl
python3 -c "import jax, flax, optax, orbax.checkpoint, ml_collections, dm_pix, tensorflow_datasets; print('devices:', jax.devices())" \
  || { echo "gpu_small.sh: a required package is missing (carry its wheel in .whl/)"; return 1; }

if [ "$phase" != evaluate ]; then
# --- 1. data: every split prepared once, with all cores (the training processes then only read)
python3 - "$preset" "${sets[@]}" <<'EOF' || echo "== data preparation failed; the trainings will prepare on first use"
import sys
from jaxdeid.configs import get_config
from jaxdeid.data import get_source
overrides = [v for k, v in zip(sys.argv[2::2], sys.argv[3::2]) if k == "--set"]
config = get_config(sys.argv[1], overrides)
for split in ("train", "val", "test"):
    print(split, "faces:", len(get_source(config, split)), flush=True)
EOF
echo "== data ready after $(( $(date +%s) - start ))s"

# --- 1b. an optional side experiment (e.g. a light-network probe) in the background, same device
if [ -n "${JAXDEID_GPU_EXTRA:-}" ]; then
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.05 timeout -s INT -k 15 "$(left)" bash -c "$JAXDEID_GPU_EXTRA" \
    > "$scratch/extra.log" 2>&1 & pid_extra=$!
fi

# --- 2. recognizers and GANs, concurrently on the one device
# Every training gets a wall-clock budget (<section>.train.max_seconds: the loop saves where it
# is and stops; compilation counts), so a stage ends on time with its work saved; `timeout`
# is only the safety net. Budgets are fractions of what is left when the stage starts.
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.07   # up to 12 processes (table1 parent + 4 + fifth + 3 GANs + 3 light/crop)
pids_rec=(); pid_table1=
if [ "$phase" = generators ]; then
  # Only the recognizer whose embeddings generators.py's distances use, beside the GANs.
  train_for "$(( $(left) * 45 / 100 ))" recognizer recognizer recognizer --arch resnet50 & pids_rec+=($!)
else
# The light networks and the detector: nothing to do where their checkpoints were carried along.
for net in enhance attenuate crop; do
  section=$([ "$net" = crop ] && echo crop || echo light)
  timeout -s INT -k 15 "$(left)" python3 -m jaxdeid train "$net" --preset "$preset" "${sets[@]}" \
    --set "$section.train.max_seconds=$(( $(left) * 4 / 10 ))" > "$scratch/$net.log" 2>&1 & pids_rec+=($!)
done
rec_s=$(( $(left) * 45 / 100 ))   # then Table 1 evaluates: done before stage 4 needs the judges
timeout -s INT -k 15 "$(left)" python3 -m jaxdeid.reproduce.table1 --preset "$preset" --jobs 4 "${sets[@]}" \
  --set "recognizer.train.max_seconds=$rec_s" > "$scratch/table1.log" 2>&1 & pid_table1=$!
timeout -s INT -k 15 "$(left)" python3 -m jaxdeid train recognizer --arch resnet50 --seed 1 \
  --workdir "$workdir/blackbox_seed1" --preset "$preset" "${sets[@]}" --set "recognizer.train.max_seconds=$rec_s" \
  > "$scratch/fifth.log" 2>&1 & pids_rec+=($!)
fi
case "$phase" in train) share=50;; generators) share=45;; *) share=42;; esac
train_each_arch gan "$share"
echo "== GANs done after $(( $(date +%s) - start ))s"

# --- 3. encoders (each inverts its own generator)
case "$phase" in train|generators) share=50;; *) share=35;; esac
train_each_arch encoder "$share"
echo "== encoders done after $(( $(date +%s) - start ))s"

wait_all recognizer/light "${pids_rec[@]}" $pid_table1
echo "== recognizers done after $(( $(date +%s) - start ))s"
if [ "$phase" = train ]; then   # L_F gets the rest of this call; the evaluation is the next call
  # (30 s short of it, so that train_for's net still ends within the call's budget + 30 s)
  train_for "$(( $(left) - 30 ))" deid deid deid
  echo "== L_F fine-tuning: exit $? after $(( $(date +%s) - start ))s"
fi

fi

if [ "$phase" = generators ]; then
  timeout -s INT -k 15 "$(left)" python3 -m jaxdeid.reproduce.generators --preset "$preset" "${sets[@]}" --no-train \
    --archs "$(echo $archs | tr ' ' ,)" > "$scratch/generators.log" 2>&1
  echo "== generators.py: exit $? after $(( $(date +%s) - start ))s"
elif [ "$phase" != train ]; then
# --- 4. from here nothing trains except L_F: evaluations run with --no-train, so a missing
# checkpoint is an error in its own log instead of a training run that eats the budget.
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.09
eval_args=(--preset "$preset" "${sets[@]}" --no-train)
timeout -s INT -k 15 "$(left)" python3 -m jaxdeid.reproduce.generators "${eval_args[@]}" \
  > "$scratch/generators.log" 2>&1 & pids_eval=($!)
# The private outputs that do not need L_F, one process per method and run (their compilations
# overlap on the CPU cores); table3/fig5/fig6/grids later read them from <workdir>/eval/.
first_methods="pggan stylegan1 stylegan2"; [ "$phase" = evaluate ] && first_methods="ours $first_methods"
for method in $first_methods; do
  timeout -s INT -k 15 "$(left)" python3 -m jaxdeid.reproduce.table3 "${eval_args[@]}" --outputs-only main \
    --methods "$method" > "$scratch/outputs_$method.log" 2>&1 & pids_eval+=($!)
done
for method in ours pggan stylegan1 stylegan2; do
  timeout -s INT -k 15 "$(left)" python3 -m jaxdeid.reproduce.table3 "${eval_args[@]}" --outputs-only holdout \
    --methods "$method" > "$scratch/outputs_holdout_$method.log" 2>&1 & pids_eval+=($!)
done
if [ "$phase" = all ]; then
  # L_F fine-tuning of ours (eq. 8): its judges are the recognizers, its encoder the StyleGAN2 one.
  train_for "$(( $(left) * 35 / 100 ))" deid deid deid
  echo "== L_F fine-tuning: exit $? after $(( $(date +%s) - start ))s"
  timeout -s INT -k 15 "$(left)" python3 -m jaxdeid.reproduce.table3 "${eval_args[@]}" --outputs-only main \
    --methods ours > "$scratch/outputs_ours.log" 2>&1
  echo "== ours' private outputs: exit $? after $(( $(date +%s) - start ))s"
fi
wait_all evaluation "${pids_eval[@]}"

# --- 5. the result pages, from the cached private outputs (detection was measured on the CPU)
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.2
pids_pages=()
for script in ${JAXDEID_GPU_PAGES:-table3 fig5 fig6 grids}; do
  timeout -s INT -k 15 "$(left)" python3 -m "jaxdeid.reproduce.$script" "${eval_args[@]}" \
    > "$scratch/page_$script.log" 2>&1 & pids_pages+=($!)
done
wait_all page "${pids_pages[@]}"
echo "== evaluation done after $(( $(date +%s) - start ))s"
fi
[ -n "${pid_extra:-}" ] && { wait "$pid_extra"; echo "== extra command: exit $?"; }
# --- export: every network this machine has a checkpoint of goes into the weights store
# (jaxdeid/store/shipped/<preset>), which comes back as one archive: nothing trained outlives the
# machine otherwise. A network whose shipped figure is better is kept (export refuses; no --force).
if [ "$phase" != evaluate ] || [ -n "${JAXDEID_GPU_EXPORT:-}" ]; then
  device_name=$(command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
  trained=$(cd "$workdir" && for d in */checkpoints; do [ -d "$d" ] && echo "${d%/checkpoints}"; done)
  # The independent fifth recognizer (seed 1, its own work folder) ships as recognizer_resnet50_seed1.
  [ -d "$workdir/blackbox_seed1/recognizer_resnet50/checkpoints" ] && trained="$trained recognizer_resnet50_seed1"
  for name in $trained; do   # (the fifth's entry knows its own seed and work folder)
    timeout -s INT -k 15 "$(( $(left) > 30 ? $(left) : 30 ))" python3 -m jaxdeid weights export "$name" \
      --preset "$preset" "${sets[@]}" --device "${device_name:-GPU}" >> "$scratch/export.log" 2>&1
    echo "== export $name: exit $?"
  done
  [ -n "${OUT:-}" ] && mkdir -p "$OUT" && tar -cf "$OUT/store_${preset}.tar" -C jaxdeid/store/shipped "$preset"
fi
[ "$phase" = train ] || [ "$phase" = generators ] || python3 -m jaxdeid.reproduce.summary --preset "$preset" "${sets[@]}" || true   # results/README.md
for f in "$scratch"/*.log; do [ "$f" = "$log" ] || { echo "--- $(basename "$f")"; tail -n 3 "$f"; }; done
# Training curves of this run, for the record (small files).
# With them the trainings' own PNGs (GAN samples, encoder reconstructions): the first H200 run's
# StyleGAN2 samples stayed on the machine when generators.py ran out of time.
find "$workdir" \( -name metrics.jsonl -o -name '*.png' \) -newer "$stamp" | tar -czf "$scratch/metrics.tar.gz" -T - 2>/dev/null

if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  # Only what this run wrote (newer than its start), as one archive: the device returns 8 files at most.
  (cd "$results" && find . -maxdepth 1 -type f -newer "$stamp" -print0 \
     | tar --null -czf "$OUT/results_${preset}_${phase}.tar.gz" -T -)
  tar -czf "$OUT/logs_${preset}_${phase}.tar.gz" -C "$scratch" $(cd "$scratch" && ls *.log metrics.tar.gz 2>/dev/null)
fi
echo "== total $(( $(date +%s) - start ))s"
}

main "$@"; exit $?
