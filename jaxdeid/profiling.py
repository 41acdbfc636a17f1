"""Where a jitted program's time goes, stage by stage, read from a `jax.profiler` trace.

`trace_calls` runs a compiled function under ``jax.profiler.trace(..., create_perfetto_trace=True)``
and `stage_table` turns the trace into a per-stage table (`format_table` prints it). The
stages are the ``jax.named_scope`` names the private step (`jaxdeid.deid.step`) puts around
its stages; `private_step_rows` says which scope goes to which row.

How a named scope reaches the trace. The trace's device events (XLA thunks on the CPU,
kernels on a GPU) carry only ``args.hlo_op`` (the HLO instruction, e.g. ``ynn_fusion.12``
or ``while.78``), ``hlo_module`` (``jit_private_step``) and ``run_id`` (one per call); on
the CPU with jax 0.10 there is no ``long_name`` / ``tf_op`` argument and the event name is
the instruction name. The scope lives in the compiled HLO instead: every instruction's
``metadata={op_name="jit(private_step)/noise_loop/while/body/judge_vgg16/Recognizer/..."}``
holds jax's name stack, named scopes included. So `parse_hlo` reads the executable's
optimised HLO text (``compiled.as_text()``) into instruction -> op_name, and the trace's
events are mapped through it. A fusion carries the metadata of its root instruction, so
a fusion that XLA built across a stage boundary is charged to the stage of its root.
Instructions without metadata (copies XLA inserts, e.g. of the loop state) inherit the
op_name of the instruction that calls their computation (the ``while`` for its body).

Time attribution. Per call (``run_id``) the trace covers the span from the first op's
start to the last op's end; `attribute_time` splits that span over the ops: at every
instant the ops running then (the innermost event of each thread) share it equally, and
an instant when none runs (the executor moving from one op to the next) is charged to
the op that starts next. Control-flow instructions (``while``, ``conditional``, ``call``)
are containers, not work: their events are left out (on the CPU a ``while`` event may end
long before its body's ops do), the ops of their bodies count instead. The table's
total is therefore the traced device span of a call: the wall time of a call minus the
host's dispatch before the first op and its sync after the last.
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import json
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import jax

# Named scopes of the private step (jaxdeid/deid/step.py); a judge's scope is JUDGE_PREFIX + arch.
LOOP_SCOPE = "noise_loop"
JUDGE_PREFIX = "judge_"
STAGE_SCOPES = frozenset({"enhance", "detect", "crop", "encode", "references", LOOP_SCOPE, "perturb", "synthesize",
                          "attenuate", "rejudge_float32", "release"})

CONTAINER_OPCODES = frozenset({"while", "conditional", "call"})

# HLO text: computation headers, instructions, and the parts of an instruction we read.
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%([^\s(]+)\s*\(.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([^\s=]+)\s*=\s*(.*)$")
_OP_NAME = re.compile(r'metadata=\{[^}]*?\bop_name="((?:[^"\\]|\\.)*)"')
_OPCODE = re.compile(r"\s([a-z][a-z0-9\-]*)\(")
_CALLEES = re.compile(r"\b(?:body|condition|calls|to_apply|true_computation|false_computation)=%([^\s,})]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_MODULE = re.compile(r"^HloModule\s+([^\s,]+)", re.M)
_WRAPPER = re.compile(r"^(?:[\w.\-]+\()+(.*?)\)+$")   # "vmap(jit(release))" -> "release"


@dataclasses.dataclass(frozen=True)
class HloOps:
    """What the trace needs of a compiled HLO module, keyed by instruction name."""

    module: str                     # the module name, = the trace events' args.hlo_module
    op_names: dict[str, str]        # instruction -> op_name (its own, or its caller's when it has none)
    opcodes: dict[str, str]         # instruction -> opcode ("fusion", "while", "copy", ...)
    computation: dict[str, str]     # instruction -> the computation it belongs to
    callees: dict[str, tuple[str, ...]]   # instruction -> computations it calls (body, condition, calls, ...)

    @property
    def containers(self) -> frozenset[str]:
        return frozenset(name for name, op in self.opcodes.items() if op in CONTAINER_OPCODES)


def parse_hlo(text: str) -> HloOps:
    """Parses an optimised HLO module's text (``compiled.as_text()``) into `HloOps`."""
    match = _MODULE.search(text)
    module = match.group(1) if match else ""
    own: dict[str, str] = {}
    opcodes: dict[str, str] = {}
    computation: dict[str, str] = {}
    callees: dict[str, tuple[str, ...]] = {}
    current = ""
    for line in text.splitlines():
        header = _COMPUTATION.match(line)
        if header:
            current = header.group(1)
            continue
        instruction = _INSTRUCTION.match(line)
        if not instruction or not current:
            continue
        name, rest = instruction.groups()
        computation[name] = current
        opcode = _OPCODE.search(rest)
        opcodes[name] = opcode.group(1) if opcode else ""
        op_name = _OP_NAME.search(rest)
        if op_name:
            own[name] = op_name.group(1)
        called = _CALLEES.findall(rest)
        for branches in _BRANCHES.findall(rest):
            called += [b.strip().lstrip("%") for b in branches.split(",") if b.strip()]
        if called:
            callees[name] = tuple(called)
    # An instruction without metadata takes the op_name of the instruction calling its
    # computation; nested computations resolve from the outside in.
    caller_of: dict[str, str] = {}
    for name, called in callees.items():
        for callee in called:
            caller_of.setdefault(callee, name)

    def resolve(name: str, seen: frozenset = frozenset()) -> str:
        if name in own:
            return own[name]
        caller = caller_of.get(computation.get(name, ""))
        if caller is None or caller in seen:
            return ""
        return resolve(caller, seen | {name})

    op_names = {name: resolve(name) for name in computation}
    return HloOps(module=module, op_names=op_names, opcodes=opcodes, computation=computation, callees=callees)


