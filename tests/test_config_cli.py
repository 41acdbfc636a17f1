"""Config presets and overrides, the results writer, and the CLI's help / exit codes."""

import json
import subprocess
import sys

import pytest

from jaxdeid.cli import main
from jaxdeid.configs import PRESETS, get_config
from jaxdeid.results import provenance, write_json


def test_presets_scale_resolution():
    res = [get_config(p).data.resolution for p in PRESETS]
    assert res == sorted(res) and len(set(res)) == 3
    assert get_config("paper").recognizer.width_mult == 1.0


def test_overrides_parse_types_and_reject_unknown_keys():
    cfg = get_config("smoke", ["light.train.steps=7", "deid.noise=multiplicative", "lowlight.sigma_max=0"])
    assert cfg.light.train.steps == 7 and cfg.deid.noise == "multiplicative"
    assert isinstance(cfg.lowlight.sigma_max, float) and cfg.lowlight.sigma_max == 0.0
    with pytest.raises(KeyError):
        get_config("smoke", ["light.train.stepz=7"])
    with pytest.raises(ValueError):
        get_config("smoke", ["light.train.steps"])
    with pytest.raises(ValueError):
        get_config("huge")


def test_results_writer_requires_and_records_provenance(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "x.json", {"a": 1})
    prov = provenance("smoke", 3, 1.5)
    assert {"git_commit", "preset", "seed", "device", "versions", "wall_s"} <= set(prov)
    write_json(tmp_path / "x.json", {"a": float("nan"), "provenance": prov})
    data = json.loads((tmp_path / "x.json").read_text())
    assert data["a"] is None and data["provenance"]["seed"] == 3
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == 1


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "jaxdeid", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for command in ("train", "reproduce", "config"):
        assert command in out.stdout


def test_cli_usage_errors_exit_2_and_bad_override_exits_1(capsys):
    with pytest.raises(SystemExit) as err:
        main(["train", "nonexistent-network"])
    assert err.value.code == 2
    assert main(["config", "--set", "no.such=1"]) == 1
    assert "unknown config section" in capsys.readouterr().err
