# Sourced by benchmarks/gpu.sh and reproduce/gpu_small.sh (GPU machines without internet).
# install_missing_wheels DIR: `pip install --no-index --no-deps` of every wheel in DIR whose
# distribution is not installed at all. An installed version is never replaced (the machine's
# own jax, flax, optax and orbax stay as they are); every wheel DIR needs travels in DIR, so
# no dependency is resolved here. A wheel that fails (wrong Python, say) is reported and skipped.
install_missing_wheels() {
  local dir=$1 wheel name
  [ -d "$dir" ] || return 0
  for wheel in "$dir"/*.whl; do
    [ -e "$wheel" ] || continue
    name=$(basename "$wheel" | cut -d- -f1)
    python3 -c "import importlib.metadata as m; m.version('$name')" 2>/dev/null && continue
    if python3 -m pip install --no-index --no-deps --find-links "$dir" -q "$wheel" >/dev/null 2>&1; then
      echo "   (pip: installed $(basename "$wheel"))"
    else
      echo "   (pip: $(basename "$wheel") could not be installed (wrong Python or platform?))"
    fi
  done
}
