"""Allocation traces: the CSV users write or firmware records, parsed into dense ops.

A trace is a CSV whose header is `op,id,size` (a fourth column `align` is allowed), then one
event a line: `alloc,ID,SIZE`, `free,ID,`, `realloc,ID,SIZE`, `calloc,ID,SIZE` (calloc(1, SIZE))
and `memalign,ID,SIZE,ALIGN`. ID names a block (any token without a comma); it may be reused
once the block is freed. Blank lines and lines starting with '#' are skipped. Every error names
the file and the line.

Parsed, each block gets a *slot*, the lowest free one (the C replay keeps one pointer per slot),
and the trace is packed as the C side's tm_trace_op_t: op u8, 3 pad bytes, slot, size, align u32.
"""
from __future__ import annotations

import heapq
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TinymemError

OPS = ("alloc", "free", "realloc", "calloc", "memalign")
ALLOC, FREE, REALLOC, CALLOC, MEMALIGN = range(5)
PACK = struct.Struct("<B3xIII")
MAX_SIZE = 1 << 30


@dataclass
class Trace:
    ops: list[tuple[int, int, int, int]] = field(default_factory=list)  # (op, slot, size, align)
    n_slots: int = 0
    source: str = "trace"

    def __len__(self) -> int:
        return len(self.ops)

    def pack(self) -> bytes:
        return b"".join(PACK.pack(*o) for o in self.ops)

    def profile(self) -> "Profile":
        return Profile.of(self)

    def write_csv(self, path: str | Path) -> None:
        lines = ["op,id,size"]
        for op, slot, size, align in self.ops:
            name = f"b{slot}"
            lines.append(f"free,{name}," if op == FREE else
                         f"memalign,{name},{size},{align}" if op == MEMALIGN else f"{OPS[op]},{name},{size}")
        Path(path).write_text("\n".join(lines) + "\n")


@dataclass
class Profile:
    """What the trace asks of an allocator, request sizes as made (no allocator overhead)."""
    ops: int
    peak_live_bytes: int
    peak_live_blocks: int
    largest_request: int
    sizes: dict[int, int]  # request size -> how many requests

    @classmethod
    def of(cls, t: Trace) -> "Profile":
        live: dict[int, int] = {}
        total = peak = peak_blocks = largest = 0
        sizes: dict[int, int] = {}
        for op, slot, size, _align in t.ops:
            total -= live.pop(slot, 0)
            if op != FREE and not (op == REALLOC and size == 0):
                live[slot] = size
                total += size
                sizes[size] = sizes.get(size, 0) + 1
                largest = max(largest, size)
            peak = max(peak, total)
            peak_blocks = max(peak_blocks, len(live))
        return cls(len(t.ops), peak, peak_blocks, largest, sizes)

    def as_dict(self) -> dict:
        return {"ops": self.ops, "peak_live_bytes": self.peak_live_bytes, "peak_live_blocks": self.peak_live_blocks,
                "largest_request_bytes": self.largest_request, "distinct_sizes": len(self.sizes)}


class _Builder:
    """Turns named-block events into slot ops, checking that each event makes sense."""

    def __init__(self, where: str):
        self.where, self.trace = where, Trace(source=where)
        self.slot_of: dict[str, tuple[int, int]] = {}  # id -> (slot, line it was allocated at)
        self.free_slots: list[int] = []

    def fail(self, line: int, why: str) -> TinymemError:
        return TinymemError(f"{self.where}:{line}: {why}")

    def add(self, line: int, op: int, name: str, size: int, align: int) -> None:
        live = self.slot_of.get(name)
        if op in (ALLOC, CALLOC, MEMALIGN):
            if live:
                raise self.fail(line, f"block '{name}' is allocated again, but it is still live (allocated at line {live[1]})")
            slot = heapq.heappop(self.free_slots) if self.free_slots else len(self.slot_of)
            self.slot_of[name] = (slot, line)
            self.trace.n_slots = max(self.trace.n_slots, slot + 1)
        elif not live:
            raise self.fail(line, f"{OPS[op]} of block '{name}', which is not live (never allocated, or freed already)")
        else:
            slot = live[0]
            if op == FREE or size == 0:  # realloc(p, 0) frees p
                del self.slot_of[name]
                heapq.heappush(self.free_slots, slot)
        self.trace.ops.append((op, slot, size, align))


