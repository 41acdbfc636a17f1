"""The shipped-weights store: format, checks, the resolution rule, and the committed store itself."""

from __future__ import annotations

import copy
import json
import shutil

import jax
import numpy as np
import pytest

from jaxdeid import results
from jaxdeid.cli import main as cli_main
from jaxdeid.components import entry_by_name, store_entries
from jaxdeid.configs import get_config
from jaxdeid.store import (SHIPPED_ROOT, StoreError, abstract_inference, load_shipped, read_manifest, resolve,
                           store_dir)
from jaxdeid.store import fileformat
from jaxdeid.weights import export_variables

# One network of every kind the store ships.
KINDS = ["light_enhance", "light_attenuate", "crop", "gan_stylegan2", "encoder_pggan", "recognizer_mobilenetv3",
         "deid_finetune"]


@pytest.fixture
def config(tmp_path):
    cfg = get_config("smoke")
    cfg.workdir = str(tmp_path / "runs")
    cfg.weights_store = str(tmp_path / "store")
    return cfg


def random_variables(entry, seed: int = 0):
    """Concrete random variables with the network's exact inference shapes (no compilation)."""
    rng = np.random.default_rng(seed)
    abstract = abstract_inference(entry.task(), entry.component.inference, int(entry.config.seed))

    def fill(path, leaf):
        if not np.issubdtype(leaf.dtype, np.floating):
            return np.zeros(leaf.shape, leaf.dtype)
        values = 0.2 * rng.standard_normal(leaf.shape)
        if str(getattr(path[-1], "key", "")) == "var":   # BatchNorm variances are positive
            values = 1.0 + np.abs(values)
        return values.astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)


def probe(entry, variables):
    return np.asarray(jax.jit(lambda v: entry.component.probe(entry.config, entry.arch, v))(variables))


@pytest.mark.parametrize("name,codec", [(name, "int8") for name in KINDS] + [("light_enhance", "float16"),
                                                                           ("crop", "float16")])
def test_export_then_load_gives_the_outputs_within_the_recorded_error(config, name, codec):
    config.weights_codec = codec
    entry = entry_by_name(config, name)
    variables = random_variables(entry)
    record = export_variables(entry, variables, step=7)
    assert record["codec"] == codec and record["steps"] == {"done": 7, "planned": int(record["steps"]["planned"])}
    loaded = resolve(entry.config, entry.task(), entry.component.inference, entry.train_command)
    error = np.max(np.abs(probe(entry, loaded).astype(np.float64) - probe(entry, variables)))
    assert error <= record["storage_error"]["max_abs"] * (1 + 1e-5) + 1e-7
    # The stored network is not the float32 one bit for bit, but close relative to its outputs.
    assert record["storage_error"]["mean_abs"] <= 0.05 * record["storage_error"]["output_mean_abs"] + 1e-6
    assert results.weights_used()[name]["source"] == "store"


def _exported(config, name="light_enhance"):
    entry = entry_by_name(config, name)
    export_variables(entry, random_variables(entry), step=3)
    return entry, store_dir(config)


def _load(entry):
    return load_shipped(entry.config, entry.name, abstract_inference(entry.task(), entry.component.inference))


