#!/usr/bin/env bash
# Every small-preset network that a CPU cannot train in reasonable time (the four recognizers,
# the black-box fifth recognizer, the three GANs, their encoders and the L_F fine-tuning),
# then every reproduce script that needs them, on ONE GPU inside one device call.
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
# Order, with the device shared by concurrent processes (each gets 1/N of its memory):
#   1. prepare the SynthFaces tfds splits once, with every CPU core;
#   2. in parallel: Table 1 (four recognizers, --jobs 4), the independent fifth recognizer
#      (seed 1) of the black-box test, the three GANs, and the light networks and the
#      detector unless their checkpoints came along;
#   3. in parallel, as soon as the GANs are done: the three encoders;
#   4. the L_F fine-tuning of ours (needs encoder and recognizers);
#   5. reproduce/all.py --only detection,generators,table3,fig5,fig6,grids (evaluation only:
#      every checkpoint exists by then), then results/README.md.
# Each stage has a deadline derived from JAXDEID_GPU_BUDGET_S; a training process that hits
# it is stopped and the checkpoint it saved last is what the evaluation uses (every result
# file records the steps its networks trained for). A failed stage costs its own rows only.
#
# Environment (all optional):
#   JAXDEID_GPU_BUDGET_S   seconds for stages 1-5 together (default 540)
#   JAXDEID_GPU_PRESET     preset (default small; "smoke" for a dry run of the plumbing)
#   JAXDEID_GPU_SET        extra config overrides, space separated (e.g. "gan.train.steps=3000")
#   OUT                    if set: $OUT/results_<preset>.tar.gz (what results/ gained) and the log
#
# Cost, from XLA's cost analysis of each training step at the small preset (batch 32; the
# numbers benchmarks/estimate_gpu.py prints): StyleGAN2 1.3, StyleGAN1 1.3, PGGAN 1.8 TFLOP
# per step x 5000 steps = 22 PFLOP for the GANs; recognizers 0.03-0.13 TFLOP x 3000 steps.
# At a sustained 50-100 TFLOP/s that is 4-7 minutes of GPU work before compilation and
# evaluation: at the edge of one 10-minute call. If the GANs hit their deadline, run again
# with fewer steps (JAXDEID_GPU_SET="gan.train.steps=3000") and say so beside the results.
main() {
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
start=$(date +%s)
preset="${JAXDEID_GPU_PRESET:-small}"
budget="${JAXDEID_GPU_BUDGET_S:-540}"
export JAXDEID_PROGRESS=0
export PYTHONUNBUFFERED=1
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export JAXDEID_GIT_COMMIT="${JAXDEID_GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
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
echo "== reproduce/gpu_small.sh: preset $preset, budget ${budget}s, commit $JAXDEID_GIT_COMMIT, overrides: ${sets[*]:-none}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

left() { echo $(( start + budget - $(date +%s) )); }

# --- 0. offline wheels (only distributions that are not installed at all)
if [ -d .whl ]; then
  for wheel in .whl/*.whl; do
    name=$(basename "$wheel" | cut -d- -f1)
    python3 -c "import importlib.metadata as m; m.version('$name')" 2>/dev/null && continue
    python3 -m pip install --no-index --no-deps --find-links .whl -q "$wheel" >/dev/null 2>&1 \
      || echo "   (pip: $(basename "$wheel") could not be installed)"
  done
fi
python3 -c "import jax, flax, optax, orbax.checkpoint, ml_collections, dm_pix, tensorflow_datasets; print('devices:', jax.devices())" \
  || { echo "gpu_small.sh: a required package is missing (carry its wheel in .whl/)"; return 1; }

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

# --- 2. recognizers and GANs, concurrently on the one device
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.07   # up to 12 processes (table1 parent + 4 + fifth + 3 GANs + 3 light/crop)
pids_rec=(); pids_gan=()
# The light networks and the detector: nothing to do where their checkpoints were carried along.
for net in enhance attenuate crop; do
  timeout -s INT -k 15 "$(( $(left) / 2 ))" python3 -m jaxdeid train "$net" --preset "$preset" "${sets[@]}" \
    > "$scratch/$net.log" 2>&1 & pids_rec+=($!)
done
timeout -s INT -k 15 "$(left)" python3 reproduce/table1.py --preset "$preset" --jobs 4 "${sets[@]}" \
  > "$scratch/table1.log" 2>&1 & pids_rec+=($!)
timeout -s INT -k 15 "$(left)" python3 -m jaxdeid train recognizer --arch resnet50 --seed 1 \
  --workdir "$workdir/blackbox_seed1" --preset "$preset" "${sets[@]}" > "$scratch/fifth.log" 2>&1 & pids_rec+=($!)
for arch in stylegan2 stylegan1 pggan; do
  # GANs may use at most ~60 % of what is left, so encoders, L_F and the evaluation still fit.
  timeout -s INT -k 15 "$(( $(left) * 6 / 10 ))" python3 -m jaxdeid train gan --arch "$arch" --preset "$preset" \
    "${sets[@]}" > "$scratch/gan_$arch.log" 2>&1 & pids_gan+=($!)
done
for pid in "${pids_gan[@]}"; do wait "$pid"; echo "== gan process $pid: exit $?"; done
echo "== GANs done after $(( $(date +%s) - start ))s"

# --- 3. encoders (each inverts its own generator)
pids_enc=()
for arch in stylegan2 stylegan1 pggan; do
  timeout -s INT -k 15 "$(( $(left) * 4 / 10 ))" python3 -m jaxdeid train encoder --arch "$arch" --preset "$preset" \
    "${sets[@]}" > "$scratch/encoder_$arch.log" 2>&1 & pids_enc+=($!)
done
for pid in "${pids_enc[@]}" "${pids_rec[@]}"; do wait "$pid"; echo "== process $pid: exit $?"; done
echo "== encoders and recognizers done after $(( $(date +%s) - start ))s"

# --- 4. L_F fine-tuning of ours (eq. 8): the whole device again
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.75
timeout -s INT -k 15 "$(( $(left) / 3 ))" python3 -m jaxdeid train deid --preset "$preset" "${sets[@]}" \
  > "$scratch/deid.log" 2>&1
echo "== L_F fine-tuning: exit $? after $(( $(date +%s) - start ))s"

# --- 5. evaluation: every checkpoint exists now, so the scripts only evaluate
timeout -s INT -k 15 "$(left)" python3 reproduce/all.py --preset "$preset" \
  --only detection,generators,table3,fig5,fig6,grids "${sets[@]}"
echo "== evaluation: exit $? after $(( $(date +%s) - start ))s"
python3 reproduce/summary.py --preset "$preset" "${sets[@]}" || true   # results/README.md from whatever got written
for f in "$scratch"/*.log; do [ "$f" = "$log" ] || { echo "--- $(basename "$f")"; tail -n 3 "$f"; }; done

if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  # Only what this run wrote (newer than its start), as one archive: the device returns 8 files at most.
  (cd "$results" && find . -maxdepth 1 -type f -newer "$stamp" -print0 \
     | tar --null -czf "$OUT/results_${preset}.tar.gz" -T -)
  tar -czf "$OUT/logs_${preset}.tar.gz" -C "$scratch" $(cd "$scratch" && ls *.log)
fi
echo "== total $(( $(date +%s) - start ))s"
}

main "$@"; exit $?
