"""One entry point: render_model(graph, plan, out_dir) writes a self-contained C bundle.

Codegen decides nothing about memory: offsets come from the plan, parameters from the op
registry. Templates own every line of emitted C.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from tinymem.model.graph import Graph
from tinymem.ops import opdef
from tinymem.plan.memory import MemoryPlan

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
FIRMWARE_DIR = Path(__file__).resolve().parents[1] / "firmware"
KERNEL_DIR = FIRMWARE_DIR / "kernels" / "portable"


def c_array(values: np.ndarray, per_line: int = 24) -> str:
    """Array body for a C initializer: numbers, `per_line` a line, indented."""
    flat = np.asarray(values).reshape(-1).tolist()
    if not flat:
        return "0"
    lines = (", ".join(map(str, flat[i:i + per_line])) for i in range(0, len(flat), per_line))
    return ",\n    ".join(lines)


def c_ident(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text)


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["c_array"] = c_array
    env.filters["c_ident"] = c_ident
    env.filters["c_comment"] = lambda s: str(s).replace("*/", "* /")
    return env


def _io(g: Graph, plan: MemoryPlan, indices: list[int]) -> list[dict]:
    out = []
    for i in indices:
        t = g.t(i)
        scale, zp = t.quant.scalar()
        out.append({"name": t.name, "offset": plan.tensor_offset(i), "bytes": t.nbytes,
                    "shape": list(t.shape), "scale": repr(float(scale)), "zero_point": zp})
    return out


class _Table:
    """Integers that vary over a patch grid, split by what they depend on: a value the same for
    every patch is a literal, one that depends only on the patch row goes in a [R][m] table, only
    on the column in a [C][m] table, otherwise in a [R*C][m] table. Keeps flash small."""

    def __init__(self, prefix: str, rows: int, cols: int):
        self.prefix, self.rows, self.cols = prefix, rows, cols
        self.row, self.col, self.cell = [], [], []  # (name, values) in C order

    def expr(self, name: str, values: list[list[int]]) -> str:
        """A C expression for values[i][j] at patch (pi, pj)."""
        flat = [v for row in values for v in row]
        if len(set(flat)) == 1:
            return str(flat[0])
        if all(len(set(row)) == 1 for row in values):
            self.row.append((name, [row[0] for row in values]))
            return f"{self.prefix}_rows[pi][{len(self.row) - 1}]"
        if all(len({values[i][j] for i in range(self.rows)}) == 1 for j in range(self.cols)):
            self.col.append((name, list(values[0])))
            return f"{self.prefix}_cols[pj][{len(self.col) - 1}]"
        self.cell.append((name, flat))
        return f"{self.prefix}_cells[pc][{len(self.cell) - 1}]"

    def tables(self) -> list[dict]:
        out = []
        for kind, entries, n in (("rows", self.row, self.rows), ("cols", self.col, self.cols),
                                 ("cells", self.cell, self.rows * self.cols)):
            if entries:
                out.append({"name": f"{self.prefix}_{kind}", "n": n, "m": len(entries),
                            "fields": [e[0] for e in entries],
                            "data": [[e[1][k] for e in entries] for k in range(n)]})
        return out

    @property
    def nbytes(self) -> int:
        return 4 * (self.rows * len(self.row) + self.cols * len(self.col) + self.rows * self.cols * len(self.cell))


def _patch_stage(g: Graph, plan: MemoryPlan, env: Environment) -> tuple[str, str]:
    """(declarations, code) of the patch stage: the grid loop running ops 0..K on each patch."""
    sp = plan.patch
    st, R, C = sp.stage, sp.schedule.rows, sp.schedule.cols
    grid = [(i, j) for i in range(R) for j in range(C)]

    def cells(fn) -> list[list[int]]:
        return [[fn(i, j) for j in range(C)] for i in range(R)]

    def arena(offset: int, extra: str) -> str:
        return f"(tm_arena + {offset})" if extra == "0" else f"(tm_arena + {offset} + {extra})"

    ops, tables, uses_cell = [], [], False
    for s in st.ops:
        op = g.ops[s]
        d = opdef(op)
        k = d.kernel(op, g, f"op{s}")
        y = op.outputs[0]
        acts = [i for i in op.inputs if i >= 0 and not g.t(i).is_const]
        calls = {}
        for i, j in grid:
            stored = [sp.stored(i, j, t) if t >= 0 and not g.t(t).is_const else None for t in op.inputs]
            calls[i, j] = d.patch_call(op, g, k, sp.stored(i, j, y), stored)
        tab = _Table(f"op{s}", R, C)
        sets = [(name, tab.expr(name, cells(lambda i, j, n=name: calls[i, j].fields[n]))) for name in calls[0, 0].fields]
        inputs = []
        for pos, t in enumerate(acts):
            base = plan.tensor_offset(t) if t in st.inputs else plan.offsets[sp.local_buffer[t]]
            inputs.append(arena(base, tab.expr(f"input {pos} offset", cells(lambda i, j, p=pos: calls[i, j].offsets[p]))))
        if y == st.split and sp.direct:
            width = int(g.t(y).shape[2]) * int(g.t(y).shape[3])
            out = arena(plan.tensor_offset(y), tab.expr("row in the split tensor", cells(lambda i, j: sp.row_bounds[i] * width)))
        else:
            out = arena(plan.offsets[sp.local_buffer[y]], "0")
        scratch = sp.scratch_buffer.get(s)
        args = inputs + [out] + ([arena(plan.offsets[scratch], "0")] if scratch is not None else [])
        uses_cell |= bool(tab.cell)
        tables += tab.tables()
        ops.append({"op": op, "k": k, "sets": sets, "args": args, "table_bytes": tab.nbytes})
    copy = None
    if not sp.direct:
        t = g.t(st.split)
        ch, width = int(t.shape[3]), int(t.shape[2])
        tab = _Table("split", R, C)

        def win(i, j):
            return sp.patch_window(i, j), sp.stored(i, j, st.split)

        copy = {
            "rows": tab.expr("rows", cells(lambda i, j: win(i, j)[0].h)),
            "bytes": tab.expr("bytes per row", cells(lambda i, j: win(i, j)[0].w * ch)),
            "src": arena(plan.offsets[sp.local_buffer[st.split]], tab.expr("source offset", cells(
                lambda i, j: ((win(i, j)[0].y0 - win(i, j)[1].y0) * win(i, j)[1].w + win(i, j)[0].x0 - win(i, j)[1].x0) * ch))),
            "src_stride": tab.expr("source row", cells(lambda i, j: win(i, j)[1].w * ch)),
            "dst": arena(plan.tensor_offset(st.split), tab.expr("destination offset", cells(
                lambda i, j: (win(i, j)[0].y0 * width + win(i, j)[0].x0) * ch))),
            "dst_stride": width * ch,
        }
        uses_cell |= bool(tab.cell)
        tables += tab.tables()
    module = env.get_template("patch/stage.c.j2").make_module({
        "sp": sp, "ops": ops, "tables": tables, "copy": copy, "rows": R, "cols": C, "uses_cell": uses_cell,
        "split": g.t(st.split)})
    return module.decl(), module.code()


def render_model(g: Graph, plan: MemoryPlan, out_dir: str | Path, host_main: bool = False) -> list[Path]:
    """Write tinymem_model.{c,h} (+ the portable kernels, + a host driver) into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = environment()

    def ptr(tensor_index: int) -> str:
        return f"(tm_arena + {plan.tensor_offset(tensor_index)})"

    steps = []
    stage = plan.patch.stage.ops if getattr(plan, "patch", None) is not None else range(0)
    if len(stage):
        stage_decl, stage_code = _patch_stage(g, plan, env)
    for op in g.ops:
        if op.index in stage:
            first = op.index == stage[0]
            steps.append({
                "op": op, "kernel": None, "decl": stage_decl if first else "",
                "call": stage_code if first else f"/* runs patch by patch in the loop of op {stage[0]} */",
                "live_bytes": plan.layers[op.index].live_bytes,
            })
            continue
        d = opdef(op)
        k = d.kernel(op, g, f"op{op.index}")
        scratch = plan.scratch_offset(op.index)
        inputs = [ptr(i) for i in op.inputs if i >= 0 and not g.t(i).is_const]
        outputs = [ptr(i) for i in op.outputs]
        module = env.get_template(k.template).make_module({"k": k, "op": op})
        steps.append({
            "op": op, "kernel": k,
            "decl": module.decl(),
            "call": module.call(inputs, outputs, f"(tm_arena + {scratch})" if scratch is not None else None),
            "live_bytes": plan.layers[op.index].live_bytes,
        })
    ctx = {
        "model": g.name, "plan": plan, "steps": steps,
        "inputs": _io(g, plan, g.inputs), "outputs": _io(g, plan, g.outputs),
    }
    written = []
    for name in ("tinymem_model.h", "tinymem_model.c") + (("tinymem_host_main.c",) if host_main else ()):
        path = out_dir / name
        path.write_text(env.get_template(name + ".j2").render(ctx))
        written.append(path)
    for src in sorted(KERNEL_DIR.glob("*.[ch]")):
        shutil.copyfile(src, out_dir / src.name)
        written.append(out_dir / src.name)
    return written