def _int(b: _Builder, line: int, text: str, what: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise b.fail(line, f"{what} must be a whole number of bytes, got {text!r}") from None
    if not 0 <= v <= MAX_SIZE:
        raise b.fail(line, f"{what} {v} is outside 0..{MAX_SIZE}")
    return v


def parse_lines(lines, where: str = "trace") -> Trace:
    b = _Builder(where)
    header_seen = False
    for number, raw in enumerate(lines, 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        cells = [c.strip() for c in text.split(",")]
        if not header_seen:
            if cells[:3] != ["op", "id", "size"] or cells[3:] not in ([], ["align"]):
                raise b.fail(number, f"the header must be 'op,id,size' (or 'op,id,size,align'), got {text!r}")
            header_seen = True
            continue
        op_name = cells[0].lower()
        if op_name not in OPS:
            raise b.fail(number, f"unknown op {cells[0]!r}; expected one of {', '.join(OPS)}")
        op = OPS.index(op_name)
        want = 4 if op == MEMALIGN else 3
        if len(cells) == 4 and op != MEMALIGN and cells[3] == "":
            cells = cells[:3]  # a trailing empty align column
        if len(cells) != want and not (op == FREE and len(cells) == 2):
            raise b.fail(number, f"'{op_name}' takes {want} fields ({'op,id,size,align' if want == 4 else 'op,id,size'}), "
                                 f"got {len(cells)}: {text!r}")
        name = cells[1]
        if not name:
            raise b.fail(number, "the block id is empty")
        size = align = 0
        if op == FREE:
            if len(cells) > 2 and cells[2] not in ("", "0"):
                raise b.fail(number, f"free takes no size, got {cells[2]!r}")
        else:
            size = _int(b, number, cells[2], "size")
        if op == MEMALIGN:
            align = _int(b, number, cells[3], "align")
            if align == 0 or align & (align - 1):
                raise b.fail(number, f"align must be a power of two, got {align}")
        b.add(number, op, name, size, align)
    if not header_seen:
        raise TinymemError(f"{where}: empty trace (expected the header 'op,id,size')")
    return b.trace


def load_trace(path: str | Path) -> Trace:
    p = Path(path)
    try:
        with p.open(encoding="utf-8", errors="replace") as f:
            return parse_lines(f, str(p))
    except FileNotFoundError:
        raise TinymemError(f"{p}: no such trace file") from None
    except IsADirectoryError:
        raise TinymemError(f"{p}: is a directory, not a trace file") from None


def from_events(events: list[tuple[str, int, int, int, int]], where: str = "firmware") -> Trace:
    """A trace from pointer events as tm_alloc's trace mode reports them: (op letter, pointer in,
    size, align, pointer out). Block ids follow the block through realloc moves."""
    b = _Builder(where)
    name_of: dict[int, str] = {}
    serial = 0
    for number, (letter, p_in, size, align, p_out) in enumerate(events, 1):
        if letter in "acm":
            if p_out:
                serial += 1
                name_of[p_out] = f"b{serial}"
                b.add(number, {"a": ALLOC, "c": CALLOC, "m": MEMALIGN}[letter], name_of[p_out], size, align)
        elif letter == "f":
            if p_in:
                b.add(number, FREE, name_of.pop(p_in, f"?{p_in:#x}"), 0, 0)
        elif letter == "r":
            if not p_in:  # realloc(NULL, n) is malloc(n)
                if p_out:
                    serial += 1
                    name_of[p_out] = f"b{serial}"
                    b.add(number, ALLOC, name_of[p_out], size, 0)
            elif size == 0 or p_out:
                name = name_of.pop(p_in, f"?{p_in:#x}")
                b.add(number, REALLOC, name, size, 0)
                if p_out:
                    name_of[p_out] = name
        else:
            raise b.fail(number, f"unknown trace event {letter!r}")
    return b.trace
