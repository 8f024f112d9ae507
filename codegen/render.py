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
from tinymem.ops.isa import ARMV7EM, PORTABLE, kernel_isa
from tinymem.plan.memory import MemoryPlan

from .patch import patch_stage

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
FIRMWARE_DIR = Path(__file__).resolve().parents[1] / "firmware"
KERNEL_DIR = FIRMWARE_DIR / "kernels" / "portable"
# Kernel sets beyond the portable one: (directory, umbrella header) copied beside it when a plan uses it.
EXTRA_KERNELS = {ARMV7EM: (FIRMWARE_DIR / "kernels" / "armv7em", "tm_dsp_kernels.h")}


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
    streamed = plan.patch.streamed if getattr(plan, "patch", None) is not None else []
    out = []
    for i in indices:
        t = g.t(i)
        scale, zp = t.quant.scalar()
        out.append({"name": t.name, "offset": None if i in streamed else plan.tensor_offset(i), "bytes": t.nbytes,
                    "shape": list(t.shape), "scale": repr(float(scale)), "zero_point": zp})
    return out


def op_step(env: Environment, g: Graph, op, k, ptr, scratch: str | None) -> dict:
    """One op of a straight-line invoke: its declarations (constant arrays, params struct) and
    its kernel call, with tensor pointers from `ptr(tensor index)` (a C expression). Shared by
    inference and the training firmware (tinymem/train/codegen.py), which plans other offsets."""
    inputs = [ptr(i) for i in op.inputs if i >= 0 and not g.t(i).is_const]
    outputs = [ptr(i) for i in op.outputs]
    module = env.get_template(k.template).make_module({"k": k, "op": op})
    return {"op": op, "kernel": k, "decl": module.decl(), "call": module.call(inputs, outputs, scratch)}


def render_model(g: Graph, plan: MemoryPlan, out_dir: str | Path, host_main: bool = False) -> list[Path]:
    """Write tinymem_model.{c,h} (+ the kernels, + a host driver) into out_dir, with the kernel
    set the plan was made for (ops report kernels, scratch and overlaps for it)."""
    with kernel_isa(getattr(plan, "isa", PORTABLE)):
        return _render_model(g, plan, out_dir, host_main)


def _render_model(g: Graph, plan: MemoryPlan, out_dir: str | Path, host_main: bool) -> list[Path]:
    extra = EXTRA_KERNELS.get(getattr(plan, "isa", PORTABLE))  # (directory, header) of a kernel set
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = environment()

    def ptr(tensor_index: int) -> str:
        return f"(tm_arena + {plan.tensor_offset(tensor_index)})"

    steps = []
    stage = plan.patch.stage.ops if getattr(plan, "patch", None) is not None else range(0)
    if len(stage):
        stage_decl, stage_code = patch_stage(g, plan, env)
    for op in g.ops:
        if op.index in stage:
            first = op.index == stage[0]
            steps.append({
                "op": op, "kernel": None, "decl": stage_decl if first else "",
                "call": stage_code if first else f"/* runs patch by patch in the loop of op {stage[0]} */",
                "live_bytes": plan.layers[op.index].live_bytes, "timed": False,  # each op times itself in the loop
            })
            continue
        k = opdef(op).kernel(op, g, f"op{op.index}")
        scratch = plan.scratch_offset(op.index)
        steps.append({**op_step(env, g, op, k, ptr, f"(tm_arena + {scratch})" if scratch is not None else None),
                      "live_bytes": plan.layers[op.index].live_bytes})
    ctx = {
        "model": g.name, "plan": plan, "steps": steps,
        "inputs": _io(g, plan, g.inputs), "outputs": _io(g, plan, g.outputs),
        "kernel_headers": [extra[1]] if extra else [],
    }
    written = []
    for name in ("tinymem_model.h", "tinymem_model.c") + (("tinymem_host_main.c",) if host_main else ()):
        path = out_dir / name
        path.write_text(env.get_template(name + ".j2").render(ctx))
        written.append(path)
    for src in [f for d in [KERNEL_DIR] + ([extra[0]] if extra else []) for f in sorted(d.glob("*.[ch]"))]:
        shutil.copyfile(src, out_dir / src.name)
        written.append(out_dir / src.name)
    return written