def scope_path(op_name: str) -> tuple[str, ...]:
    """The stage scopes on an op_name's name stack, outermost first (transform wrappers removed)."""
    path = []
    for component in op_name.split("/"):
        wrapped = _WRAPPER.match(component)
        component = wrapped.group(1) if wrapped else component
        if component in STAGE_SCOPES or component.startswith(JUDGE_PREFIX):
            path.append(component)
    return tuple(path)


def stage_key(op_name: str) -> tuple[str, ...]:
    """The stage an op belongs to: its outermost scope, and inside the noise loop the loop stage too.

    ``release`` holds its own detection and judges, so everything inside it is ``("release",)``;
    ``("noise_loop",)`` alone is the loop's bookkeeping (condition, similarities, masks).
    """
    path = scope_path(op_name)
    if not path:
        return ()
    return path[:2] if path[0] == LOOP_SCOPE else path[:1]


# --------------------------------------------------------------------------- trace files


def find_trace_file(directory: str | Path, exclude: Iterable[Path] = ()) -> Path:
    """The newest Chrome-format trace (``perfetto_trace.json.gz``, else ``*.trace.json.gz``) under `directory`.

    `exclude`: trace files that existed before the capture (a reused --out folder).
    """
    excluded = {Path(p) for p in exclude}
    for pattern in ("perfetto_trace.json.gz", "*.trace.json.gz"):
        found = [p for p in Path(directory).glob(f"plugins/profile/*/{pattern}") if p not in excluded]
        if found:
            return max(found, key=lambda p: p.stat().st_mtime)
    raise FileNotFoundError(f"no profiler trace (plugins/profile/*/perfetto_trace.json.gz) under {directory}")


