"""The benchmark suite's own machinery: compile-time log of the warm-up phase, CPU-lowered
FLOP counts, and how benchmarks/warm_cache.py groups the benchmarks into processes."""

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import harness  # noqa: E402
import warm_cache  # noqa: E402


def test_compile_time_warmup_logs_and_timed_pass_reads_cold_compile(tmp_path, monkeypatch):
    log = tmp_path / "compile_log.jsonl"
    monkeypatch.setenv("JAXDEID_BENCH_COMPILE_LOG", str(log))
    monkeypatch.setenv("JAXDEID_BENCH_WARMUP", "1")
    assert harness.compile_time("prog", 12.5) == {"compile_s": 12.5, "compile_source": "this process"}
    harness.compile_time("prog", 99.0)   # a second warm-up compile of the same program: first one wins
    assert [json.loads(line)["key"] for line in log.read_text().splitlines()] == ["prog", "prog"]

    monkeypatch.setenv("JAXDEID_BENCH_WARMUP", "0")
    timed = harness.compile_time("prog", 0.4)
    assert timed["compile_s"] == 12.5 and timed["compile_cached_s"] == 0.4
    assert timed["compile_source"].startswith("warm-up")
    assert harness.compile_time("other", 3.0) == {"compile_s": 3.0, "compile_source": "this process"}
    assert len(log.read_text().splitlines()) == 2   # the timed pass never writes the log


def test_compile_and_analyse_key_is_stable_across_lowerings(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDEID_BENCH_COMPILE_LOG", str(tmp_path / "log.jsonl"))
    monkeypatch.setenv("JAXDEID_BENCH_WARMUP", "1")
    x = jnp.ones((8, 8))
    harness.compile_and_analyse(lambda a: jnp.tanh(a @ a), x)
    harness.compile_and_analyse(lambda a: jnp.tanh(a @ a), x)        # same program, new Python function
    harness.compile_and_analyse(lambda a: jnp.tanh(a @ a.T), x)      # a different program
    keys = [json.loads(line)["key"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert keys[0] == keys[1] != keys[2]


def test_lowered_flops_counts_what_the_compiled_program_counts():
    a = jnp.ones((64, 32))
    b = jnp.ones((32, 16))
    flops = harness.lowered_flops(jnp.matmul, a, b)
    assert flops == pytest.approx(2 * 64 * 32 * 16, rel=0.01)
    # ShapeDtypeStructs and arrays give the same count (the private step's loop FLOPs use both).
    assert harness.lowered_flops(jnp.matmul, jax.ShapeDtypeStruct(a.shape, a.dtype), b) == flops


def test_warm_cache_groups_share_compiled_programs_and_start_expensive_first():
    presets = ["paper", "small"]
    ids = [f"benchmarks/test_private_step.py::{name}" for name in (
        "test_stage[small-encode]", "test_stage[paper-enhance]", "test_private_step_fused[paper-pggan]",
        "test_private_step_fused[paper-ours]", "test_private_step_fused_bf16[paper]",
        "test_private_step_fused_batch_sizes[paper-0]", "test_private_step_fused_batch_sizes[paper--1]",
        "test_private_step_scale_out[paper-2]", "test_private_step_staged[small]")]
    ids.append("benchmarks/test_train_steps.py::test_train_step[paper-train_gan_stylegan2]")
    groups = {(p, g): nodes for p, g, nodes in warm_cache.plan(ids, presets)}
    # ours' float32 step serves the fused row, the largest batch row and the scale-out rows ...
    assert len(groups[("paper", "ours")]) == 3
    # ... while bf16 and the smallest batch compile their own programs, beside it
    assert ("paper", "ours_bf16") in groups and ("paper", "ours_batch0") in groups
    assert groups[("paper", "train_gan_stylegan2")] == [ids[-1]]
    order = [k for k in groups]
    assert order[0] == ("paper", "ours")
    assert order.index(("paper", "stages")) > order.index(("paper", "train_gan_stylegan2"))
    assert all(p == "paper" for p, _ in order[:order.index(("small", "staged"))])   # paper first
    assert sum(len(nodes) for nodes in groups.values()) == len(ids)