def test_a_flipped_byte_is_refused(config):
    entry, directory = _exported(config)
    path = directory / read_manifest(directory)["networks"][entry.name]["files"][0]["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="sha256"):
        _load(entry)


def test_a_missing_file_is_refused(config):
    entry, directory = _exported(config)
    (directory / read_manifest(directory)["networks"][entry.name]["files"][0]["file"]).unlink()
    with pytest.raises(StoreError, match="missing"):
        _load(entry)


def test_a_file_of_another_preset_is_refused(config, tmp_path):
    entry, directory = _exported(config)
    small = get_config("small")
    small.weights_store = config.weights_store
    shutil.copytree(directory, store_dir(small))
    with pytest.raises(StoreError, match="'preset'"):
        _load(entry_by_name(small, "light_enhance"))


def test_a_file_of_other_shapes_is_refused_naming_the_tensor(config):
    entry, _ = _exported(config)
    wider = copy.deepcopy(config)
    wider.light.decom_channels = 2 * int(config.light.decom_channels)
    with pytest.raises(StoreError, match="fingerprint.*tensor"):
        _load(entry_by_name(wider, "light_enhance"))


def test_resolution_order_checkpoint_then_store_then_error(config):
    entry = entry_by_name(config, "light_enhance")
    with pytest.raises(FileNotFoundError, match="missing from the smoke store.*jaxdeid train enhance"):
        resolve(config, entry.task(), entry.component.inference, entry.train_command)
    disabled = copy.deepcopy(config)
    disabled.weights_store = ""
    with pytest.raises(FileNotFoundError, match="disabled"):
        resolve(disabled, entry.task(), entry.component.inference, entry.train_command)
    shipped_variables = random_variables(entry, seed=1)
    export_variables(entry, shipped_variables, step=3)
    from_store = resolve(config, entry.task(), entry.component.inference, entry.train_command)
    assert results.weights_used()["light_enhance"]["source"] == "store"
    np.testing.assert_allclose(jax.tree_util.tree_leaves(from_store)[0], jax.tree_util.tree_leaves(
        shipped_variables)[0], atol=1e-2)
    # A checkpoint in the workdir wins over the store.
    from jaxdeid.train import run
    config.light.train.steps = 1
    run(entry.task(), config.light.train, config.workdir, seed=0)
    from_checkpoint = resolve(config, entry.task(), entry.component.inference, entry.train_command)
    assert results.weights_used()["light_enhance"] == {
        "source": "checkpoint", "path": f"{config.workdir}/light_enhance/checkpoints", "step": 1}
    assert not np.allclose(jax.tree_util.tree_leaves(from_checkpoint)[0], jax.tree_util.tree_leaves(from_store)[0])


def test_export_refuses_to_replace_a_better_figure_unless_forced(config):
    entry = entry_by_name(config, "light_enhance")
    variables = random_variables(entry)
    export_variables(entry, variables, step=3, evaluate=lambda stored: {"ssim": 0.8})
    with pytest.raises(ValueError, match="better"):
        export_variables(entry, variables, step=4, evaluate=lambda stored: {"ssim": 0.7})
    record = export_variables(entry, variables, step=4, evaluate=lambda stored: {"ssim": 0.7}, force=True)
    assert record["figure"]["value"] == 0.7
    assert read_manifest(store_dir(config))["networks"]["light_enhance"]["steps"]["done"] == 4


def test_large_networks_are_sharded_and_read_back(tmp_path):
    flat = {f"layer{i}/kernel": np.full((64, 64), i, np.float32) for i in range(5)}
    stored, info = fileformat.to_storage(flat, "float16")
    files = fileformat.write(tmp_path, "net", stored, {"network": "net"}, shard_limit=3 * 64 * 64 * 2)
    assert [f["file"] for f in files] == ["net-00001-of-00002.safetensors", "net-00002-of-00002.safetensors"]
    back, meta = fileformat.read(tmp_path, files)
    assert meta == {"network": "net"} and set(back) == set(flat)


def test_int8_is_per_output_channel_and_bounded():
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 3, 64, 32)).astype(np.float32) * np.linspace(0.01, 10, 32, dtype=np.float32)
    stored, info = fileformat.to_storage({"conv/kernel": kernel, "conv/bias": kernel[0, 0, 0]}, "int8")
    assert stored["conv/kernel"].dtype == np.int8 and stored["conv/kernel::scale"].shape == (32,)
    assert stored["conv/bias"].dtype == np.float16 and info["int8"] == ["conv/kernel"]
    back = fileformat.from_storage(stored)["conv/kernel"]
    # Half a quantisation step per output channel, whatever that channel's scale.
    step = np.abs(kernel).reshape(-1, 32).max(0) / 127
    assert np.all(np.abs(back - kernel).reshape(-1, 32).max(0) <= 0.5 * step * (1 + 1e-5))


