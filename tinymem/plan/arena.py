"""Static arena planners behind one small interface: buffers + permits in, offsets out.

`GreedyBySize` is what TFLite Micro's GreedyMemoryPlanner does (largest first, lowest offset that
fits, 16-byte alignment, no overlaps): the baseline. `OverlapAware` is ours: the same first-fit
placement but it may overlap an op's output with an input that dies at that op, by exactly the
margin the kernel's read/write order allows (in-place element-wise and depthwise ops, 1x1 convs
that write over pixels already read, ...). It tries several orders, then improves the best by a
short seeded local search over the order, and stops early once it meets a proven lower bound.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Protocol

from ..errors import TinymemError
from .lifetimes import Buffer, Lifetimes

BASELINE_ALIGN = 16  # TFLite Micro aligns every offset to 16 bytes


def align_up(x: int, a: int) -> int:
    return -(-x // a) * a


@dataclass
class Placement:
    offsets: dict[int, int]  # buffer id -> byte offset
    arena_bytes: int


class Planner(Protocol):
    name: str

    def place(self, lt: Lifetimes) -> Placement: ...


class _Conflicts:
    """For each buffer x, the offsets it may not take relative to every buffer y live with it:
    x may not start in [off(y) + lo, off(y) + hi]. Built once per plan so that each first-fit pass
    only visits real neighbours (a MobileNet has ~100 buffers but a handful live at once)."""

    def __init__(self, lt: Lifetimes, use_permits: bool):
        deltas = {(p.inp, p.out): p.min_delta for p in lt.permits} if use_permits else {}
        self.near: dict[int, list[tuple[int, int, int]]] = {b.id: [] for b in lt.buffers}
        bufs = sorted(lt.buffers, key=lambda b: b.first)
        for i, x in enumerate(bufs):
            for y in bufs[i + 1:]:
                if y.first > x.last:
                    break  # sorted by first: no later buffer is born before x dies
                for a, b in ((x, y), (y, x)):
                    if (rel := self._relative(a, b, deltas)) is not None:
                        self.near[a.id].append((b.id, *rel))

    @staticmethod
    def _relative(x: Buffer, y: Buffer, deltas: dict) -> tuple[int, int] | None:
        lo, hi = -x.size + 1, y.size - 1  # any shared byte
        if (x.id, y.id) in deltas:  # x is the input: it may start min_delta or more above y
            hi = min(hi, deltas[(x.id, y.id)] - 1)
        elif (y.id, x.id) in deltas:  # x is the output: input y must start min_delta or more above x
            lo = max(lo, 1 - deltas[(y.id, x.id)])
        return (lo, hi) if lo <= hi else None

    def first_fit(self, order: list[Buffer], align: int) -> dict[int, int]:
        offsets: dict[int, int] = {}
        for b in order:
            cand = 0
            # Sorted by start, cand only grows: once cand lies below an interval's start it lies
            # below every later one, and it was moved past every earlier one it fell into.
            for lo, hi in sorted((offsets[y] + lo, offsets[y] + hi) for y, lo, hi in self.near[b.id] if y in offsets):
                if cand < lo:
                    break
                if cand <= hi:
                    cand = align_up(hi + 1, align)
            offsets[b.id] = cand
        return offsets


def _placement(lt: Lifetimes, offsets: dict[int, int], align: int) -> Placement:
    return Placement(offsets, align_up(max((offsets[b.id] + b.size for b in lt.buffers), default=0), align))


def _size_order(lt: Lifetimes) -> list[Buffer]:
    return sorted(lt.buffers, key=lambda b: (-b.size, b.first, b.id))


class GreedyBySize:
    """TFLite Micro's GreedyMemoryPlanner: the baseline every plan is compared with."""

    name = "greedy"

    def __init__(self, align: int = BASELINE_ALIGN):
        self.align = align

    def place(self, lt: Lifetimes) -> Placement:
        return _placement(lt, _Conflicts(lt, use_permits=False).first_fit(_size_order(lt), self.align), self.align)


def max_overlap(size_in: int, size_out: int, min_delta: int) -> int:
    """The most bytes an input may share with an output when in_off - out_off >= min_delta."""
    if min_delta <= max(0, size_out - size_in):
        return min(size_in, size_out)  # some allowed delta nests the smaller inside the larger
    return max(0, size_out - min_delta)  # beyond that, overlap only shrinks as delta grows


def lower_bound(lt: Lifetimes, align: int = 1) -> int:
    """No valid placement needs fewer bytes: at every step the live buffers cover at least their
    total size less, for each permitted pair, the most that pair may overlap (only permitted pairs
    share bytes, so the union is at least the sum minus the pairwise overlaps)."""
    if not lt.buffers:
        return 0
    sizes = {b.id: b for b in lt.buffers}
    best = 0
    for step in range(min(b.first for b in lt.buffers), max(b.last for b in lt.buffers) + 1):
        need = sum(b.size for b in lt.buffers if b.live_at(step))
        for p in lt.permits:
            i, o = sizes[p.inp], sizes[p.out]
            if i.live_at(step) and o.live_at(step):
                # Offsets are multiples of align, so is their difference.
                need -= max_overlap(i.size, o.size, align_up(p.min_delta, align))
        best = max(best, need)
    return align_up(best, align)


