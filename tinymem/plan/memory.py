"""The whole static memory plan of a model: arena offsets, flash, MACs and a per-layer account."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import TinymemError
from ..model.graph import Graph
from ..ops import opdef, validate_graph
from ..ops.isa import current_isa, kernel_isa
from .arena import PLANNERS, check_placement
from .lifetimes import Lifetimes, compute_lifetimes


@dataclass
class LayerInfo:
    index: int
    op: str
    macs: int
    live_bytes: int  # arena bytes in use while this op runs (overlapping buffers counted once)
    in_place: bool  # its output shares bytes with an input
    flash_bytes: int

    def as_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class MemoryPlan:
    graph: Graph
    planner: str
    lifetimes: Lifetimes
    offsets: dict[int, int]  # buffer id -> offset
    arena_bytes: int
    flash_bytes: int
    macs: int
    layers: list[LayerInfo] = field(default_factory=list)
    static_bytes: int = 0  # RAM outside the arena the generated model needs (none today)
    patch: object = None  # a patch-based schedule's StagePlan (tinymem.plan.patch), None: layer by layer
    isa: str = "portable"  # the kernel set it was planned for (tinymem/ops/isa.py); codegen renders that one

    @property
    def peak_sram_bytes(self) -> int:
        return self.arena_bytes + self.static_bytes

    def tensor_offset(self, tensor_index: int) -> int:
        return self.offsets[self.lifetimes.tensor_buffer[tensor_index]]

    def scratch_offset(self, op_index: int) -> int | None:
        for b in self.lifetimes.buffers:
            if b.scratch_of == op_index:
                return self.offsets[b.id]
        return None

    def as_dict(self) -> dict:
        return {
            "model": self.graph.name,
            "planner": self.planner,
            "kernels": self.isa,
            "peak_sram_bytes": self.peak_sram_bytes,
            "arena_bytes": self.arena_bytes,
            "static_bytes": self.static_bytes,
            "flash_bytes": self.flash_bytes,
            "macs": self.macs,
            "layers": [layer.as_dict() for layer in self.layers],
        }


def _live_bytes(lt: Lifetimes, offsets: dict[int, int], step: int) -> int:
    spans = sorted((offsets[b.id], offsets[b.id] + b.size) for b in lt.buffers if b.live_at(step))
    total, end = 0, -1
    for lo, hi in spans:
        if hi > end:
            total += hi - max(lo, end)
            end = hi
    return total


def make_plan(g: Graph, planner: str = "tinymem", align: int | None = None, isa: str | None = None) -> MemoryPlan:
    """Plan the arena with the named planner; `align` overrides its byte alignment of offsets;
    `isa` the kernel set (default: the one in effect, see tinymem/ops/isa.py), whose kernels'
    scratch and overlap rules the plan follows."""
    validate_graph(g)
    if planner not in PLANNERS:
        raise TinymemError(f"unknown planner '{planner}'; choose one of {', '.join(PLANNERS)}")
    with kernel_isa(isa or current_isa()):
        lt = compute_lifetimes(g, use_overlaps=(planner != "greedy"))
        placement = (PLANNERS[planner](align) if align else PLANNERS[planner]()).place(lt)
        check_placement(lt, placement)
        return assemble_plan(g, planner, lt, placement)


def assemble_plan(g: Graph, planner: str, lt: Lifetimes, placement, macs: dict[int, int] | None = None,
                  patch=None) -> MemoryPlan:
    """A MemoryPlan from a checked placement: the per-layer account (MACs, live bytes, in place,
    flash from exactly the arrays each kernel emits). `macs` overrides an op's MACs (a patch
    stage recomputes halos)."""
    layers = []
    for op in g.ops:
        d = opdef(op)
        kernel = d.kernel(op, g, f"op{op.index}")
        in_place = any(p.op == op.index and _touch(lt, placement.offsets, p) for p in lt.permits) or d.is_alias(op, g)
        layers.append(LayerInfo(
            index=op.index, op=op.kind, macs=(macs or {}).get(op.index, d.macs(op, g)),
            live_bytes=_live_bytes(lt, placement.offsets, op.index), in_place=in_place,
            flash_bytes=sum(a.nbytes for a in kernel.arrays),
        ))
    return MemoryPlan(
        graph=g, planner=planner, lifetimes=lt, offsets=placement.offsets, arena_bytes=placement.arena_bytes,
        flash_bytes=sum(layer.flash_bytes for layer in layers), macs=sum(layer.macs for layer in layers),
        layers=layers, patch=patch, isa=current_isa(),
    )


def _touch(lt: Lifetimes, offsets: dict[int, int], p) -> bool:
    """Did the planner actually overlap this permitted pair?"""
    a, b = lt.buffers[p.inp], lt.buffers[p.out]
    return offsets[a.id] < offsets[b.id] + b.size and offsets[b.id] < offsets[a.id] + a.size
