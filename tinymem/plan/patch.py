"""Patch-based inference (MCUNetV2): run the first ops of a CNN one spatial patch at a time.

A schedule is a split op K and an R x C grid. The *patch stage* is ops 0..K (a prefix of the graph
whose only tensor crossing into the rest is op K's 4-D output, the *split tensor*). The split
tensor's H x W is cut into R x C patches (balanced: boundaries i * H // R); for each patch the stage
runs every op on a window of its tensors: backwards from the patch, each op's `input_window`
gives the window of each input it reads (the receptive field, halo included, clipped to the
tensor); forwards, each op computes `output_window` (the window needed, except for kernels that
walk whole buffers) from its inputs' stored windows. Stage tensors live in small per-patch
buffers sized for the largest patch and reused by every patch; graph inputs stay whole; op K's
patch lands in the whole split tensor. Then the rest of the graph runs layer by layer.

Input streaming (Schedule.stream, MCUNetV2's setting): the graph inputs the stage reads are never
held whole. Each patch fetches just the window of each input it reads (halo included) into a
per-patch buffer, through the application's tinymem_read_input() (a camera driver, a flash image,
the host over a serial link); the window then is the input's stored window, so it is propagated
like any other stage tensor's. Only possible when nothing after the stage reads those inputs.

Windows are separable: rows of an input window depend only on rows of the output window, and
likewise columns, so a schedule's windows come from R row propagations and C column ones, cached
per (split, axis, parts, streamed). MACs and per-patch buffer sizes follow in closed form.

Memory: one arena for both phases. Steps are op indices: stage buffers live over the steps of
their op (every patch reuses them), graph inputs read by the stage live through step K (later
patches read them again; a streamed input's window buffer lives from its first reader, which
fetches it, to its last), the split tensor lives from step 0 (earlier patches' results must
survive later ones). Each op's per-patch overlap rule (max over the distinct patch geometries)
becomes a permit, so depthwise convs still run in place on patches.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import TinymemError
from ..model.graph import Graph, Op
from ..ops import opdef, validate_graph
from ..ops.base import OpDef, PatchCall, Window, full_window
from .arena import PLANNERS, Placement, align_up, check_placement, max_overlap
from .lifetimes import Buffer, Lifetimes, Permit, compute_lifetimes
from .memory import MemoryPlan, assemble_plan
from .patch_tables import StageCode, stage_code

MAX_GRID = 8  # patches per axis the search tries


@dataclass(frozen=True)
class Schedule:
    split_op: int  # K: the last op of the patch stage
    rows: int  # R: patches along the split tensor's height
    cols: int  # C: along its width
    stream: bool = False  # the stage's graph inputs are fetched window by window, never held whole

    @property
    def label(self) -> str:
        return f"{self.rows}x{self.cols}@{self.split_op}"

    @property
    def patches(self) -> int:
        return self.rows * self.cols

    @property
    def input_mode(self) -> str:
        return "streamed" if self.stream else "arena"


def bounds(n: int, parts: int) -> list[int]:
    """Balanced cut of [0, n) into `parts` intervals: boundaries i * n // parts."""
    return [i * n // parts for i in range(parts + 1)]


# ---------------------------------------------------------------------------------------------
# Stage analysis: where a patch stage may end


@dataclass
class Stage:
    """The ops 0..K of a valid split point and what the window analysis needs about them."""

    split_op: int
    split: int  # tensor index of the split tensor (op K's output)
    produced: list[int]  # stage tensors in op order (op s produces produced[s])
    inputs: list[int]  # graph inputs the stage reads (stored whole, unless streamed)
    last_use: dict[int, int]  # stage tensor or input -> last stage op reading it (split: K)
    first_use: dict[int, int]  # graph input -> first stage op reading it (where a stream fetches it)
    stream_blocker: str | None = None  # why the inputs cannot be streamed (None: they can)

    @property
    def ops(self) -> range:
        return range(self.split_op + 1)


def _is_patchable(op: Op, g: Graph) -> bool:
    d = opdef(op)
    if len(op.outputs) != 1 or d.is_alias(op, g):
        return False
    y = g.t(op.outputs[0])
    if len(y.shape) != 4 or y.shape[0] != 1:
        return False
    for i in op.inputs:
        if i >= 0 and not g.t(i).is_const and (len(g.t(i).shape) != 4 or g.t(i).shape[0] != 1):
            return False
    return d.input_window(op, g, full_window(y)) is not None


def stage_points(g: Graph) -> dict[int, Stage]:
    """Every op K that can end a patch stage, with its Stage."""
    out: dict[int, Stage] = {}
    n = len(g.ops)
    consumers: dict[int, list[int]] = {}
    for op in g.ops:
        for i in op.inputs:
            if i >= 0:
                consumers.setdefault(i, []).append(op.index)
    graph_outputs = set(g.outputs)
    produced: list[int] = []
    for k, op in enumerate(g.ops):
        if not _is_patchable(op, g):
            break  # every later prefix contains this op too
        produced.append(op.outputs[0])
        split = op.outputs[0]
        ok = True
        for t in produced[:-1]:
            uses = consumers.get(t, [])
            # Crossing tensors other than the split, or stage tensors nobody reads, are not allowed.
            if t in graph_outputs or not uses or max(uses) > k:
                ok = False
                break
        if not ok:
            continue
        inputs = sorted({i for s in range(k + 1) for i in g.ops[s].inputs
                         if i >= 0 and not g.t(i).is_const and i not in produced})
        if any(i not in g.inputs for i in inputs):
            continue
        last_use = {t: max(u for u in consumers[t] if u <= k) for t in produced[:-1] + inputs}
        last_use[split] = k
        if k == n - 1 and split not in graph_outputs:
            continue
        first_use = {i: min(consumers[i]) for i in inputs}
        out[k] = Stage(k, split, list(produced), inputs, last_use, first_use, _stream_blocker(g, inputs, consumers, k))
    return out


def _stream_blocker(g: Graph, inputs: list[int], consumers: dict[int, list[int]], k: int) -> str | None:
    """Why the stage's inputs cannot be streamed: a window is all a patch ever holds of them."""
    for i in inputs:
        if i in g.outputs:
            return f"input {g.t(i).describe()} is also a model output"
        later = [u for u in consumers[i] if u > k]
        if later:
            return f"input {g.t(i).describe()} is read again after the patch stage by {g.ops[later[0]].describe()}"
    return None


# ---------------------------------------------------------------------------------------------
# Windows of one patch


@dataclass
class PatchWindows:
    """For one patch: per stage tensor the window needed and the window stored (computed)."""

    need: dict[int, Window]
    stored: dict[int, Window]


def propagate(g: Graph, stage: Stage, patch: Window, stream: bool = False) -> PatchWindows | None:
    """Windows of every stage tensor for one patch of the split tensor; None if some op would get
    an empty window (pathological dilations) or its inputs could not cover what it reads. With
    `stream` the graph inputs hold just the window the patch reads, else they are whole."""
    need: dict[int, Window] = {stage.split: patch}
    reads: dict[int, list] = {}
    for s in reversed(stage.ops):
        op = g.ops[s]
        out = need.get(op.outputs[0])
        if out is None or out.h <= 0 or out.w <= 0:
            return None
        wins = reads[s] = opdef(op).input_window(op, g, out)
        for i, w in zip(op.inputs, wins):
            if w is None or i < 0 or g.t(i).is_const:
                continue
            need[i] = w if i not in need else need[i].union(w)
    stored: dict[int, Window] = {i: need[i] if stream else full_window(g.t(i)) for i in stage.inputs}
    if any(w.h <= 0 or w.w <= 0 for w in stored.values()):
        return None
    for s in stage.ops:
        op = g.ops[s]
        d = opdef(op)
        ins = [stored.get(i) if i >= 0 and not g.t(i).is_const else None for i in op.inputs]
        comp = d.output_window(op, g, need[op.outputs[0]], ins)
        if comp.h <= 0 or comp.w <= 0 or not comp.contains(need[op.outputs[0]]):
            return None
        got = reads[s] if comp == need[op.outputs[0]] else d.input_window(op, g, comp)
        for i, w, st in zip(op.inputs, got, ins):
            if w is not None and st is not None and (w.h <= 0 or w.w <= 0 or not st.contains(w)):
                return None
        stored[op.outputs[0]] = comp
    return PatchWindows(need, stored)


class Analysis:
    """Window analysis of one graph, cached per (split, axis, parts): the search evaluates
    thousands of schedules from a few hundred one-axis propagations."""

    def __init__(self, g: Graph):
        self.g = g
        self.stages = stage_points(g)
        self._axis: dict[tuple[int, str, int, bool], list[PatchWindows] | None] = {}
        self._calls: dict = {}
        self._overlap_cache: dict = {}
        self._macs: dict[int, int] = {}
        self._scratch: dict[int, int] = {}
        self._base: Lifetimes | None = None

    def base_lifetimes(self) -> Lifetimes:
        """The layer-wise buffers and permits (the rest of the graph reuses them as they are)."""
        if self._base is None:
            self._base = compute_lifetimes(self.g, use_overlaps=True)
        return self._base

    def op_scratch(self, s: int) -> int:
        if s not in self._scratch:
            self._scratch[s] = opdef(self.g.ops[s]).scratch_bytes(self.g.ops[s], self.g)
        return self._scratch[s]

    def axis(self, k: int, axis: str, parts: int, stream: bool = False) -> list[PatchWindows] | None:
        """Per patch row (axis 'y') or column ('x'): windows with the other axis whole."""
        key = (k, axis, parts, stream)
        if key not in self._axis:
            stage = self.stages[k]
            t = self.g.t(stage.split)
            h, w = int(t.shape[1]), int(t.shape[2])
            cuts = bounds(h if axis == "y" else w, parts)
            res = []
            for a, b in zip(cuts, cuts[1:]):
                pw = propagate(self.g, stage, Window(a, b, 0, w) if axis == "y" else Window(0, h, a, b), stream)
                if pw is None:
                    res = None
                    break
                res.append(pw)
            self._axis[key] = res
        return self._axis[key]

    def op_macs(self, s: int) -> int:
        if s not in self._macs:
            self._macs[s] = opdef(self.g.ops[s]).macs(self.g.ops[s], self.g)
        return self._macs[s]

    # --- per-op calls and overlap rules, cached by what they depend on --------------------------
    def call(self, s: int, out: Window, stored: tuple) -> PatchCall:
        key = (s, out, stored)
        if key not in self._calls:
            op = self.g.ops[s]
            self._calls[key] = opdef(op).patch_call(op, self.g, None, out, list(stored))
        return self._calls[key]

    def overlaps(self, s: int, out: Window, stored: tuple) -> dict[int, int]:
        """input position -> min_delta of op s on one patch (keyed by the call it makes, which
        fixes the kernel's whole access pattern)."""
        c = self.call(s, out, stored)
        key = (s, tuple(sorted(c.fields.items())), tuple(c.offsets))
        if key not in self._overlap_cache:
            op = self.g.ops[s]
            rules = opdef(op).patch_overlaps(op, self.g, out, list(stored))
            res: dict[int, int] = {}
            for r in rules:
                res[r.input_pos] = max(res.get(r.input_pos, r.min_delta), r.min_delta)
            self._overlap_cache[key] = res
        return self._overlap_cache[key]


# ---------------------------------------------------------------------------------------------
# One schedule, evaluated


@dataclass
class StagePlan:
    """Everything codegen and the memory plan need about a schedule's patch stage."""

    schedule: Schedule
    stage: Stage
    rows: list[PatchWindows]  # per patch row: windows with the columns whole
    cols: list[PatchWindows]  # per patch column: windows with the rows whole
    row_bounds: list[int]
    col_bounds: list[int]
    direct: bool  # op K writes each patch straight into the split tensor (one patch column)
    local_size: dict[int, int]  # stage tensor (or streamed input) -> bytes of its per-patch buffer
    macs: dict[int, int]  # stage op -> MACs over all patches
    permits: dict[tuple[int, int], int] | None = None  # (stage op, input pos) -> min_delta; None: not computed
    stream: int | None = None  # min_delta of the split tensor over the graph input (None: they stay apart)
    local_buffer: dict[int, int] = field(default_factory=dict)  # stage tensor -> buffer id (set by patch_lifetimes)
    scratch_buffer: dict[int, int] = field(default_factory=dict)  # stage op -> its scratch buffer id
    streamed: list[int] = field(default_factory=list)  # graph inputs fetched window by window (Schedule.stream)
    code: StageCode | None = None  # the per-patch values as emitted (set by make_patch_plan)

    def span(self, t: int) -> tuple[int, int]:
        """(first, last) step of per-patch tensor t's buffer: from the op producing it (a streamed
        input: its first reader, before which each patch fetches it) to its last stage reader."""
        first = self.stage.first_use[t] if t in self.streamed else self.stage.produced.index(t)
        return first, self.stage.last_use[t]

    def patch_window(self, i: int, j: int) -> Window:
        return Window(self.row_bounds[i], self.row_bounds[i + 1], self.col_bounds[j], self.col_bounds[j + 1])

    def stored(self, i: int, j: int, t: int) -> Window:
        r, c = self.rows[i].stored[t], self.cols[j].stored[t]
        return Window(r.y0, r.y1, c.x0, c.x1)

    def need(self, i: int, j: int, t: int) -> Window:
        r, c = self.rows[i].need[t], self.cols[j].need[t]
        return Window(r.y0, r.y1, c.x0, c.x1)


def stage_plan(an: Analysis, sched: Schedule, exact: bool = True) -> StagePlan | None:
    """The schedule's patch stage; None if some patch would get an empty window. `exact` computes
    the per-patch overlap permits (what a real plan needs; the search's estimate does without)."""
    g = an.g
    stage = an.stages.get(sched.split_op)
    if stage is None:
        raise TinymemError(f"op {sched.split_op} cannot end a patch stage ({_why_not(g, sched.split_op)})")
    t = g.t(stage.split)
    h, w = int(t.shape[1]), int(t.shape[2])
    if not (1 <= sched.rows <= h and 1 <= sched.cols <= w):
        raise TinymemError(f"grid {sched.rows}x{sched.cols} does not fit the {h}x{w} split tensor {t.describe()}")
    if sched.stream and stage.stream_blocker:
        raise TinymemError(f"schedule {sched.label} cannot stream its input: {stage.stream_blocker}")
    rows = an.axis(sched.split_op, "y", sched.rows, sched.stream)
    cols = an.axis(sched.split_op, "x", sched.cols, sched.stream)
    if rows is None or cols is None:
        return None
    rb, cb = bounds(h, sched.rows), bounds(w, sched.cols)
    direct = sched.cols == 1 and cols[0].stored[stage.split].w == w and all(
        (r.stored[stage.split].y0, r.stored[stage.split].y1) == (a, b) for r, a, b in zip(rows, rb, rb[1:]))
    local_size, macs = {}, {}
    streamed = list(stage.inputs) if sched.stream else []
    for x in streamed:
        local_size[x] = max(r.stored[x].h for r in rows) * max(c.stored[x].w for c in cols) * int(g.t(x).shape[3])
    for s in stage.ops:
        op = g.ops[s]
        y = op.outputs[0]
        yt = g.t(y)
        hs = [r.stored[y].h for r in rows]
        ws = [c.stored[y].w for c in cols]
        if y != stage.split or not direct:
            local_size[y] = max(hs) * max(ws) * int(yt.shape[3])
        macs[s] = an.op_macs(s) * sum(hs) * sum(ws) // (int(yt.shape[1]) * int(yt.shape[2]))
    sp = StagePlan(sched, stage, rows, cols, rb, cb, direct, local_size, macs, streamed=streamed)
    sp.stream = stream_delta(g, sp)
    if exact:
        sp.permits = stage_permits(an, sp)
    return sp


def stage_permits(an: Analysis, sp: StagePlan) -> dict[tuple[int, int], int]:
    """(op, input position) -> the largest min_delta over the patches, for inputs held in
    per-patch buffers that die at that op, written over by its per-patch output."""
    g, stage = an.g, sp.stage
    out: dict[tuple[int, int], int | None] = {}
    for s in stage.ops:
        op = g.ops[s]
        y = op.outputs[0]
        if y not in sp.local_size:
            continue
        positions = [pos for pos, i in enumerate(op.inputs)
                     if i >= 0 and i in sp.local_size and stage.last_use.get(i) == s and i != y]
        if not positions:
            continue
        acts = [i if i >= 0 and not g.t(i).is_const else None for i in op.inputs]
        for i in range(len(sp.rows)):
            for j in range(len(sp.cols)):
                stored = tuple(sp.stored(i, j, a) if a is not None else None for a in acts)
                rules = an.overlaps(s, sp.stored(i, j, y), stored)
                for pos in positions:
                    if pos not in rules:
                        out[(s, pos)] = None  # some patch allows no overlap at all
                    elif (s, pos) not in out:
                        out[(s, pos)] = rules[pos]
                    elif out[(s, pos)] is not None:
                        out[(s, pos)] = max(out[(s, pos)], rules[pos])
    return {k: v for k, v in out.items() if v is not None}


def stream_delta(g: Graph, sp: StagePlan) -> int | None:
    """How far above the split tensor the graph input may start so that the split can overlap it:
    patches run in row-major order and each writes its part of the split tensor after all its
    reads, so split bytes written by patches 0..p must stay below every input byte a later patch
    reads. None when the input is read after the stage, or by op K while it writes the split, or
    is streamed (not in the arena at all)."""
    st = sp.stage
    k = st.split_op
    if len(st.inputs) != 1 or sp.schedule.patches < 2 or sp.streamed:
        return None
    x = st.inputs[0]
    if x in g.outputs or any(x in op.inputs for op in g.ops[k + 1:]):
        return None
    if sp.direct and x in g.ops[k].inputs:
        return None
    t, s = g.t(x), g.t(st.split)
    wi, ci, ws, cs = int(t.shape[2]), int(t.shape[3]), int(s.shape[2]), int(s.shape[3])
    written, delta = -1, None
    for i in range(sp.schedule.rows):
        for j in range(sp.schedule.cols):
            if written >= 0:
                n = sp.need(i, j, x)
                d = written - (n.y0 * wi + n.x0) * ci + 1
                delta = d if delta is None else max(delta, d)
            pw = sp.patch_window(i, j)
            written = max(written, ((pw.y1 - 1) * ws + pw.x1) * cs - 1)
    return delta


def _why_not(g: Graph, k: int) -> str:
    if not 0 <= k < len(g.ops):
        return f"the model has ops 0..{len(g.ops) - 1}"
    for op in g.ops[:k + 1]:
        if not _is_patchable(op, g):
            return f"{op.describe()} cannot run on patches"
    return "another tensor than its output crosses the split, or a stage tensor is unused"


# ---------------------------------------------------------------------------------------------
# Memory: one arena for the patch stage and the rest


def patch_lifetimes(g: Graph, sp: StagePlan, base: Lifetimes | None = None) -> tuple[Lifetimes, dict[int, int]]:
    """The combined buffers and permits; also returns stage op -> buffer id of its scratch."""
    base = base or compute_lifetimes(g, use_overlaps=True)
    stage, k = sp.stage, sp.schedule.split_op
    local = set(sp.local_size) - ({stage.split} if stage.split in sp.local_size else set())
    bufs: list[Buffer] = []
    tensor_buffer: dict[int, int] = {}
    remap: dict[int, int] = {}
    for b in base.buffers:
        if b.scratch_of is not None and b.scratch_of <= k:
            continue
        if b.scratch_of is None and any(t in local for t in b.tensors):
            continue
        nb = Buffer(len(bufs), b.size, b.first, b.last, list(b.tensors), b.scratch_of)
        if any(t in stage.inputs for t in b.tensors):
            nb.first, nb.last = 0, max(b.last, k)  # every patch reads the inputs again
        if stage.split in b.tensors:
            nb.first = 0  # written patch by patch: the first patch's rows must outlive the others
        remap[b.id] = nb.id
        bufs.append(nb)
        if nb.scratch_of is None:
            for t in nb.tensors:
                tensor_buffer[t] = nb.id
    # Per-patch buffers of the stage: tensor t from the op producing it (a streamed input: its first
    # reader) to its last reader. A streamed input has no whole buffer: tensor_buffer leaves it out.
    local_buffer: dict[int, int] = {}
    for t in sp.streamed + stage.produced:
        if t not in sp.local_size:
            continue
        nb = Buffer(len(bufs), sp.local_size[t], *sp.span(t), [t])
        bufs.append(nb)
        local_buffer[t] = nb.id
        if t != stage.split and t not in sp.streamed:
            tensor_buffer[t] = nb.id
    scratch: dict[int, int] = {}
    for s in stage.ops:
        size = opdef(g.ops[s]).scratch_bytes(g.ops[s], g)
        if size > 0:
            scratch[s] = len(bufs)
            bufs.append(Buffer(len(bufs), size, s, s, scratch_of=s))
    permits = [Permit(p.op, remap[p.inp], remap[p.out], p.min_delta) for p in base.permits
               if p.op > k and p.inp in remap and p.out in remap]
    if sp.stream is not None:
        x, y = base.tensor_buffer[stage.inputs[0]], base.tensor_buffer[stage.split]
        permits.append(Permit(k, remap[x], remap[y], sp.stream, span=True))
    for (s, pos), delta in sp.permits.items():
        op = g.ops[s]
        bi, bo = local_buffer[op.inputs[pos]], local_buffer[op.outputs[0]]
        prev = next((p for p in permits if p.inp == bi and p.out == bo), None)
        if prev is not None:  # one tensor fed to two inputs: both rules
            permits.remove(prev)
            delta = max(delta, prev.min_delta)
        permits.append(Permit(s, bi, bo, delta))
    sp.local_buffer, sp.scratch_buffer = local_buffer, scratch
    return Lifetimes(bufs, tensor_buffer, permits), scratch


def stage_estimate(g: Graph, sp: StagePlan, align: int = 4, an: Analysis | None = None) -> int:
    """A lower bound on the arena during the patch stage: live bytes minus what permitted pairs
    may share. Without exact permits (the search), any op kind with an overlap rule is assumed to
    overlap as much as its sizes allow, which keeps it a lower bound."""
    stage = sp.stage
    k = stage.split_op
    whole = sum(g.t(i).nbytes for i in stage.inputs if i not in sp.streamed) + g.t(stage.split).nbytes
    if sp.stream is not None:
        whole -= max_overlap(g.t(stage.inputs[0]).nbytes, g.t(stage.split).nbytes, align_up(sp.stream, align))
    delta = [0] * (k + 2)  # live per-patch bytes, as a difference array over the steps
    for t, size in sp.local_size.items():
        first, last = sp.span(t)
        delta[first] += size
        delta[last + 1] -= size
    best, live_local = 0, 0
    for s in stage.ops:
        op = g.ops[s]
        live_local += delta[s]
        live = whole + live_local + (an.op_scratch(s) if an else opdef(op).scratch_bytes(op, g))
        y = op.outputs[0]
        if sp.permits is not None:
            for (ps, pos), d in sp.permits.items():
                if ps == s:
                    live -= max_overlap(sp.local_size[op.inputs[pos]], sp.local_size[y], align_up(d, align))
        elif y in sp.local_size and type(opdef(op)).patch_overlaps is not OpDef.patch_overlaps:
            dying = {i for i in op.inputs if i >= 0 and i in sp.local_size and i != y and stage.last_use.get(i) == s}
            live -= sum(min(sp.local_size[i], sp.local_size[y]) for i in dying)
        best = max(best, live)
    return align_up(best, align)


def step_lower_bounds(lt: Lifetimes, n: int, align: int = 4) -> list[int]:
    """Per step, live bytes minus what permitted pairs may share (arena.lower_bound, per step)."""
    need = [0] * n
    for b in lt.buffers:
        for s in range(max(b.first, 0), min(b.last, n - 1) + 1):
            need[s] += b.size
    for p in lt.permits:
        i, o = lt.buffers[p.inp], lt.buffers[p.out]
        for s in range(max(i.first, o.first), min(i.last, o.last) + 1):
            need[s] -= max_overlap(i.size, o.size, align_up(p.min_delta, align))
    return [align_up(v, align) for v in need]


def place_patch(g: Graph, sp: StagePlan, planner: str = "tinymem", align: int | None = None,
                quick: bool = False, an: Analysis | None = None) -> tuple[Lifetimes, Placement]:
    """Buffers, permits and a checked placement of a schedule's whole graph in one arena."""
    lt, _ = patch_lifetimes(g, sp, an.base_lifetimes() if an else None)
    if planner not in PLANNERS:
        raise TinymemError(f"unknown planner '{planner}'; choose one of {', '.join(PLANNERS)}")
    if planner == "greedy":
        lt.permits = []  # the baseline never overlaps
    kwargs = {"align": align} if align else {}
    if quick and planner == "tinymem":
        kwargs["iterations"] = 0
    placement = PLANNERS[planner](**kwargs).place(lt)
    check_placement(lt, placement)
    return lt, placement


def quick_peak(an: Analysis, sched: Schedule, planner: str = "tinymem") -> int:
    """The arena of a schedule under the planner without its local search (what the search ranks)."""
    sp = stage_plan(an, sched)
    if sp is None:
        raise TinymemError(f"schedule {sched.label}: some patch gets an empty window (try fewer patches)")
    return place_patch(an.g, sp, planner, quick=True, an=an)[1].arena_bytes


def make_patch_plan(g: Graph, sched: Schedule, planner: str = "tinymem", align: int | None = None,
                    an: Analysis | None = None, quick: bool = False) -> MemoryPlan:
    """The whole memory plan of `g` run with patch schedule `sched` (validated: check_placement)."""
    validate_graph(g)
    an = an or Analysis(g)
    sp = stage_plan(an, sched)
    if sp is None:
        raise TinymemError(f"schedule {sched.label}: some patch gets an empty window (try fewer patches)")
    lt, placement = place_patch(g, sp, planner, align, quick, an)
    plan = assemble_plan(g, planner, lt, placement, macs=sp.macs, patch=sp)
    # The per-patch tables the stage emits are flash too: count them with their op.
    sp.code = stage_code(g, sp, an)
    for s, nbytes in sp.code.table_bytes.items():
        plan.layers[s].flash_bytes += nbytes
    plan.flash_bytes = sum(layer.flash_bytes for layer in plan.layers)
    return plan
