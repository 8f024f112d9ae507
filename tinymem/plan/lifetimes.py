"""Tensor lifetimes -> the buffers a planner places, and the overlaps it may use.

A buffer is one region of the arena: an activation tensor (RESHAPE outputs are merged into their
input's buffer) or an op's scratch. Ops run in graph order; a buffer is live from the op that
first writes it to the op that last reads it, inclusive. Graph inputs are live from op 0, graph
outputs to the last op.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..model.graph import Graph
from ..ops import opdef


@dataclass
class Buffer:
    id: int
    size: int
    first: int
    last: int
    tensors: list[int] = field(default_factory=list)
    scratch_of: int | None = None  # op index, for scratch buffers

    def live_at(self, step: int) -> bool:
        return self.first <= step <= self.last

    def overlaps_in_time(self, other: "Buffer") -> bool:
        return self.first <= other.last and other.first <= self.last

    @property
    def label(self) -> str:
        return f"scratch of op {self.scratch_of}" if self.scratch_of is not None else f"tensor {self.tensors[0]}"


@dataclass(frozen=True)
class Permit:
    """Buffer `inp` may overlap buffer `out` when offset(inp) - offset(out) >= min_delta.

    Usually `inp` dies at op `op` and `out` is born there. With `span`, `out` may be born earlier:
    min_delta then holds over their whole common lifetime (a patch stage writing its split tensor
    over input rows no later patch reads, see tinymem/plan/patch.py)."""

    op: int
    inp: int
    out: int
    min_delta: int
    span: bool = False


@dataclass
class Lifetimes:
    buffers: list[Buffer]
    tensor_buffer: dict[int, int]  # tensor index -> buffer id
    permits: list[Permit]

    def permit(self, a: int, b: int) -> Permit | None:
        for p in self.permits:
            if {p.inp, p.out} == {a, b}:
                return p
        return None


def compute_lifetimes(g: Graph, use_overlaps: bool = True) -> Lifetimes:
    n = len(g.ops)
    root: dict[int, int] = {}  # alias tensor -> tensor that owns the bytes

    def owner(t: int) -> int:
        while t in root:
            t = root[t]
        return t

    for op in g.ops:
        if opdef(op).is_alias(op, g) and not g.t(op.inputs[0]).is_const:
            root[op.outputs[0]] = op.inputs[0]

    buffers: dict[int, Buffer] = {}
    tensor_buffer: dict[int, int] = {}
    for t in g.activations():
        o = owner(t.index)
        if o not in buffers:
            buffers[o] = Buffer(id=len(buffers), size=g.t(o).nbytes, first=n, last=-1)
        buffers[o].tensors.append(t.index)
        tensor_buffer[t.index] = buffers[o].id

    by_id = {b.id: b for b in buffers.values()}

    def touch(tensor: int, step: int) -> None:
        b = by_id[tensor_buffer[tensor]]
        b.first, b.last = min(b.first, step), max(b.last, step)

    for t in g.inputs:
        touch(t, 0)
    for op in g.ops:
        for t in op.inputs + op.outputs:
            if t >= 0 and t in tensor_buffer:
                touch(t, op.index)
    for t in g.outputs:
        touch(t, n - 1)

    out = sorted(by_id.values(), key=lambda b: b.id)
    for op in g.ops:
        scratch = opdef(op).scratch_bytes(op, g)
        if scratch > 0:
            out.append(Buffer(id=len(out), size=scratch, first=op.index, last=op.index, scratch_of=op.index))

    # A graph output is read by the caller after the last op, so even when the last op is its last
    # reader its bytes must survive: it may never be overwritten in place.
    kept = {tensor_buffer[t] for t in g.outputs if t in tensor_buffer}
    permits: dict[tuple[int, int], Permit] = {}
    if use_overlaps:
        for op in g.ops:
            d = opdef(op)
            if d.is_alias(op, g):
                continue
            for ov in d.overlaps(op, g):
                tin = op.inputs[ov.input_pos]
                if tin < 0 or tin not in tensor_buffer:
                    continue
                bin_, bout = tensor_buffer[tin], tensor_buffer[op.outputs[0]]
                # The input's bytes may only be overwritten if nothing reads them after this op.
                if bin_ == bout or bin_ in kept or out[bin_].last != op.index or out[bout].first != op.index:
                    continue
                # One tensor fed to two inputs (ADD(x, x)) must satisfy both kernels' rules.
                prev = permits.get((bin_, bout))
                delta = ov.min_delta if prev is None else max(prev.min_delta, ov.min_delta)
                permits[(bin_, bout)] = Permit(op.index, bin_, bout, delta)
    return Lifetimes(out, tensor_buffer, list(permits.values()))
