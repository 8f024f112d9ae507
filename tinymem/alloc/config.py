"""tm_alloc configs: their byte layout (mirroring tm_alloc_impl.h), the search that picks size
classes and pool sizes for a trace, the worst-case bound, and the generated tinymem_alloc_config.h.

The search minimises what the allocator must own to serve the trace (pools + the large
region's high-water mark + metadata), replaying each candidate in C (native.search), starting
from one class per request size with pools as deep as that size's peak, then descending
(classes folded or dropped, pools thinned) while the peak falls. A thinned pool overflows into
the next larger class with a free slot, then into the large region, so a candidate never fails a
request the large region can take. Pools buy the O(1) path with reserved slots, so the search
also picks how far they reach: the largest limit whose heap stays within a budget of a
conventional first-fit malloc's (choose_config).
"""
from __future__ import annotations

import bisect
import json
import math
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import TinymemError
from .trace import FREE, MEMALIGN, REALLOC, Trace

# Mirrors of tm_alloc_impl.h (tests check them against the C).
HEADER_BYTES, POOL_RECORD_BYTES, MAX_PAGES, LARGE_BINS = 128, 16, 64, 10
MAX_CLASSES, MAX_SLOTS, MAX_CLASS_SIZE = 32, 1024, 4096
GRANULES = (8, 16, 32)
MARKER = "tinymem-alloc-config:"


def _words(bits: int) -> int:
    return (bits + 31) // 32


