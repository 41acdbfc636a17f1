"""`jaxdeid profile` and the trace parsing behind it (`jaxdeid.profiling`).

The parsing is checked on a small hand-written HLO module and trace whose answer is
known; the command end to end at the smoke preset (two judges, two loop iterations,
batch 2: compiling the step is most of the ~45 s).
"""

import json
from pathlib import Path

import numpy as np

from jaxdeid import profiling
from jaxdeid.cli import main

# The shape of a compiled module's text (`compiled.as_text()`): a while loop inside the
# "noise_loop" scope whose body holds a synthesize fusion and a copy without metadata.
HLO = """HloModule jit_step, is_scheduled=true, entry_computation_layout={(f32[4]{0})->f32[4]{0}}

%body.1 (arg_tuple.1: (s32[], f32[4])) -> (s32[], f32[4]) {
  %arg_tuple.1 = (s32[], f32[4]{0}) parameter(0)
  %get-tuple-element.1 = f32[4]{0} get-tuple-element(%arg_tuple.1), index=1
  %fusion.1 = f32[4]{0} fusion(%get-tuple-element.1), kind=kLoop, calls=%fused_computation, metadata={op_name="jit(step)/noise_loop/while/body/synthesize/Generator.synthesize/mul" stack_frame_id=3}
  %copy.2 = s32[] copy(%get-tuple-element.1)
  ROOT %tuple.1 = (s32[], f32[4]{0}) tuple(%copy.2, %fusion.1)
}

%cond.1 (arg_tuple.2: (s32[], f32[4])) -> pred[] {
  %arg_tuple.2 = (s32[], f32[4]{0}) parameter(0)
  ROOT %compare.1 = pred[] fusion(%arg_tuple.2), kind=kLoop, calls=%cmp, metadata={op_name="jit(step)/noise_loop/while/cond/lt"}
}

ENTRY %main.1 (x.1: f32[4]) -> f32[4] {
  %x.1 = f32[4]{0} parameter(0), metadata={op_name="x"}
  %enhance.1 = f32[4]{0} fusion(%x.1), kind=kLoop, calls=%fe, metadata={op_name="jit(step)/enhance/RetinexNet/mul"}
  %inner.3 = f32[4]{0} fusion(%enhance.1), kind=kLoop, calls=%fi, metadata={op_name="jit(step)/enhance/jit(clip)/min"}
  %while.5 = (s32[], f32[4]{0}) while(%tuple.0), condition=%cond.1, body=%body.1, metadata={op_name="jit(step)/noise_loop/while"}
  %release.1 = f32[4]{0} fusion(%while.5), kind=kLoop, calls=%fr, metadata={op_name="jit(step)/release/vmap(judge_vgg16)/add"}
  ROOT %other.7 = f32[4]{0} fusion(%release.1), kind=kLoop, calls=%fo, metadata={op_name="jit(step)/jit(crop)/add"}
}
"""


def _op(name, ts, dur, run, tid=1):
    return {"ph": "X", "pid": 7, "tid": tid, "ts": ts, "dur": dur, "name": name,
            "args": {"hlo_op": name, "hlo_module": "jit_step", "run_id": run}}


def _trace():
    """Two calls of the module above (µs), the second 100 µs after the first, each under a step annotation.

    Per call: enhance.1 [0, 10] with inner.3 [0, 2] nested in it (listed first, starting with
    it); an empty other.7 event at 5; idle [10, 12]; the while event [12, 13] (a container);
    two loop iterations: fusion.1 [12, 20], copy.2 [20, 21], idle [21, 22], fusion.1 [22, 30],
    copy.2 [30, 31]; release.1 [31, 40] on thread 1 while other.7 runs [35, 39] on thread 2.
    """
    events = [{"ph": "M", "pid": 7, "name": "process_name", "args": {"name": "/host:CPU"}}]
    for run, t0, step in (("1", 0.0, (-5.0, 47.0)), ("2", 100.0, (95.0, 55.0))):
        events += [_op("inner.3", t0, 2, run), _op("enhance.1", t0, 10, run), _op("other.7", t0 + 5, 0, run),
                   _op("while.5", t0 + 12, 1, run),
                   _op("fusion.1", t0 + 12, 8, run), _op("copy.2", t0 + 20, 1, run),
                   _op("fusion.1", t0 + 22, 8, run), _op("copy.2", t0 + 30, 1, run),
                   _op("release.1", t0 + 31, 9, run), _op("other.7", t0 + 35, 4, run, tid=2),
                   {"ph": "X", "pid": 7, "tid": 3, "ts": step[0], "dur": step[1], "name": "step",
                    "args": {"step_num": run}},
                   {"ph": "X", "pid": 7, "tid": 1, "ts": t0 + 40.5, "dur": 0.5, "name": "end: release.1",
                    "args": {}}]
    return events