def load_trace_events(path: str | Path) -> list[dict[str, Any]]:
    """The ``traceEvents`` of a (gzipped) Chrome/Perfetto JSON trace."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        data = json.load(f)
    return data["traceEvents"] if isinstance(data, dict) else data


def op_events(events: Sequence[dict[str, Any]], module: str) -> list[dict[str, Any]]:
    """The complete ("X") events of `module`'s HLO ops, on the device's lanes where the trace has them.

    A GPU trace also has host-side events of the same ops (thunk launches); only the
    device's (processes named "/device:...") are its execution then. On the CPU the ops
    run on the host's threads ("/host:CPU").
    """
    process = {e.get("pid"): e.get("args", {}).get("name", "") for e in events
               if e.get("ph") == "M" and e.get("name") == "process_name"}
    ops = [e for e in events if e.get("ph") == "X" and e.get("args", {}).get("hlo_module") == module
           and "hlo_op" in e["args"]]
    on_device = [e for e in ops if str(process.get(e.get("pid"), "")).startswith("/device:")]
    return on_device or ops


def attribute_time(ops: Sequence[dict[str, Any]], containers: frozenset[str] = frozenset()
                   ) -> dict[str, dict[str, tuple[float, float]]]:
    """Per call (run_id), per instruction: (elapsed µs charged to it, µs it was busy).

    Elapsed time splits each call's traced span as the module docstring says (shared
    equally between ops running at once; idle time charged to the next op to start), so
    a call's elapsed times add up to its span. Busy time is each event's own duration
    minus its nested children's on the same thread. Events of `containers` are left out.
    """
    runs: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for e in ops:
        if e["args"]["hlo_op"] not in containers:
            runs[str(e["args"].get("run_id", ""))].append(e)
    result = {}
    for run, events in runs.items():
        points = []
        for index, e in enumerate(events):
            start = float(e["ts"])
            points.append((start, 1, index))
            points.append((start + float(e.get("dur", 0.0)), 0, index))
        points.sort()   # at equal times ends (0) come before starts (1)
        stacks: dict[tuple, list[int]] = collections.defaultdict(list)
        elapsed = collections.defaultdict(float)
        busy = collections.defaultdict(float)
        idle, previous = 0.0, None
        for t, kind, index in points:
            if previous is not None and t > previous:
                running = [stack[-1] for stack in stacks.values() if stack]
                for i in running:
                    elapsed[i] += (t - previous) / len(running)
                    busy[i] += t - previous
                if not running:
                    idle += t - previous
            previous = t
            lane = (events[index].get("pid"), events[index].get("tid"))
            if kind == 1:
                stacks[lane].append(index)
                elapsed[index] += idle   # the executor's time getting to this op
                idle = 0.0
            else:
                stacks[lane].remove(index)
        per_op: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
        for index, e in enumerate(events):
            totals = per_op[e["args"]["hlo_op"]]
            totals[0] += elapsed[index]
            totals[1] += busy[index]
        result[run] = {op: (v[0], v[1]) for op, v in per_op.items()}
    return result


def loop_body_ops(hlo: HloOps, scope: str = LOOP_SCOPE) -> frozenset[str]:
    """Instructions directly in the body of the ``lax.while_loop`` staged inside named scope `scope`.

    Each of them runs once per loop iteration (ops of loops nested in the body run more often).
    """
    bodies = set()
    for name, op_name in hlo.op_names.items():
        components = op_name.split("/")
        if hlo.opcodes.get(name) == "while" and scope in components and \
                components[components.index(scope) + 1:] == ["while"]:
            bodies.update(hlo.callees.get(name, ()))
    return frozenset(name for name, comp in hlo.computation.items() if comp in bodies
                     and hlo.opcodes.get(name) not in ("parameter", "tuple", "get-tuple-element", "constant"))


def traced_iterations(ops: Sequence[dict[str, Any]], body: frozenset[str]) -> list[int]:
    """Per call (in run_id order), how often the loop body ran: the most common event count of its ops."""
    runs = sorted({str(e["args"].get("run_id", "")) for e in ops})
    counts: dict[str, collections.Counter] = {run: collections.Counter() for run in runs}
    for e in ops:
        if e["args"]["hlo_op"] in body:
            counts[str(e["args"].get("run_id", ""))][e["args"]["hlo_op"]] += 1
    return [collections.Counter(counts[run].values()).most_common(1)[0][0] if counts[run] else 0 for run in runs]


# --------------------------------------------------------------------------- the table


@dataclasses.dataclass(frozen=True)
class StageRow:
    """One row of the table: the stage keys (`stage_key`) it sums, and whether it runs once per loop iteration."""

    label: str
    keys: tuple[tuple[str, ...], ...]
    per_iteration: bool = False


def private_step_rows(judges: Sequence[str], rejudge_float32: bool = False) -> list[StageRow]:
    """The rows of the private step's table, in pipeline order; the last one takes unscoped ops."""
    loop = [StageRow("perturb (latent noise)", ((LOOP_SCOPE, "perturb"),), True),
            StageRow("synthesize", ((LOOP_SCOPE, "synthesize"),), True),
            StageRow("attenuate", ((LOOP_SCOPE, "attenuate"),), True),
            *[StageRow(f"judge {arch}", ((LOOP_SCOPE, JUDGE_PREFIX + arch),), True) for arch in judges],
            StageRow("loop bookkeeping", ((LOOP_SCOPE,),), True)]
    rows = [StageRow("enhance", (("enhance",),)),
            StageRow("detect + crop", (("detect",), ("crop",))),
            StageRow("encode", (("encode",),)),
            StageRow("judges on the original faces", (("references",),)),
            *loop]
    if rejudge_float32:
        rows.append(StageRow("float32 re-judging (bf16 mode)", (("rejudge_float32",),)))
    rows += [StageRow("release (paste-back, re-detect, judge views)", (("release",),)),
             StageRow("other (between stages)", ((),))]
    return rows