def large_words(granules: int) -> int:
    """Metadata words of a large region of that many granules (large_words() in tm_alloc_impl.h):
    per word of granules its run starts and hole starts, a summary bit per word, per 32 words a row
    per hole-size bin (at most LARGE_BINS), and per word its longest hole (16 bits)."""
    w = _words(granules)
    return 2 * w + _words(w) * (1 + min(granules.bit_length(), LARGE_BINS)) + (w + 1) // 2


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
        region's bitmaps (large_words)."""
        g = self.large_granules if large_granules is None else large_granules
        small_max = self.classes[-1][0] if self.classes else 0
        page_shift = 3
        while self.pool_bytes >> page_shift >= MAX_PAGES:
            page_shift += 1
        pages = ((self.pool_bytes - 1) >> page_shift) + 1 if self.pool_bytes else 0
        at = (HEADER_BYTES + POOL_RECORD_BYTES * (len(self.classes) + 1) + ((small_max // 8 + 3) & ~3) + ((pages + 3) & ~3)) // 4
        at += sum(1 + _words(n) for _s, n in self.classes)
        return 4 * (at + large_words(g))

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


def _segments(trace: Trace, guard: int) -> tuple:
    """The trace as block segments, computed once per trace: each allocation (or realloc) begins one
    that ends at the next op on its slot. Arrays of: need (guard included; -1 for memalign past 8),
    sort keys of its start and end (at one op, the old block leaves before the new one comes), and
    for a realloc the segment it continues (else -1)."""
    cached = _segments.cache  # (trace, its length, guard, arrays): the search asks for one trace many times
    if cached and cached[0] is trace and cached[1:3] == (len(trace), guard):
        return cached[3]
    need, start, end, prev = [], [], [], []
    open_at: dict[int, int] = {}
    for i, (op, slot, size, align) in enumerate(trace.ops):
        old = open_at.pop(slot, -1)
        if old >= 0:
            end[old] = 2 * i
        if op == FREE or (op == REALLOC and size == 0):
            continue
        open_at[slot] = len(need)
        need.append(-1 if op == MEMALIGN and align > 8 else max(size, 1) + guard)
        start.append(2 * i + 1)
        end.append(2 * len(trace.ops))
        prev.append(old if op == REALLOC else -1)
    arrays = tuple(np.array(a, dtype=np.int64) for a in (need, start, end, prev))
    _segments.cache = (trace, len(trace), guard, arrays)
    return arrays


_segments.cache = None


def class_peaks(trace: Trace, sizes: list[int], guard: int) -> list[int]:
    """Per class, the most blocks of it live at once, if every block stayed in its own class (a
    realloc that still fits its slot stays there, as in tm_alloc)."""
    if not sizes:
        return []
    need, start, end, prev = _segments(trace, guard)
    table = np.array(sizes, dtype=np.int64)
    k = np.searchsorted(table, need)
    k[(need < 0) | (k == len(sizes))] = -1
    for i in np.flatnonzero(prev >= 0):  # few: each depends on the class its block had
        p = k[prev[i]]
        if p >= 0 and need[i] >= 0 and need[i] <= sizes[p]:
            k[i] = p
    live = k >= 0
    cls = np.concatenate([k[live], k[live]])
    when = np.concatenate([start[live], end[live]])
    step = np.concatenate([np.ones(live.sum(), np.int64), -np.ones(live.sum(), np.int64)])
    order = np.lexsort((when, cls))
    cls, step = cls[order], step[order]
    running = np.cumsum(step)
    first = np.searchsorted(cls, np.arange(len(sizes)))  # each class's events, in time order
    base = np.where(first > 0, running[np.maximum(first - 1, 0)], 0)
    last = np.searchsorted(cls, np.arange(len(sizes)), side="right")
    peaks = [int((running[a:b] - base[c]).max()) if b > a else 0 for c, (a, b) in enumerate(zip(first, last))]
    return peaks


def align_slack(trace: Trace, granule: int) -> int:
    """Bytes a memalign-heavy trace may need beyond what one placement of the heap measured: where
    the heap lands decides each over-aligned block's gap, by up to align - granule bytes, so room
    for that many per such block live at once (the heap is only granule-aligned on a board)."""
    live: dict[int, int] = {}
    now = peak = 0
    for op, slot, _size, align in trace.ops:
        now -= live.pop(slot, 0)
        if op == MEMALIGN and align > granule:
            live[slot] = align - granule
            now += align - granule
            peak = max(peak, now)
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


def _coarse_moves(trace: Trace, best: AllocConfig, guard: int, room: int) -> list[AllocConfig]:
    """Big steps: a class folded into the next larger one (with the slots the merged class needs at
    its peak), or a pool cut by a tenth, a quarter or a half."""
    sizes, counts = [s for s, _ in best.classes], [n for _, n in best.classes]
    moves = []
    for k, n in enumerate(counts):
        if k + 1 < len(sizes):
            rest = sizes[:k] + sizes[k + 1:]
            moves.append((rest, class_peaks(trace, rest, guard)))
        for f in (0.5, 0.75, 0.9):
            if max(1, int(n * f)) != n:
                moves.append((sizes, counts[:k] + [max(1, int(n * f))] + counts[k + 1:]))
    return _distinct(moves, best, room)


def _fine_moves(trace: Trace, best: AllocConfig, guard: int, room: int) -> list[AllocConfig]:
    """Small steps: a pool one or two slots thinner, a class dropped (its requests go to the next
    larger class with a free slot, or to the large region), or folded into the next with its slots."""
    sizes, counts = [s for s, _ in best.classes], [n for _, n in best.classes]
    moves = []
    for k, n in enumerate(counts):
        moves += [(sizes, counts[:k] + [n - d] + counts[k + 1:]) for d in (1, 2) if d < n]
        rest_s, rest_c = sizes[:k] + sizes[k + 1:], counts[:k] + counts[k + 1:]
        moves.append((rest_s, rest_c))
        if k + 1 < len(sizes):
            moves.append((rest_s, rest_c[:k] + [rest_c[k] + n] + rest_c[k + 1:]))
    return _distinct(moves, best, room)


def _distinct(moves: list, best: AllocConfig, room: int) -> list[AllocConfig]:
    out = (_candidate(sizes, counts, best.granule, best.canaries, room) for sizes, counts in moves)
    return [m for m in dict.fromkeys(out) if m != best]


def _pool_search(trace: Trace, small_max: int, guard: int, canaries: bool, granule: int | None, max_spill: float,
                 room: int, evaluations: int) -> tuple[AllocConfig, tuple, dict] | None:
    """The fewest owned bytes with pools for requests up to small_max, of which at most max_spill
    may miss the pool path (every fitting pool full, or no class kept for them): steepest descent
    from one class per request size (with as many slots as its peak), in big steps and then in
    small ones, then the best granule. None if no config serves the trace."""
    from .native import search

    needs = sorted(max(size, 1) + guard for op, _s, size, align in trace.ops
                   if op != FREE and not (op == REALLOC and size == 0) and not (op == MEMALIGN and align > 8))
    sizes = _small_sizes(trace, guard, small_max)
    small_requests = bisect.bisect_right(needs, sizes[-1]) if sizes else 0

    def missed(r, cfg: AllocConfig) -> int:  # spilled, or above the largest class kept
        return r[5] + small_requests - bisect.bisect_right(needs, cfg.classes[-1][0] if cfg.classes else 0)

    def fits(r, cfg: AllocConfig) -> bool:
        return r is not None and r[1] == 0 and missed(r, cfg) <= max_spill * small_requests

    best = _candidate(sizes, class_peaks(trace, sizes, guard), granule or 16, canaries, room)
    (result,) = search(trace, [best])
    evaluated = 1
    if not fits(result, best):
        return None
    for step in (_coarse_moves, _fine_moves):  # descend in big steps, then in small ones
        while True:
            moves = step(trace, best, guard, room)
            if not moves or evaluated + len(moves) > evaluations:
                break
            found = search(trace, moves)
            evaluated += len(moves)
            scored = [(r[0], k) for k, r in enumerate(found) if fits(r, moves[k])]
            if not scored or min(scored)[0] >= result[0]:
                break
            k = min(scored)[1]
            best, result = moves[k], found[k]
    if granule is None:  # the granule that suits these classes best
        others = [replace(best, granule=g, heap_bytes=-(-best.pool_bytes // g) * g + room) for g in GRANULES
                  if g != best.granule]
        for cand, r in zip(others, search(trace, others)):
            evaluated += 1
            if fits(r, cand) and r[0] < result[0]:
                best, result = cand, r
    return best, result, {"small_requests": small_requests, "spills": missed(result, best), "evaluated": evaluated}


def choose_config(trace: Trace, canaries: bool = False, granule: int | None = None, small_max: int = 256,
                  max_spill: float = 0.02, pool_budget: float = 0.05,
                  reference: int | None = None) -> tuple[AllocConfig, dict]:
    """The config that serves the trace with the fewest owned bytes (before headroom), pools making
    the common path O(1) where they are affordable. Pools reserve their slots, so they cost bytes
    where a trace's small requests are spread thin: the search tries pools for requests up to
    small_max, then half that, down to none, and keeps the first whose heap is within pool_budget
    of `reference` -- the heap a first-fit malloc with in-band headers needs for the trace
    (newlib-nano's policy, modelled in C: what the firmware would use without tm_alloc) -- or else
    the fewest bytes. Of the requests the pools are for, at most max_spill may miss them (every
    fitting pool full, or no class kept for them) and take the large region.
    Returns the config and what the search measured: {'owned', 'large_peak', 'large_max',
    'high_water_granules', 'small_max', 'small_requests', 'spills', 'evaluated', 'reference'}."""
    from . import native

    guard = 4 if canaries else 0
    profile = trace.profile()
    room = min(1 << 30, max(64 * 1024, 4 * profile.peak_live_bytes + 2 * profile.largest_request + 4096))
    room = -(-room // 64) * 64
    evaluations = max(60, int(2e7 // max(1, len(trace))))  # replays the trace's length allows, per pool size
    if reference is None:
        reference = native.replay(trace, "newlib", repeat=0)["peak_heap_bytes"]
    limits = [small_max >> k for k in range(small_max.bit_length()) if small_max >> k >= 16] + [0]
    chosen, evaluated = None, 0
    for limit in limits:
        found = _pool_search(trace, limit, guard, canaries, granule, max_spill, room, evaluations)
        if found is None:
            continue
        evaluated += found[2]["evaluated"]
        if chosen is None or found[1][0] < chosen[1][0]:
            chosen = found + (limit,)
        if found[1][0] <= (1 + pool_budget) * reference:
            chosen = found + (limit,)
            break
    if chosen is None:
        raise TinymemError(f"{trace.source}: no tm_alloc config serves this trace "
                           f"(peak live {profile.peak_live_bytes:,} B, largest request {profile.largest_request:,} B)")
    best, result, info, limit = chosen
    owned, _failed, large_peak, large_max, high_water, _spills = result
    return best, {"owned": owned, "large_peak": large_peak, "large_max": large_max,
                  "high_water_granules": high_water // best.granule, "small_max": limit, **info,
                  "evaluated": evaluated, "reference": reference,
                  "align_slack_granules": -(-align_slack(trace, best.granule) // best.granule)}


def with_headroom(cfg: AllocConfig, measured: dict, headroom: float, budget: int | None) -> AllocConfig:
    """Pools and the large region grown by `headroom` (and by the memalign gaps another placement of
    the heap may need); then, with a budget (heap + metadata), the large region takes whatever the
    budget leaves."""
    classes = tuple((s, min(MAX_SLOTS, math.ceil(n * (1 + headroom)))) for s, n in cfg.classes)
    grown = replace(cfg, classes=classes, heap_bytes=0)
    large = math.ceil(measured["high_water_granules"] * (1 + headroom)) + measured.get("align_slack_granules", 0)
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