def test_parse_hlo_reads_scopes_inherits_metadata_and_finds_containers():
    hlo = profiling.parse_hlo(HLO)
    assert hlo.module == "jit_step"
    assert hlo.op_names["fusion.1"].endswith("noise_loop/while/body/synthesize/Generator.synthesize/mul")
    assert hlo.op_names["copy.2"] == "jit(step)/noise_loop/while"   # no metadata: its caller's (the while)
    assert hlo.containers == {"while.5"}
    assert profiling.loop_body_ops(hlo) == {"fusion.1", "copy.2"}
    keys = {op: profiling.stage_key(name) for op, name in hlo.op_names.items()}
    assert keys["fusion.1"] == ("noise_loop", "synthesize")
    assert keys["copy.2"] == ("noise_loop",)
    assert keys["release.1"] == ("release",)          # "vmap(judge_vgg16)" inside release stays release's
    assert keys["other.7"] == ()                      # "jit(crop)" is a function's name, not the crop scope
    assert keys["inner.3"] == keys["enhance.1"] == ("enhance",)


def test_attribute_time_splits_each_call_span():
    hlo = profiling.parse_hlo(HLO)
    per_run = profiling.attribute_time(profiling.op_events(_trace(), "jit_step"), hlo.containers)
    assert set(per_run) == {"1", "2"}
    for run in per_run.values():
        elapsed = {op: e for op, (e, _) in run.items()}
        busy = {op: b for op, (_, b) in run.items()}
        assert elapsed == {"enhance.1": 8, "inner.3": 2, "fusion.1": 2 + 8 + 1 + 8, "copy.2": 2,
                           "release.1": 4 + 2 + 1, "other.7": 2}
        assert sum(elapsed.values()) == 40   # the span from the first op's start to the last op's end
        assert busy == {"enhance.1": 8, "inner.3": 2, "fusion.1": 16, "copy.2": 2, "release.1": 9, "other.7": 4}


def test_stage_table_rows_host_time_and_iterations():
    hlo = profiling.parse_hlo(HLO)
    table = profiling.stage_table(_trace(), hlo, profiling.private_step_rows(["vgg16"]), iterations=2,
                                  wall_s=60e-6, step_name="step")
    ms = {row.label: value for row, value, _ in table.rows}
    assert ms["enhance"] == 0.010
    assert ms["synthesize"] == 0.019
    assert ms["loop bookkeeping"] == 0.002
    assert ms["release (paste-back, re-detect, judge views)"] == 0.007
    assert ms["other (between stages)"] == 0.002
    assert ms["judge vgg16"] == ms["encode"] == 0.0
    assert np.isclose(table.device_ms, 0.040)
    assert np.isclose(table.host_ms, ((47 - 40) + (55 - 40)) / 2 / 1e3)
    assert np.isclose(table.total_ms, table.device_ms + table.host_ms)
    assert table.calls == 2 and table.traced_iterations == [2, 2] and table.unmapped_ops == 0
    assert table.keys_seen == {("enhance",), ("noise_loop", "synthesize"), ("noise_loop",), ("release",), ()}
    text = profiling.format_table(table)
    assert "noise loop (2 iterations per call):" in text and "judge vgg16" in text
    assert json.loads(json.dumps(table.as_dict()))["stages"][0]["label"] == "enhance"


JUDGES = ("vgg16", "mobilenetv3")


def test_profile_command_smoke(tmp_path, capsys):
    """The command's table: its total is the wall time of a call (±10 %), every stage ran, iterations agree."""
    out = tmp_path / "profile"
    status = main(["profile", "--preset", "smoke", "--batch", "2", "--calls", "2", "--out", str(out),
                   "--set", f"recognizer.judges={JUDGES!r}", "--set", "deid.max_iters=2"])
    assert status == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "stages.json").read_text())
    trace = Path(report["trace_file"])
    assert trace.name == "perfetto_trace.json.gz" and trace.parent.parent == out / "plugins" / "profile"
    assert "weights: random" in printed and "judge mobilenetv3" in printed

    assert report["calls"] == 2 and report["unmapped_ops"] == 0
    assert abs(report["total_ms"] - report["wall_ms"]) <= 0.10 * report["wall_ms"], report
    # Every named scope of the step ran (bf16's float32 re-judging is off in float32).
    expected = {"enhance", "detect", "crop", "encode", "references", "noise_loop", "release",
                *(f"noise_loop/{stage}" for stage in ("perturb", "synthesize", "attenuate")),
                *(f"noise_loop/judge_{arch}" for arch in JUDGES)}
    assert expected <= set(report["stage_keys_seen"]), sorted(report["stage_keys_seen"])
    stages = {s["label"]: s for s in report["stages"]}
    for label in ("enhance", "detect + crop", "encode", "judges on the original faces", "synthesize", "attenuate",
                  *(f"judge {arch}" for arch in JUDGES), "release (paste-back, re-detect, judge views)"):
        assert stages[label]["ms"] > 0, label
    # The loop's trip count as the step reported it (its `iterations` output), and as the trace shows it.
    iterations = report["iterations"]
    assert 1 <= iterations <= 2 and report["traced_iterations"] == [iterations, iterations]
    assert f"noise loop ({iterations} iteration" in printed
    assert np.isclose(stages["synthesize"]["ms_per_iteration"], stages["synthesize"]["ms"] / iterations)
