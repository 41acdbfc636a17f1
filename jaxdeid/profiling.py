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
long before its body's ops do), the ops of their bodies count instead. The stage rows
therefore add up to the device span of a call. `trace_calls` marks each call with a step
annotation; the rest of that annotation (the host's dispatch before the first op, e.g.
the arguments' handling, and its sync after the last) is the table's host row, so the
table's total is a call's wall time as the trace saw it.
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
STAGE_SCOPES = frozenset({"cast_params", "enhance", "detect", "crop", "encode", "references", LOOP_SCOPE, "perturb",
                          "synthesize", "attenuate", "rejudge_float32", "release"})

CONTAINER_OPCODES = frozenset({"while", "conditional", "call"})

# HLO text: computation headers, instructions, and the parts of an instruction we read.
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%([^\s(]+)\s*\(.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([^\s=]+)\s*=\s*(.*)$")
_OP_NAME = re.compile(r'metadata=\{[^}]*?\bop_name="((?:[^"\\]|\\.)*)"')
_OPCODE = re.compile(r"\s([a-z][a-z0-9\-]*)\(")
_CALLEES = re.compile(r"\b(body|condition|calls|to_apply|true_computation|false_computation)=%([^\s,})]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_MODULE = re.compile(r"^HloModule\s+([^\s,]+)", re.M)
_TRANSFORM = re.compile(r"^(\w+)\((.*)\)$")   # a name under a transform: "vmap(release)", "jvp(judge_vgg16)"


@dataclasses.dataclass(frozen=True)
class HloOps:
    """What the trace needs of a compiled HLO module, keyed by instruction name."""

    module: str                     # the module name, = the trace events' args.hlo_module
    op_names: dict[str, str]        # instruction -> op_name (its own, or its caller's when it has none)
    opcodes: dict[str, str]         # instruction -> opcode ("fusion", "while", "copy", ...)
    computation: dict[str, str]     # instruction -> the computation it belongs to
    callees: dict[str, tuple[str, ...]]   # instruction -> computations it calls (body, condition, calls, ...)
    bodies: dict[str, str]                # while instruction -> its body computation

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
    bodies: dict[str, str] = {}
    users: dict[str, list[str]] = collections.defaultdict(list)
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
        if opcode:
            operands = rest[opcode.end():rest.find(")", opcode.end())]
            for operand in re.findall(r"%([^\s,]+)", operands):
                users[operand].append(name)
        op_name = _OP_NAME.search(rest)
        if op_name:
            own[name] = op_name.group(1)
        called = []
        for attribute, callee in _CALLEES.findall(rest):
            called.append(callee)
            if attribute == "body":
                bodies[name] = callee
        for branches in _BRANCHES.findall(rest):
            called += [b.strip().lstrip("%") for b in branches.split(",") if b.strip()]
        if called:
            callees[name] = tuple(called)
    # An instruction without metadata (XLA made it: a copy, a bf16 <-> f32 conversion on the
    # CPU) takes the op_name of the first instruction using its result that has one, else of
    # the instruction calling its computation (a while's, for a copy of the loop state).
    caller_of: dict[str, str] = {}
    for name, called in callees.items():
        for callee in called:
            caller_of.setdefault(callee, name)
    resolved: dict[str, str] = {}

    def resolve(name: str, seen: frozenset = frozenset()) -> str:
        if name in own:
            return own[name]
        if name not in resolved:
            found = ""
            for user in users.get(name, ()):
                if user not in seen:
                    found = resolve(user, seen | {name})
                    if found:
                        break
            caller = caller_of.get(computation.get(name, ""))
            if not found and caller is not None and caller not in seen:
                found = resolve(caller, seen | {name})
            resolved[name] = found
        return resolved[name]

    op_names = {name: resolve(name) for name in computation}
    return HloOps(module=module, op_names=op_names, opcodes=opcodes, computation=computation, callees=callees,
                  bodies=bodies)


def _scope_name(component: str) -> str:
    """A name-stack entry without its transform wrappers; "" for a jitted function's entry ("jit(crop)")."""
    while True:
        match = _TRANSFORM.match(component)
        if not match:
            return component
        if match.group(1) in ("jit", "pjit"):   # a function's name, not a named scope
            return ""
        component = match.group(2)


def scope_path(op_name: str) -> tuple[str, ...]:
    """The stage scopes on an op_name's name stack, outermost first ("vmap(release)" counts as "release")."""
    names = (_scope_name(component) for component in op_name.split("/"))
    return tuple(name for name in names if name in STAGE_SCOPES or name.startswith(JUDGE_PREFIX))


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
        if e["args"]["hlo_op"] not in containers and float(e.get("dur", 0.0)) > 0:
            runs[str(e["args"].get("run_id", ""))].append(e)
    result = {}
    for run, events in runs.items():
        points = []
        for index, e in enumerate(events):
            start, duration = float(e["ts"]), float(e["dur"])
            points.append((start, 1, -duration, index))
            points.append((start + duration, 0, 0.0, index))
        # At equal times ends (0) come before starts (1), and a longer event starts before a
        # shorter one: a parent is on its thread's stack before the child it begins with.
        points.sort()
        stacks: dict[tuple, list[int]] = collections.defaultdict(list)
        elapsed = collections.defaultdict(float)
        busy = collections.defaultdict(float)
        idle, previous = 0.0, None
        for t, kind, _, index in points:
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
            bodies.add(hlo.bodies.get(name))
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


def private_step_rows(judges: Sequence[str], *, light: bool = True, bf16: bool = False) -> list[StageRow]:
    """The rows of the private step's table, in pipeline order; the last one takes unscoped ops.

    `light`: the method runs the light networks (enhance, attenuate: ours only);
    `bf16`: ``deid.compute_dtype="bfloat16"`` (weights cast per call, float32 re-judging).
    """
    rows = [StageRow("cast weights to bf16", (("cast_params",),))] if bf16 else []
    rows += [StageRow("enhance", (("enhance",),))] if light else []
    rows += [StageRow("detect + crop", (("detect",), ("crop",))),
             StageRow("encode", (("encode",),)),
             StageRow("judges on the original faces", (("references",),)),
             StageRow("perturb (latent noise)", ((LOOP_SCOPE, "perturb"),), True),
             StageRow("synthesize", ((LOOP_SCOPE, "synthesize"),), True)]
    rows += [StageRow("attenuate", ((LOOP_SCOPE, "attenuate"),), True)] if light else []
    rows += [*[StageRow(f"judge {arch}", ((LOOP_SCOPE, JUDGE_PREFIX + arch),), True) for arch in judges],
             StageRow("loop bookkeeping", ((LOOP_SCOPE,),), True)]
    if bf16:
        rows.append(StageRow("float32 re-judging", (("rejudge_float32",),)))
    rows += [StageRow("release (paste-back, re-detect, judge views)", (("release",),)),
             StageRow("other (between stages)", ((),))]
    return rows


@dataclasses.dataclass(frozen=True)
class StageTable:
    """Per-stage milliseconds per call of a traced program (see `stage_table`)."""

    rows: list[tuple[StageRow, float, float]]   # (row, elapsed ms per call, busy ms per call): the device span
    host_ms: float | None                      # per call: the host's dispatch before the first op and sync after
    calls: int                                 # traced calls (run_ids)
    iterations: int | None                     # loop iterations per call (the program's own count)
    traced_iterations: list[int]               # per call, how often the loop body ran in the trace
    wall_ms: float | None                      # measured wall time per call, when given
    unmapped_ops: int                          # traced instructions the HLO text does not name
    keys_seen: frozenset[tuple[str, ...]] = frozenset()   # the stage keys (`stage_key`) of the traced ops

    @property
    def device_ms(self) -> float:
        """From a call's first op's start to its last op's end (the rows add up to it)."""
        return sum(ms for _, ms, _ in self.rows)

    @property
    def total_ms(self) -> float:
        return self.device_ms + (self.host_ms or 0.0)

    @property
    def busy_ms(self) -> float:
        return sum(busy for _, _, busy in self.rows)

    def ms(self, label: str) -> float:
        return next(ms for row, ms, _ in self.rows if row.label == label)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: what the command writes beside the trace (stages.json)."""
        iters, total = self.iterations, self.total_ms
        return {"calls": self.calls, "iterations": iters, "traced_iterations": self.traced_iterations,
                "wall_ms": self.wall_ms, "total_ms": total, "device_ms": self.device_ms, "host_ms": self.host_ms,
                "busy_ms": self.busy_ms, "unmapped_ops": self.unmapped_ops,
                "stage_keys_seen": sorted("/".join(k) for k in self.keys_seen),
                "stages": [{"label": row.label, "keys": ["/".join(k) for k in row.keys], "ms": ms, "busy_ms": busy,
                            "ms_per_iteration": ms / iters if row.per_iteration and iters else None,
                            "share": ms / total if total else 0.0}
                           for row, ms, busy in self.rows]}


def host_time(events: Sequence[dict[str, Any]], ops: Sequence[dict[str, Any]], step_name: str) -> float | None:
    """Mean µs per step annotation `step_name` outside its calls' op spans (dispatch before, sync after).

    None when the trace has no such annotation (`trace_calls` marks every call as one).
    """
    steps = [e for e in events if e.get("ph") == "X" and e.get("name") == step_name
             and "step_num" in e.get("args", {})]
    if not steps:
        return None
    spans: dict[str, list[float]] = {}
    for e in ops:
        span = spans.setdefault(str(e["args"].get("run_id", "")), [float("inf"), float("-inf")])
        span[0], span[1] = min(span[0], float(e["ts"])), max(span[1], float(e["ts"]) + float(e.get("dur", 0.0)))
    outside = []
    for step in steps:
        start, end = float(step["ts"]), float(step["ts"]) + float(step.get("dur", 0.0))
        inside = sum(hi - lo for lo, hi in spans.values() if lo >= start and hi <= end)
        outside.append(end - start - inside)
    return sum(outside) / len(outside)


def stage_table(events: Sequence[dict[str, Any]], hlo: HloOps, rows: Sequence[StageRow], *,
                iterations: int | None = None, wall_s: float | None = None,
                step_name: str | None = None) -> StageTable:
    """Sums `attribute_time` of `hlo`'s ops in the trace `events` into `rows`, per call.

    An op whose stage key no row lists goes to the last row (the catch-all).
    `iterations`: the loop's iteration count as the program itself reported it;
    `wall_s`: the measured wall time per call; `step_name`: the step annotation of each
    call (`trace_calls`' `name`), for the host's share of a call (`host_time`).
    """
    ops = op_events(events, hlo.module)
    if not ops:
        raise ValueError(f"the trace has no events of HLO module {hlo.module!r}: was it run inside the trace?")
    row_of = {key: index for index, row in enumerate(rows) for key in row.keys}
    per_run = attribute_time(ops, hlo.containers)
    totals = [[0.0, 0.0] for _ in rows]
    unmapped, seen = set(), set()
    for run in per_run.values():
        for op, (elapsed, busy) in run.items():
            if op not in hlo.op_names:
                unmapped.add(op)
            key = stage_key(hlo.op_names.get(op, ""))
            seen.add(key)
            index = row_of.get(key, len(rows) - 1)
            totals[index][0] += elapsed
            totals[index][1] += busy
    calls = len(per_run)
    host = host_time(events, ops, step_name) if step_name else None
    # µs summed over calls -> ms per call
    table_rows = [(row, t[0] / calls / 1e3, t[1] / calls / 1e3) for row, t in zip(rows, totals)]
    return StageTable(rows=table_rows, host_ms=None if host is None else host / 1e3, calls=calls,
                      iterations=iterations, traced_iterations=traced_iterations(ops, loop_body_ops(hlo)),
                      wall_ms=None if wall_s is None else wall_s * 1e3, unmapped_ops=len(unmapped),
                      keys_seen=frozenset(seen))


def format_table(table: StageTable) -> str:
    """The table as text: ms per call, ms per loop iteration, share of a call."""
    iters, total = table.iterations, table.total_ms
    lines = [f"{'stage':<50} {'ms/call':>9} {'ms/iter':>9} {'share':>7}"]

    def line(label: str, ms: float, per_iter: str = "-") -> None:
        lines.append(f"{label:<50} {ms:9.2f} {per_iter:>9} {ms / total if total else 0.0:7.1%}")

    in_loop = False
    for row, ms, _ in table.rows:
        if row.per_iteration and not in_loop:
            lines.append(f"noise loop ({iters} iteration{'s' if iters != 1 else ''} per call):")
        in_loop = row.per_iteration
        line(("  " if row.per_iteration else "") + row.label, ms,
             f"{ms / iters:.2f}" if row.per_iteration and iters else "-")
    if table.host_ms is not None:
        line("host: dispatch before the first op, sync after", table.host_ms)
    line("total per call (from the trace)", total)
    if table.wall_ms is not None:
        lines.append(f"{'wall time per call (measured)':<50} {table.wall_ms:9.2f}")
    lines.append(f"loop iterations per call: {iters} (the step's `iterations` output, max over the batch); "
                 f"the trace's loop body ran {table.traced_iterations} times in its {table.calls} call(s)")
    lines.append(f"device ops busy {table.busy_ms:.2f} of the {table.device_ms:.2f} ms from a call's first op to its "
                 f"last; the rest is the executor between ops, charged to the op after each gap")
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
