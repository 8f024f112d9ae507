"""Static arena planners behind one small interface: buffers + permits in, offsets out.

`GreedyBySize` is what TFLite Micro's GreedyMemoryPlanner does (largest first, lowest offset that
fits, 16-byte alignment, no overlaps): the baseline. `OverlapAware` is ours: the same greedy
placement but it may overlap an op's output with an input that dies at that op, by exactly the
margin the kernel's read/write order allows (in-place element-wise and depthwise ops, 1x1 convs
that write over pixels already read, ...), and it tries several orders and keeps the smallest.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from ..errors import TinymemError
from .lifetimes import Buffer, Lifetimes


def align_up(x: int, a: int) -> int:
    return -(-x // a) * a


@dataclass
class Placement:
    offsets: dict[int, int]  # buffer id -> byte offset
    arena_bytes: int


class Planner(Protocol):
    name: str

    def place(self, lt: Lifetimes) -> Placement: ...


def _forbidden(x: Buffer, y: Buffer, y_off: int, lt: Lifetimes, use_permits: bool) -> tuple[int, int] | None:
    """Closed interval of offsets x may not take, given y placed at y_off (None: no constraint)."""
    if not x.overlaps_in_time(y):
        return None
    lo, hi = y_off - x.size + 1, y_off + y.size - 1  # any overlap in memory
    p = lt.permit(x.id, y.id) if use_permits else None
    if p is not None:
        if p.inp == x.id:  # x is the input: allowed at or beyond y_off + min_delta
            hi = min(hi, y_off + p.min_delta - 1)
        else:  # x is the output: input y must sit >= min_delta above x
            lo = max(lo, y_off - p.min_delta + 1)
    return (lo, hi) if lo <= hi else None


def _greedy(order: list[Buffer], lt: Lifetimes, align: int, use_permits: bool) -> Placement:
    offsets: dict[int, int] = {}
    placed: list[Buffer] = []
    for b in order:
        intervals = sorted(
            iv for y in placed if (iv := _forbidden(b, y, offsets[y.id], lt, use_permits)) is not None
        )
        # Sorted by start, cand only grows: once cand lies below an interval's start it lies below
        # every later one, and it was moved past every earlier one it fell into.
        cand = 0
        for lo, hi in intervals:
            if cand < lo:
                break
            if cand <= hi:
                cand = align_up(hi + 1, align)
        offsets[b.id] = cand
        placed.append(b)
    arena = max((offsets[b.id] + b.size for b in order), default=0)
    return Placement(offsets, align_up(arena, align))


class GreedyBySize:
    """TFLite Micro's GreedyMemoryPlanner: the baseline every plan is compared with."""

    name = "greedy"

    def __init__(self, align: int = 16):
        self.align = align

    def place(self, lt: Lifetimes) -> Placement:
        order = sorted(lt.buffers, key=lambda b: (-b.size, b.first, b.id))
        return _greedy(order, lt, self.align, use_permits=False)


_ORDERS: dict[str, Callable[[Buffer], tuple]] = {
    "size": lambda b: (-b.size, b.first, b.id),
    "first-use": lambda b: (b.first, -b.size, b.id),
    "size-x-life": lambda b: (-(b.size * (b.last - b.first + 1)), b.id),
    "last-use": lambda b: (-b.last, -b.size, b.id),
}


class OverlapAware:
    name = "tinymem"

    def __init__(self, align: int = 4):
        self.align = align

    def place(self, lt: Lifetimes) -> Placement:
        best: Placement | None = None
        for key in _ORDERS.values():
            p = _greedy(sorted(lt.buffers, key=key), lt, self.align, use_permits=True)
            if best is None or p.arena_bytes < best.arena_bytes:
                best = p
        return best


PLANNERS = {"greedy": GreedyBySize, "tinymem": OverlapAware}


def check_placement(lt: Lifetimes, placement: Placement) -> None:
    """Prove a placement valid: no two buffers live at the same time share a byte, unless a permit
    allows exactly that overlap. Raises TinymemError naming the pair."""
    bufs = lt.buffers
    off = placement.offsets
    for i, a in enumerate(bufs):
        if off[a.id] < 0 or off[a.id] + a.size > placement.arena_bytes:
            raise TinymemError(f"{a.label} at {off[a.id]}+{a.size} lies outside the {placement.arena_bytes}-byte arena")
        for b in bufs[i + 1:]:
            if not a.overlaps_in_time(b):
                continue
            if off[a.id] + a.size <= off[b.id] or off[b.id] + b.size <= off[a.id]:
                continue
            p = lt.permit(a.id, b.id)
            if p is not None and off[p.inp] - off[p.out] >= p.min_delta:
                continue
            raise TinymemError(
                f"invalid plan: {a.label} [{off[a.id]}, {off[a.id] + a.size}) and {b.label} "
                f"[{off[b.id]}, {off[b.id] + b.size}) are live together (ops {max(a.first, b.first)}.."
                f"{min(a.last, b.last)}) and overlap"
            )