@dataclasses.dataclass(frozen=True)
class StageTable:
    """Per-stage milliseconds per call of a traced program (see `stage_table`)."""

    rows: list[tuple[StageRow, float, float]]   # (row, elapsed ms per call, busy ms per call)
    calls: int                                 # traced calls (run_ids)
    iterations: int | None                     # loop iterations per call (the step's own count)
    traced_iterations: list[int]               # per call, how often the loop body ran in the trace
    wall_ms: float | None                      # measured wall time per call, when given
    unmapped_ops: int                          # events whose instruction the HLO text did not name

    @property
    def total_ms(self) -> float:
        return sum(ms for _, ms, _ in self.rows)

    @property
    def busy_ms(self) -> float:
        return sum(busy for _, _, busy in self.rows)

    def ms(self, label: str) -> float:
        return next(ms for row, ms, _ in self.rows if row.label == label)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: what the command writes beside the trace (stages.json)."""
        iters = self.iterations
        return {"calls": self.calls, "iterations": iters, "traced_iterations": self.traced_iterations,
                "wall_ms": self.wall_ms, "total_ms": self.total_ms, "busy_ms": self.busy_ms,
                "unmapped_ops": self.unmapped_ops,
                "stages": [{"label": row.label, "keys": ["/".join(k) for k in row.keys], "ms": ms, "busy_ms": busy,
                            "ms_per_iteration": ms / iters if row.per_iteration and iters else None,
                            "share": ms / self.total_ms if self.total_ms else 0.0}
                           for row, ms, busy in self.rows]}


def stage_table(events: Sequence[dict[str, Any]], hlo: HloOps, rows: Sequence[StageRow], *,
                iterations: int | None = None, wall_s: float | None = None) -> StageTable:
    """Sums `attribute_time` of `hlo`'s ops in the trace `events` into `rows`, per call.

    An op whose stage key no row lists goes to the last row (the catch-all).
    `iterations`: the loop's iteration count as the program itself reported it;
    `wall_s`: the measured wall time per call.
    """
    ops = op_events(events, hlo.module)
    if not ops:
        raise ValueError(f"the trace has no events of HLO module {hlo.module!r}: was it run inside the trace?")
    row_of = {key: index for index, row in enumerate(rows) for key in row.keys}
    per_run = attribute_time(ops, hlo.containers)
    totals = [[0.0, 0.0] for _ in rows]
    unmapped = 0
    for run in per_run.values():
        for op, (elapsed, busy) in run.items():
            if op not in hlo.op_names:
                unmapped += 1
            index = row_of.get(stage_key(hlo.op_names.get(op, "")), len(rows) - 1)
            totals[index][0] += elapsed
            totals[index][1] += busy
    calls = len(per_run)
    # µs summed over calls -> ms per call
    table_rows = [(row, t[0] / calls / 1e3, t[1] / calls / 1e3) for row, t in zip(rows, totals)]
    return StageTable(rows=table_rows, calls=calls, iterations=iterations,
                      traced_iterations=traced_iterations(ops, loop_body_ops(hlo)),
                      wall_ms=None if wall_s is None else wall_s * 1e3, unmapped_ops=unmapped)


def format_table(table: StageTable) -> str:
    """The table as text: ms per call, ms per loop iteration, share of the traced time."""
    iters = table.iterations
    lines = [f"{'stage':<46} {'ms/call':>9} {'ms/iter':>9} {'share':>7}"]
    in_loop = False
    for row, ms, _ in table.rows:
        if row.per_iteration and not in_loop:
            lines.append(f"noise loop ({iters} iteration{'s' if iters != 1 else ''} per call):")
        in_loop = row.per_iteration
        per_iter = f"{ms / iters:9.2f}" if row.per_iteration and iters else f"{'-':>9}"
        share = ms / table.total_ms if table.total_ms else 0.0
        label = ("  " if row.per_iteration else "") + row.label
        lines.append(f"{label:<46} {ms:9.2f} {per_iter} {share:7.1%}")
    lines.append(f"{'total (traced span of a call)':<46} {table.total_ms:9.2f} {'':>9} {1:7.1%}")
    if table.wall_ms is not None:
        lines.append(f"{'wall time per call (measured)':<46} {table.wall_ms:9.2f}   "
                     f"(host dispatch + sync: {table.wall_ms - table.total_ms:.2f} ms)")
    lines.append(f"ops busy {table.busy_ms:.2f} ms of the {table.total_ms:.2f} ms per call; the rest is the "
                 f"executor between ops, charged to the op after each gap")
    lines.append(f"calls traced: {table.calls}; loop body ran {table.traced_iterations} time(s) per call in the trace")
    if table.unmapped_ops:
        lines.append(f"warning: {table.unmapped_ops} traced instruction(s) not found in the HLO text "
                     f"(counted as 'other')")
    return "\n".join(lines)


# --------------------------------------------------------------------------- capturing


@dataclasses.dataclass(frozen=True)
class TracedCalls:
    """What `trace_calls` captured."""

    trace_file: Path          # the Perfetto / Chrome JSON trace of the calls
    wall_s: list[float]       # wall time of each call (dispatch to ready)
    outputs: Any              # the last call's outputs


def trace_calls(fn: Callable, args: Sequence[Any], out_dir: str | Path, calls: int, name: str = "call"
                ) -> TracedCalls:
    """Runs ``fn(*args)`` `calls` times inside ``jax.profiler.trace(out_dir, create_perfetto_trace=True)``.

    Each call is timed from dispatch to ``block_until_ready``, one at a time, so the
    trace's calls do not overlap, and marked as a step named `name` (TensorBoard's
    profile plugin groups by steps). Compile and warm up `fn` before: a first call's
    compilation and allocations would land in the trace.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    before = set(out_dir.glob("plugins/profile/*/*.json.gz"))
    wall, outputs = [], None
    with jax.profiler.trace(str(out_dir), create_perfetto_trace=True):
        for step in range(calls):
            with jax.profiler.StepTraceAnnotation(name, step_num=step):
                start = time.perf_counter()
                outputs = jax.block_until_ready(fn(*args))
                wall.append(time.perf_counter() - start)
    return TracedCalls(trace_file=find_trace_file(out_dir, exclude=before), wall_s=wall, outputs=outputs)
