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


def render_model(g: Graph, plan: MemoryPlan, out_dir: str | Path, host_main: bool = False) -> list[Path]:
    """Write tinymem_model.{c,h} (+ the portable kernels, + a host driver) into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = environment()

    def ptr(tensor_index: int) -> str:
        return f"(tm_arena + {plan.tensor_offset(tensor_index)})"

    steps = []
    for op in g.ops:
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