def test_non_finite_weights_are_not_stored():
    with pytest.raises(ValueError, match="non-finite"):
        fileformat.to_storage({"w": np.array([[np.nan, 1.0]], np.float32)})


def test_provenance_names_the_weights_used(config):
    entry, _ = _exported(config)
    resolve(config, entry.task(), entry.component.inference, entry.train_command)
    prov = results.provenance("smoke", 0, 1.0)
    assert prov["weights"]["light_enhance"]["source"] == "store"
    assert len(prov["weights"]["light_enhance"]["sha256"][0]) == 64


@pytest.mark.parametrize("preset", [p for p in ("smoke", "small") if (SHIPPED_ROOT / p / "manifest.json").is_file()])
def test_the_committed_store_verifies(preset, capsys):
    assert cli_main(["weights", "verify", "--preset", preset]) == 0
    out = capsys.readouterr().out
    manifest = json.loads((SHIPPED_ROOT / preset / "manifest.json").read_text())
    assert f"{len(manifest['networks'])} of {len(manifest['networks'])} shipped networks verified" in out


def test_every_network_of_a_preset_has_an_entry():
    entries = {e.name: e for e in store_entries(get_config("small"))}
    assert len(entries) == 15 and "deid_finetune" in entries
    # The independent fifth recognizer: its own seed, store tag and work folder, never the judge's run.
    fifth = entries["recognizer_resnet50_seed1"]
    assert (fifth.config.seed, fifth.config.weights_tag) == (1, "seed1")
    assert fifth.config.workdir == "runs/small/blackbox_seed1" and entries["recognizer_resnet50"].config.seed == 0
    # Another global seed (it also seeds the latent noise) still resolves the shipped networks.
    assert [e.name for e in store_entries(get_config("small", ["seed=3"]))] == list(entries)


def test_a_shipped_entry_of_other_shapes_or_figure_never_blocks_its_replacement():
    from jaxdeid.weights import figure_better

    old = {"fingerprint": "a", "figure": {"name": "ssim", "value": 0.9, "higher_is_better": True}}
    assert figure_better(old, {"fingerprint": "a", "figure": {"name": "ssim", "value": 0.8}})
    assert not figure_better(old, {"fingerprint": "b", "figure": {"name": "ssim", "value": 0.8}})
    assert not figure_better(old, {"fingerprint": "a", "figure": {"name": "psnr", "value": 0.8}})


def test_deidentify_with_an_incomplete_store_lists_what_is_missing(config):
    """With the light networks shipped but nothing else, loading ours names every missing
    network, says it is missing from the store, and gives the command that trains it."""
    from jaxdeid.deid.pipeline import load_params

    for name in ("light_enhance", "light_attenuate"):
        entry = entry_by_name(config, name)
        export_variables(entry, random_variables(entry), step=3)
    with pytest.raises(FileNotFoundError) as err:
        load_params(config, "ours")
    message = str(err.value)
    assert "missing from the smoke store" in message
    assert "jaxdeid train crop --preset smoke" in message and "jaxdeid train gan --arch stylegan2" in message
    assert "jaxdeid train enhance" not in message        # shipped: not listed


def test_training_wall_time_sums_resumed_runs_and_skips_evaluation_lines(tmp_path):
    from jaxdeid.weights import training_wall_s

    lines = [{"step": 1, "loss": 1, "time_s": 10.0}, {"step": 1, "eval/x": 0.5}, {"step": 2, "loss": 1, "time_s": 20.0},
             {"step": 3, "loss": 1, "time_s": 5.0}, {"step": 4, "loss": 1, "time_s": 7.5}]   # resumed at step 3
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    assert training_wall_s(str(tmp_path), "net") == 27.5
