"""tm_alloc configs: their byte layout (mirroring tm_alloc.c), the search that picks size classes
and pool sizes for a trace, the worst-case bound, and the generated tinymem_alloc_config.h.

The search minimises what the allocator must own to serve the trace (pools + the large
region's high-water mark + metadata), replaying each candidate in C (native.search), starting
from one class per request size with pools as deep as that size's peak, then greedily dropping
classes and thinning pools while the peak falls. A thinned pool overflows into the next larger
class with a free slot, then into the large region, so a candidate never fails a request the
large region can take.
"""
from __future__ import annotations

import bisect
import json
import math
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..errors import TinymemError
from .trace import FREE, MEMALIGN, REALLOC, Trace

# Mirrors of tm_alloc.c/.h (tests check them against the C).
HEADER_BYTES, POOL_RECORD_BYTES, MAX_PAGES = 184, 16, 64
MAX_CLASSES, MAX_SLOTS, MAX_CLASS_SIZE = 32, 1024, 4096
GRANULES = (8, 16, 32)
MARKER = "tinymem-alloc-config:"


def _words(bits: int) -> int:
    return (bits + 31) // 32


@dataclass(frozen=True)
class AllocConfig:
    classes: tuple[tuple[int, int], ...]  # (slot bytes, slots), ascending sizes
    granule: int = 16
    canaries: bool = True
    heap_bytes: int = 0  # user bytes: pools, then the large region
    trace_mode: bool = False
    set_errno: bool = True  # ENOMEM/EINVAL in errno, as the C library's malloc (False: no errno state)

    @property
    def guard(self) -> int:
        return 4 if self.canaries else 0

    @property
    def pool_bytes(self) -> int:
        return sum(s * n for s, n in self.classes)

    @property
    def large_off(self) -> int:
        return -(-self.pool_bytes // self.granule) * self.granule

    @property
    def large_granules(self) -> int:
        return max(0, self.heap_bytes - self.large_off) // self.granule

    def meta_bytes(self, large_granules: int | None = None) -> int:
        """tm_alloc_meta_bytes(): header + pool records, size table, page map, pool bitmaps, the large
        region's two bitmaps and their two word summaries."""
        g = self.large_granules if large_granules is None else large_granules
        small_max = self.classes[-1][0] if self.classes else 0
        page_shift = 3
        while self.pool_bytes >> page_shift >= MAX_PAGES:
            page_shift += 1
        pages = ((self.pool_bytes - 1) >> page_shift) + 1 if self.pool_bytes else 0
        at = (HEADER_BYTES + POOL_RECORD_BYTES * (len(self.classes) + 1) + ((small_max // 8 + 3) & ~3) + ((pages + 3) & ~3)) // 4
        at += sum(1 + _words(n) for _s, n in self.classes)
        return 4 * (at + 2 * _words(g) + 2 * _words(_words(g)))

    @property
    def total_bytes(self) -> int:
        """RAM the allocator takes: heap + metadata."""
        return self.heap_bytes + self.meta_bytes()

    def owned(self, high_water_granules: int) -> int:
        """tm_heap_owned(): what serving a trace needed, given the large region's high-water mark."""
        large = self.large_off - self.pool_bytes + high_water_granules * self.granule if high_water_granules else 0
        return self.pool_bytes + large + self.meta_bytes(high_water_granules)

    def classes_arg(self) -> str:
        return ",".join(f"{s}:{n}" for s, n in self.classes) or "-"

    def validate(self) -> "AllocConfig":
        sizes = [s for s, _ in self.classes]
        if len(sizes) > MAX_CLASSES:
            raise TinymemError(f"{len(sizes)} size classes; tm_alloc takes at most {MAX_CLASSES}")
        if sizes != sorted(set(sizes)) or any(s % 8 or not 8 <= s <= MAX_CLASS_SIZE for s in sizes):
            raise TinymemError(f"size classes must ascend in multiples of 8 up to {MAX_CLASS_SIZE}, got {sizes}")
        if any(not 1 <= n <= MAX_SLOTS for _s, n in self.classes):
            raise TinymemError(f"each pool holds 1..{MAX_SLOTS} slots, got {[n for _s, n in self.classes]}")
        if self.granule not in (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096):
            raise TinymemError(f"the granule must be a power of two from 8 to 4096, got {self.granule}")
        if self.pool_bytes > self.heap_bytes:
            raise TinymemError(f"the pools take {self.pool_bytes:,} B but the heap is {self.heap_bytes:,} B")
        return self

    def as_dict(self) -> dict:
        d = asdict(self)
        d["classes"] = [list(c) for c in self.classes]
        d.update(pool_bytes=self.pool_bytes, large_bytes=self.large_granules * self.granule,
                 meta_bytes=self.meta_bytes(), total_bytes=self.total_bytes)
        return d


def parse_size(text: str) -> int:
    """'32KiB', '32K', '32768', '1.5MiB' -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KkMm]i?[Bb]?|[Bb])?\s*", text)
    if not m:
        raise TinymemError(f"cannot read {text!r} as a size: write bytes, or e.g. 32KiB")
    unit = (m[2] or "").lower()[:1]
    return int(float(m[1]) * {"": 1, "b": 1, "k": 1024, "m": 1024 * 1024}[unit])


def load_config(path: str | Path) -> AllocConfig:
    """The config a generated tinymem_alloc_config.h was made from (its marker comment)."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise TinymemError(f"{p}: no such config header") from None
    for line in text.splitlines():
        if MARKER in line:
            try:
                d = json.loads(line.split(MARKER, 1)[1].strip().rstrip("*/").strip())
                return AllocConfig(tuple(tuple(c) for c in d["classes"]), d["granule"], bool(d["canaries"]),
                                   d["heap_bytes"], bool(d.get("trace_mode", False)),
                                   bool(d.get("errno", True))).validate()
            except (ValueError, KeyError, TypeError) as exc:
                raise TinymemError(f"{p}: its '{MARKER}' line is damaged ({exc})") from None
    raise TinymemError(f"{p}: not a header written by `tinymem alloc-config` (no '{MARKER}' line)")


def render_header(cfg: AllocConfig, source: str = "", report: dict | None = None) -> str:
    from codegen.render import environment

    marker = json.dumps({"classes": [list(c) for c in cfg.classes], "granule": cfg.granule,
                         "canaries": int(cfg.canaries), "heap_bytes": cfg.heap_bytes, "trace_mode": int(cfg.trace_mode),
                         "errno": int(cfg.set_errno)})
    return environment().get_template("alloc/tinymem_alloc_config.h.j2").render(
        cfg=cfg, source=source, report=report or {}, marker=f"{MARKER} {marker}")


# ---------------------------------------------------------------------------------------------
# Choosing a config for a trace

def _class_of(sizes: list[int], need: int) -> int:
    k = bisect.bisect_left(sizes, need)
    return k if k < len(sizes) else -1


def class_peaks(trace: Trace, sizes: list[int], guard: int) -> list[int]:
    """Per class, the most blocks of it live at once, if every block stayed in its own class."""
    live: dict[int, int] = {}
    count, peak = [0] * len(sizes), [0] * len(sizes)
    for op, slot, size, align in trace.ops:
        old = live.pop(slot, -1)
        if old >= 0:
            count[old] -= 1
        if op == FREE or (op == REALLOC and size == 0):
            continue
        need = max(size, 1) + guard
        if op == REALLOC and old >= 0 and need <= sizes[old]:
            k = old  # tm_alloc keeps a block that still fits its slot
        else:
            k = -1 if op == MEMALIGN and align > 8 else _class_of(sizes, need)
        live[slot] = k
        if k >= 0:
            count[k] += 1
            peak[k] = max(peak[k], count[k])
    return peak


def _round8(n: int) -> int:
    return (n + 7) & ~7


def _small_sizes(trace: Trace, guard: int, small_max: int) -> list[int]:
    """One class per small request size (+ guard, 8-aligned), merged down to MAX_CLASSES by folding
    the class that adds the fewest slot bytes into the next larger one."""
    sizes = sorted({_round8(max(size, 1) + guard) for op, _s, size, _a in trace.ops
                    if op != FREE and size <= small_max and not (op == MEMALIGN and _a > 8)})
    while len(sizes) > MAX_CLASSES:
        peaks = class_peaks(trace, sizes, guard)
        cost = [peaks[k] * (sizes[k + 1] - sizes[k]) for k in range(len(sizes) - 1)]
        del sizes[cost.index(min(cost))]
    return sizes


def _candidate(sizes: list[int], counts: list[int], granule: int, canaries: bool, room: int) -> AllocConfig:
    classes = tuple((s, max(1, min(n, MAX_SLOTS))) for s, n in zip(sizes, counts))
    pools = sum(s * n for s, n in classes)
    return AllocConfig(classes, granule, canaries, -(-pools // granule) * granule + room)


def choose_config(trace: Trace, canaries: bool = False, granule: int | None = None, small_max: int = 256,
                  max_spill: float = 0.01, rounds: int = 40) -> tuple[AllocConfig, dict]:
    """The config that serves the trace with the fewest owned bytes (before headroom) such that
    requests up to small_max bytes take the O(1) pool path: at most max_spill of them may find
    every fitting pool full and go to the large region. Returns it and what the search measured:
    {'owned', 'large_peak', 'large_max', 'high_water_granules', 'small_requests', 'spills', 'evaluated'}."""
    from .native import search

    guard = 4 if canaries else 0
    profile = trace.profile()
    room = min(1 << 30, max(64 * 1024, 4 * profile.peak_live_bytes + 2 * profile.largest_request + 4096))
    room = -(-room // 64) * 64
    budget = max(40, int(1.5e7 // max(1, len(trace))))  # evaluations the trace's length allows
    sizes = _small_sizes(trace, guard, small_max)

    small_requests = sum(1 for op, _s, size, align in trace.ops if op != FREE and not (op == REALLOC and size == 0)
                         and max(size, 1) + guard <= (sizes[-1] if sizes else 0) and not (op == MEMALIGN and align > 8))

    def fits(r) -> bool:
        return r is not None and r[1] == 0 and r[5] <= max_spill * small_requests

    best = _candidate(sizes, class_peaks(trace, sizes, guard), granule or 16, canaries, room)
    (result,) = search(trace, [best])
    evaluated = 1
    if not fits(result):
        raise TinymemError(f"{trace.source}: no tm_alloc config serves this trace "
                           f"(peak live {profile.peak_live_bytes:,} B, largest request {profile.largest_request:,} B)")
    for _ in range(rounds):
        cur_sizes = [s for s, _ in best.classes]
        cur_counts = [n for _, n in best.classes]
        moves = []
        for k in range(len(cur_sizes)):
            if k < len(cur_sizes) - 1:  # fold class k into the next (the largest stays: it covers small_max)
                rest = cur_sizes[:k] + cur_sizes[k + 1:]
                moves.append(_candidate(rest, class_peaks(trace, rest, guard), best.granule, canaries, room))
            for f in (0.5, 0.75, 0.9):
                thinner = cur_counts[:k] + [max(1, int(cur_counts[k] * f))] + cur_counts[k + 1:]
                if thinner[k] != cur_counts[k]:
                    moves.append(_candidate(cur_sizes, thinner, best.granule, canaries, room))
        moves = list(dict.fromkeys(m for m in moves if m != best))
        if not moves or evaluated + len(moves) > budget:
            break
        found = search(trace, moves)
        evaluated += len(moves)
        scored = [(r[0], k, r) for k, r in enumerate(found) if fits(r)]
        if not scored or min(scored)[0] >= result[0]:
            break
        _, k, result = min(scored)
        best = moves[k]
    if granule is None:  # the granule that suits these classes best
        others = [replace(best, granule=g, heap_bytes=-(-best.pool_bytes // g) * g + room) for g in GRANULES
                  if g != best.granule]
        for cand, r in zip(others, search(trace, others)):
            evaluated += 1
            if fits(r) and r[0] < result[0]:
                best, result = cand, r
    owned, _failed, large_peak, large_max, high_water, spills = result
    return best, {"owned": owned, "large_peak": large_peak, "large_max": large_max,
                  "high_water_granules": high_water // best.granule, "small_requests": small_requests,
                  "spills": spills, "evaluated": evaluated}


def with_headroom(cfg: AllocConfig, measured: dict, headroom: float, budget: int | None) -> AllocConfig:
    """Pools and the large region grown by `headroom`; then, with a budget (heap + metadata), the
    large region takes whatever the budget leaves."""
    classes = tuple((s, min(MAX_SLOTS, math.ceil(n * (1 + headroom)))) for s, n in cfg.classes)
    grown = replace(cfg, classes=classes, heap_bytes=0)
    large = math.ceil(measured["high_water_granules"] * (1 + headroom))
    grown = replace(grown, heap_bytes=grown.large_off + large * cfg.granule if large else grown.pool_bytes)
    if budget is None:
        return grown.validate()
    if grown.total_bytes > budget:
        raise TinymemError(f"the trace needs {grown.total_bytes:,} B of heap and metadata with {headroom:.0%} headroom, "
                           f"more than --heap {budget:,} B")
    heap = budget - grown.meta_bytes(budget // cfg.granule)  # metadata over-estimated: a lower bound
    while replace(grown, heap_bytes=heap + cfg.granule).total_bytes <= budget:
        heap += cfg.granule
    return replace(grown, heap_bytes=max(heap, grown.heap_bytes)).validate()


def worst_case(cfg: AllocConfig, large_peak: int, large_max: int) -> dict:
    """Heap the chosen classes need in the worst case for the same live set in any order.

    Pools: exact (a slot serves any request of its class, so pools do not fragment), as long as
    each class's live blocks stay within its pool. Large region: first fit needs at most
    M * H_m / ln 2 granules when at most M granules are live and no block exceeds m granules
    (Robson; Knuth, TAOCP vol. 1, 2.5 exercise 43). Over-aligned (memalign) blocks are outside it."""
    g = cfg.granule
    big_m, m = -(-large_peak // g), -(-large_max // g)
    harmonic = sum(1.0 / j for j in range(1, m + 1))
    large_granules = math.ceil(big_m * harmonic / math.log(2)) if big_m else 0
    bound = replace(cfg, heap_bytes=(cfg.large_off + large_granules * g) if large_granules else cfg.pool_bytes)
    return {"bytes": bound.total_bytes, "pool_bytes": cfg.pool_bytes, "large_bytes": large_granules * g,
            "meta_bytes": bound.meta_bytes(),
            "large_live_peak_bytes": large_peak, "large_max_block_bytes": large_max,
            "bound": ("pools exact (each class within its slot count); large region first fit <= M*H_m/ln 2 granules, "
                      f"M = {big_m} live granules at most, m = {m} granules the largest block "
                      "(Robson; Knuth TAOCP vol. 1, 2.5 ex. 43)")}
