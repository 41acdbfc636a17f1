"""jaxdeid/reproduce/table3.py, fig5.py, fig6.py and grids.py end to end on a tiny run.

Smoke preset, 2 low-light test scenes, randomly initialised networks (--allow-untrained),
two cheap white-box judges, a 2-iteration cap. Compilation dominates, so the scripts run
in-process and share one work folder: the first script computes each method's private
outputs and the others read them from the evaluation cache (runs/<preset>/eval/*.npz).
What is checked: the machine-readable keys the issue fixes, rates in [0, 1], the grid
PNGs' sizes, and that the cache is reused (and invalidated when the weights change).
"""

import importlib.util
import json

import numpy as np
import pytest

# Two private steps and ~8 networks to compile: ~2-3 min of CPU on 2 cores.
pytestmark = pytest.mark.slow

METHODS = ("ours", "pggan")  # ours (light networks, StyleGAN2) and the cheapest baseline
JUDGES = ("vgg16", "mobilenetv3")
OVERRIDES = [f"recognizer.judges={JUDGES!r}",
             "crop.score_threshold=0.0",   # a random detector's scores are low: count its peak as a face
             "deid.max_iters=2",
             "recognizer.bootstrap_samples=10",
             "recognizer.eval_pairs=16"]


def load_script(name):
    return importlib.import_module(f"jaxdeid.reproduce.{name}")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Runs all four scripts once; returns (results dir, work dir, argv)."""
    base = tmp_path_factory.mktemp("private_eval")
    results_dir, workdir = base / "results", base / "runs"
    argv = ["--preset", "smoke", "--allow-untrained", "--count", "2", "--results-dir", str(results_dir),
            "--workdir", str(workdir), "--methods", *METHODS]
    for item in OVERRIDES:
        argv += ["--set", item]
    for name in ("fig6", "fig5", "grids"):
        assert load_script(name).main(argv) == 0
    # senet50 is not a judge here, so the black-box hold-out run is the main run (no recompile).
    assert load_script("table3").main(argv + ["--holdout", "senet50"]) == 0
    return results_dir, workdir, argv


def _read(results_dir, name):
    return json.loads((results_dir / name).read_text())


def _is_rate(v):
    return isinstance(v, float) and 0.0 <= v <= 1.0


def test_fig6_keys_and_rates(run):
    data = _read(run[0], "fig6.json")
    assert set(data) == set(METHODS) | {"provenance"}
    for m in METHODS:
        assert set(data[m]) == {"success", "detected", "valid", "deidentified"}
        assert all(_is_rate(v) for v in data[m].values()), data[m]
        # success needs every part
        assert data[m]["success"] <= min(data[m]["detected"], data[m]["valid"], data[m]["deidentified"]) + 1e-9
    assert data["provenance"]["preset"] == "smoke" and data["provenance"]["images"] == 2
    assert (run[0] / "fig6.png").stat().st_size > 0 and "Fig" in (run[0] / "fig6.md").read_text()


def test_fig5_keys(run):
    data = _read(run[0], "fig5.json")
    assert set(data) == set(METHODS) | {"provenance"}
    for m in METHODS:
        assert set(data[m]) == {"ssim", "cs", "psnr"}
        assert -1.0 <= data[m]["ssim"] <= 1.0 and 0.0 <= data[m]["cs"] <= 1.0 + 1e-6
        assert np.isfinite(data[m]["psnr"])
    assert (run[0] / "fig5.png").exists()


def test_table3_keys_and_rates(run):
    data = _read(run[0], "table3.json")
    assert set(data) == {"whitebox", "whitebox_private_only", "blackbox", "fallback_rate", "provenance"}
    assert set(data["whitebox"]) == set(METHODS) and set(data["blackbox"]) == set(METHODS)
    assert set(data["fallback_rate"]) == set(METHODS) and all(_is_rate(v) for v in data["fallback_rate"].values())
    for m in METHODS:
        assert set(data["whitebox"][m]) == set(JUDGES)
        for rates in data["whitebox"][m].values():
            assert set(rates) == {"tpr", "fpr", "tpr_1n", "fpr_1n"} and all(_is_rate(v) for v in rates.values())
            assert rates["tpr_1n"] + rates["fpr_1n"] <= 1.0 + 1e-9
        # the held-out recognizer and the independent fifth one, never judges
        assert set(data["blackbox"][m]) == {"senet50", "resnet50_seed1"}
        for rates in data["blackbox"][m].values():
            assert set(rates) == {"tpr", "fpr"} and all(_is_rate(v) for v in rates.values())
    md = (run[0] / "table3.md").read_text()
    assert "reading matches the paper better" in md and "randomly initialised" in md


def test_grids_sizes(run):
    from PIL import Image

    from jaxdeid.configs import get_config

    grids = load_script("grids")
    tile = grids.tile_size(get_config("smoke"))
    with Image.open(run[0] / "table2_grid.png") as image:
        assert image.size == grids.grid_size(3, 2, tile)      # low-light / de-identified / private, 2 scenes
    with Image.open(run[0] / "table4_grid.png") as image:
        assert image.size == grids.grid_size(1 + 2 * 1, 2, tile)  # one baseline (pggan) here
    assert "before attenuation" in (run[0] / "grids.md").read_text()
    shown = _read(run[0], "grids.json")
    assert set(shown["shown"]) == set(METHODS) and all(_is_rate(v["success"]) for v in shown["shown"].values())


def test_cache_is_reused_and_keyed_on_weights(run):
    """The cached outputs are read back as written; a change of weights gives a new fingerprint."""
    import jax

    from jaxdeid.configs import get_config
    from jaxdeid.eval import protocol
    from jaxdeid.reproduce import common

    results_dir, workdir, argv = run
    config = get_config("smoke", OVERRIDES)
    config.workdir = str(workdir)
    config.data.storage = "direct"
    path = common.cache_path(config, "ours", JUDGES)
    assert path.exists()
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        assert meta["judges"] == list(JUDGES) and "untrained" in meta["notes"]
    params, _ = common.ensure_params(config, "ours", train_missing=True, allow_untrained=True)  # as the scripts: memoised
    moved = jax.tree_util.tree_map(lambda x: x + 1, params)
    assert protocol.params_fingerprint(params) != protocol.params_fingerprint(moved)
    evalset = protocol.evaluation_set(config, 2)
    out = common.method_outputs(config, "ours", evalset, train_missing=True, allow_untrained=True)
    assert out["meta"]["cached"] and out["frames"].shape == evalset.lowlight.shape


def test_table3_outputs_only_fills_the_cache_and_writes_no_results(run, tmp_path, capsys):
    """`table3.py --outputs-only` (the parallel warm-up of reproduce/gpu_small.sh) reads/writes
    the same cache entries as a full run, and writes no result file."""
    _, _, argv = run
    argv = [a if a != str(run[0]) else str(tmp_path / "none") for a in argv]
    table3 = load_script("table3")
    for variant in ("main", "holdout"):
        assert table3.main(argv + ["--outputs-only", variant, "--holdout", "senet50"]) == 0
    assert capsys.readouterr().out.count("cached outputs") == 2 * len(METHODS)
    assert not (tmp_path / "none").exists()
