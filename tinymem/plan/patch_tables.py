"""The per-patch integers of a patch stage, laid out as the generated C holds them.

Every op of the stage calls its layer-wise kernel with per-patch geometry; a value that varies over
the R x C grid is stored by what it depends on: the same for every patch, a literal; only on the
patch row, an entry of an [R][m] table; only on the column, [C][m]; otherwise [R*C][m]. The layout
depends on the StagePlan alone (offsets are relative to each buffer, never arena offsets), so the
plan counts its flash bytes exactly as codegen (codegen/patch.py) emits it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..model.graph import Graph
from ..ops import opdef

TABLE_ENTRY_BYTES = 4  # int32_t


@dataclass(frozen=True)
class Entry:
    """Column `column` of table `table`, at the row the current patch selects by `index`."""

    table: str
    index: str  # "pi" (patch row), "pj" (patch column) or "pc" (patch number)
    column: int


Value = int | Entry


@dataclass
class Table:
    name: str
    index: str
    fields: list[str]  # what each column holds (a comment in the C)
    data: list[list[int]]  # one row per patch row / column / cell


class Tables:
    """Integers that vary over the grid, split into row / column / cell tables under one prefix."""

    def __init__(self, prefix: str, rows: int, cols: int):
        self.prefix, self.rows, self.cols = prefix, rows, cols
        self.by_kind: dict[str, list[tuple[str, list[int]]]] = {"rows": [], "cols": [], "cells": []}

    def value(self, name: str, values: list[list[int]]) -> Value:
        """values[i][j] at patch (i, j), as a literal or a table entry."""
        flat = [v for row in values for v in row]
        if len(set(flat)) == 1:
            return flat[0]
        if all(len(set(row)) == 1 for row in values):
            kind, index, column = "rows", "pi", [row[0] for row in values]
        elif all(len({values[i][j] for i in range(self.rows)}) == 1 for j in range(self.cols)):
            kind, index, column = "cols", "pj", list(values[0])
        else:
            kind, index, column = "cells", "pc", flat
        self.by_kind[kind].append((name, column))
        return Entry(f"{self.prefix}_{kind}", index, len(self.by_kind[kind]) - 1)

    def tables(self) -> list[Table]:
        out = []
        for kind, index in (("rows", "pi"), ("cols", "pj"), ("cells", "pc")):
            entries = self.by_kind[kind]
            if entries:
                n = len(entries[0][1])
                out.append(Table(f"{self.prefix}_{kind}", index, [e[0] for e in entries],
                                 [[e[1][k] for e in entries] for k in range(n)]))
        return out


@dataclass
class Read:
    """A streamed input's window, fetched into its per-patch buffer before an op reads it."""

    input: int  # position among the graph inputs (tinymem_read_input's index)
    tensor: int
    y0: Value
    y1: Value
    x0: Value
    x1: Value


@dataclass
class OpCode:
    op: int
    sets: list[tuple[str, Value]]  # params struct member -> its per-patch value
    inputs: list[tuple[int, Value]]  # per activation input: (tensor, element offset into its buffer)
    split_offset: Value | None  # op K writing the split tensor directly: offset of its patch; else None
    reads: list[Read] = field(default_factory=list)


@dataclass
class Copy:
    """Op K's per-patch result into its place in the split tensor (when not written directly)."""

    rows: Value
    row_bytes: Value
    src: Value  # offset in op K's per-patch buffer
    src_stride: Value
    dst: Value  # offset in the split tensor
    dst_stride: int


@dataclass
class StageCode:
    ops: list[OpCode]
    copy: Copy | None
    tables: list[Table]
    table_bytes: dict[int, int]  # stage op -> flash bytes of its tables (the copy's count for op K)
    uses_cell: bool


def stage_code(g: Graph, sp, an=None) -> StageCode:
    """The per-patch values of a StagePlan (tinymem.plan.patch); `an` (an Analysis) caches calls."""
    st, R, C = sp.stage, sp.schedule.rows, sp.schedule.cols

    def cells(fn) -> list[list[int]]:
        return [[fn(i, j) for j in range(C)] for i in range(R)]

    ops, tables, table_bytes = [], [], {}
    for s in st.ops:
        op = g.ops[s]
        y = op.outputs[0]
        acts = [t for t in op.inputs if t >= 0 and not g.t(t).is_const]
        calls = {}
        for i in range(R):
            for j in range(C):
                stored = tuple(sp.stored(i, j, t) if t >= 0 and not g.t(t).is_const else None for t in op.inputs)
                calls[i, j] = (an.call(s, sp.stored(i, j, y), stored) if an is not None else
                               opdef(op).patch_call(op, g, None, sp.stored(i, j, y), list(stored)))
        tab = Tables(f"op{s}", R, C)
        reads = []
        for x in sp.streamed:
            if st.first_use[x] == s:
                def edge(name, x=x):
                    return tab.value(f"input window {name}", cells(lambda i, j: getattr(sp.stored(i, j, x), name)))
                reads.append(Read(g.inputs.index(x), x, edge("y0"), edge("y1"), edge("x0"), edge("x1")))
        sets = [(name, tab.value(name, cells(lambda i, j, n=name: calls[i, j].fields[n]))) for name in calls[0, 0].fields]
        inputs = [(t, tab.value(f"input {pos} offset", cells(lambda i, j, p=pos: calls[i, j].offsets[p])))
                  for pos, t in enumerate(acts)]
        split_offset = None
        if y == st.split and sp.direct:
            width = int(g.t(y).shape[2]) * int(g.t(y).shape[3])
            split_offset = tab.value("row in the split tensor", cells(lambda i, j: sp.row_bounds[i] * width))
        ops.append(OpCode(s, sets, inputs, split_offset, reads))
        tables += tab.tables()
        table_bytes[s] = _nbytes(tab.tables())
    copy = None
    if not sp.direct:
        t = g.t(st.split)
        ch, width = int(t.shape[3]), int(t.shape[2])
        tab = Tables("split", R, C)

        def win(i, j):
            return sp.patch_window(i, j), sp.stored(i, j, st.split)

        copy = Copy(
            rows=tab.value("rows", cells(lambda i, j: win(i, j)[0].h)),
            row_bytes=tab.value("bytes per row", cells(lambda i, j: win(i, j)[0].w * ch)),
            src=tab.value("source offset", cells(lambda i, j: (
                (win(i, j)[0].y0 - win(i, j)[1].y0) * win(i, j)[1].w + win(i, j)[0].x0 - win(i, j)[1].x0) * ch)),
            src_stride=tab.value("source row", cells(lambda i, j: win(i, j)[1].w * ch)),
            dst=tab.value("destination offset", cells(lambda i, j: (win(i, j)[0].y0 * width + win(i, j)[0].x0) * ch)),
            dst_stride=width * ch,
        )
        tables += tab.tables()
        table_bytes[st.split_op] += _nbytes(tab.tables())
    return StageCode(ops, copy, tables, table_bytes, any(t.index == "pc" for t in tables))


def _nbytes(tables: list[Table]) -> int:
    return sum(TABLE_ENTRY_BYTES * len(t.data) * len(t.fields) for t in tables)