def overlap_bytes(lt: Lifetimes, offsets: dict[int, int]) -> int:
    """Bytes shared by permitted pairs: how much in-place execution a placement actually uses."""
    total = 0
    for p in lt.permits:
        i, o = lt.buffers[p.inp], lt.buffers[p.out]
        total += max(0, min(offsets[i.id] + i.size, offsets[o.id] + o.size) - max(offsets[i.id], offsets[o.id]))
    return total


_ORDERS: dict[str, Callable[[Buffer], tuple]] = {
    "size": lambda b: (-b.size, b.first, b.id),
    "first-use": lambda b: (b.first, -b.size, b.id),
    "size-x-life": lambda b: (-(b.size * (b.last - b.first + 1)), b.id),
    "last-use": lambda b: (-b.last, -b.size, b.id),
}


class OverlapAware:
    name = "tinymem"

    def __init__(self, align: int = 4, iterations: int = 300, seed: int = 0, budget: int = 300_000):
        self.align = align
        # Local-search moves, capped so that moves x (buffers + neighbour pairs) <= budget: about
        # 0.3 s of Python on any graph. A work count, not a clock, keeps plans reproducible.
        self.iterations = iterations
        self.budget = budget
        self.seed = seed

    def _key(self, lt: Lifetimes, p: Placement) -> tuple:
        # Smallest arena; then the most in-place sharing (lower live bytes per layer); then the
        # most compact stack, which leaves the search room to lower the top.
        return p.arena_bytes, -overlap_bytes(lt, p.offsets), sum(p.offsets.values())

    def place(self, lt: Lifetimes) -> Placement:
        if not lt.buffers:
            return Placement({}, 0)
        conf = _Conflicts(lt, use_permits=True)

        def run(order: list[Buffer]) -> tuple[tuple, Placement]:
            p = _placement(lt, conf.first_fit(order, self.align), self.align)
            return self._key(lt, p), p

        tried = [(*run(order), order) for order in (sorted(lt.buffers, key=k) for k in _ORDERS.values())]
        key, start, order = min(tried, key=lambda t: t[0])
        best = min([(key, start), *self._baselines(lt)], key=lambda t: t[0])
        work = len(order) + sum(len(near) for near in conf.near.values())
        return self._search(run, order, (key, start), best, lower_bound(lt, self.align), self.budget // work)

    def _baselines(self, lt: Lifetimes) -> list[tuple[tuple, Placement]]:
        """The baseline's own placement competes too (greedy with permits can land worse than
        without them), so this planner never loses to TFLite Micro's at its alignment or ours."""
        plain = _Conflicts(lt, use_permits=False)
        aligns = {self.align, BASELINE_ALIGN} if BASELINE_ALIGN % self.align == 0 else {self.align}
        out = []
        for a in sorted(aligns):
            p = _placement(lt, plain.first_fit(_size_order(lt), a), self.align)
            out.append((self._key(lt, p), p))
        return out

    def _search(self, run, order: list[Buffer], cur: tuple[tuple, Placement], best: tuple[tuple, Placement],
                bound: int, affordable: int) -> Placement:
        """Seeded local search over the placement order: move one buffer elsewhere in it, keep the
        move if the plan is no worse. Stops at the lower bound (nothing left to win)."""
        rng = random.Random(self.seed)
        n = len(order)
        for _ in range(min(self.iterations, affordable) if n > 1 else 0):
            if best[1].arena_bytes <= bound:
                break
            i, j = rng.sample(range(n), 2)
            cand = order[:]
            cand.insert(j, cand.pop(i))
            k, p = run(cand)
            if k <= cur[0]:  # sideways moves too: the search walks plateaus of equal arena
                order, cur = cand, (k, p)
                if k < best[0]:
                    best = (k, p)
        return best[1]


PLANNERS = {"greedy": GreedyBySize, "tinymem": OverlapAware}


def check_placement(lt: Lifetimes, placement: Placement) -> None:
    """Prove a placement valid: no two buffers live at the same time share a byte, unless a permit
    allows exactly that overlap. Raises TinymemError naming the pair."""
    bufs = lt.buffers
    off = placement.offsets
    for p in lt.permits:
        # A permit is only sound for an input whose last reader is the op and an output it creates.
        if bufs[p.inp].last != p.op or (bufs[p.out].first != p.op and not (p.span and bufs[p.out].first <= p.op)):
            raise TinymemError(f"invalid permit {p}: {bufs[p.inp].label} must die and {bufs[p.out].label} be born at op {p.op}")
    for a in bufs:
        if a.id not in off:
            raise TinymemError(f"{a.label} has no offset")
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
