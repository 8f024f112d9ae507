"""C for a patch stage (tinymem/plan/patch.py): the grid loop running ops 0..K on each patch.

The per-patch values and their tables come laid out from the plan (tinymem/plan/patch_tables.py,
which also counts their flash); here they only become C expressions over the arena offsets."""
from __future__ import annotations

from jinja2 import Environment

from tinymem.model.graph import Graph
from tinymem.ops import opdef
from tinymem.plan.memory import MemoryPlan
from tinymem.plan.patch_tables import Entry, Value


def c_value(v: Value) -> str:
    return f"{v.table}[{v.index}][{v.column}]" if isinstance(v, Entry) else str(v)


def arena(offset: int, extra: Value = 0) -> str:
    return f"(tm_arena + {offset})" if extra == 0 else f"(tm_arena + {offset} + {c_value(extra)})"


def patch_stage(g: Graph, plan: MemoryPlan, env: Environment) -> tuple[str, str]:
    """(declarations, code) of the patch stage."""
    sp = plan.patch
    st, code = sp.stage, sp.code

    def buffer(t: int) -> int:  # per-patch buffer, else the whole tensor (a graph input kept in the arena)
        return plan.offsets[sp.local_buffer[t]] if t in sp.local_buffer else plan.tensor_offset(t)

    ops = []
    for oc in code.ops:
        op = g.ops[oc.op]
        y = op.outputs[0]
        scratch = sp.scratch_buffer.get(oc.op)
        out = arena(plan.tensor_offset(y), oc.split_offset) if oc.split_offset is not None else arena(buffer(y))
        args = [arena(buffer(t), off) for t, off in oc.inputs] + [out]
        args += [arena(plan.offsets[scratch])] if scratch is not None else []
        reads = [{"input": r.input, "window": [c_value(v) for v in (r.y0, r.y1, r.x0, r.x1)],
                  "dst": arena(buffer(r.tensor))} for r in oc.reads]
        ops.append({"op": op, "k": opdef(op).kernel(op, g, f"op{oc.op}"), "reads": reads, "args": args,
                    "sets": [(name, c_value(v)) for name, v in oc.sets]})
    copy = None
    if code.copy is not None:
        c = code.copy
        copy = {"rows": c_value(c.rows), "bytes": c_value(c.row_bytes), "src": arena(buffer(st.split), c.src),
                "src_stride": c_value(c.src_stride), "dst": arena(plan.tensor_offset(st.split), c.dst),
                "dst_stride": c.dst_stride}
    module = env.get_template("patch/stage.c.j2").make_module({
        "sp": sp, "ops": ops, "tables": code.tables, "copy": copy, "rows": sp.schedule.rows,
        "cols": sp.schedule.cols, "uses_cell": code.uses_cell, "split": g.t(st.split),
        "streamed": [g.t(t) for t in sp.streamed]})
    return module.decl(), module.code()
