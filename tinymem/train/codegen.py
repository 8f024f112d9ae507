"""The training firmware: one training step as straight-line C from codegen/templates/train/
(docs/training.md, "Generated training firmware").

Forward: the inference kernel calls, at the training plan's offsets, with the updated layers'
weights and folded biases in SRAM (the flash arrays keep the model's values, for resets).
Backward: the firmware/kernels/train calls in path order reversed, literal offsets. The model API
is inference's (tinymem_input/output/invoke), so the host and board drivers serve it unchanged.
Nothing here writes C: it computes the values the templates render.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import TinymemError
from ..model.graph import Graph, Op
from ..ops import opdef
from ..ops.base import Kernel
from ..ops.shape import braces
from .forward import layer_params
from .layers import LayerSpec, TrainGraph, train_graph
from .memory import CONTROL_BYTES, STATUS_BYTES

TRAIN_KERNEL_DIR = Path(__file__).resolve().parents[2] / "firmware" / "kernels" / "train"
MODES = {"eval": 0, "train": 1, "reset": 2}
STATUS_BAD_MODE, STATUS_BAD_LABEL = 1, 2  # status byte 5 (docs/training.md)


def _f32(v) -> str:
    """An exact float32 C literal (hex: no decimal round trip through double)."""
    return float(np.float32(v)).hex() + "f"


def c_f32(values) -> str:
    """Exact float32 C literals, 8 a line."""
    flat = [_f32(v) for v in np.asarray(values, np.float32).reshape(-1)] or ["0.0f"]
    return ",\n    ".join(", ".join(flat[i:i + 8]) for i in range(0, len(flat), 8))


def literal(fields: dict) -> str:
    """A designated initializer from field -> C literal."""
    return "{ " + ", ".join(f".{k} = {v}" for k, v in fields.items()) + " }"


# --- what the kernels and the test harness both need --------------------------------------------


@dataclass
class UpdateLayout:
    """tm_train_update's numbers for one updated op (its pointers are named by the template)."""

    spec: LayerSpec
    taps: int
    channel_stride: int
    tap_stride: int
    weights0: np.ndarray  # the kernel's int8 array, padding included
    folded0: np.ndarray  # int32
    bias0: np.ndarray  # int32

    @property
    def ints(self) -> dict:
        s = self.spec
        return {"channels": s.channels, "taps": self.taps, "channel_stride": self.channel_stride,
                "tap_stride": self.tap_stride, "weight_bytes": self.weights0.size, "w_channels": s.n_w,
                "input_zp": s.in_zp}


def update_layout(g: Graph, spec: LayerSpec) -> UpdateLayout:
    op = spec.op
    arrays = {a.name.split("_", 1)[1]: a.values for a in opdef(op).kernel(op, g, "p").arrays}
    c = spec.channels
    taps = g.t(op.inputs[1]).size // c
    dw = op.kind == "DEPTHWISE_CONV_2D"
    return UpdateLayout(spec, taps, 1 if dw else taps, c if dw else 1, arrays["w"].reshape(-1).astype(np.int8),
                        arrays["bias"].astype(np.int32), layer_params(g, op)[1])


def weight_scales(g: Graph, op: Op) -> np.ndarray:
    c = int(g.t(op.outputs[0]).shape[-1])
    return np.broadcast_to(np.asarray(g.t(op.inputs[1]).quant.scale, np.float32), (c,)).astype(np.float32)


def backward_ints(g: Graph, op: Op) -> dict:
    """The integer fields of an op's backward params struct (tm_train.h), by kind."""
    d = opdef(op)
    kind = op.kind
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        geo = d.geometry(op, g)
        return {"geo": geo, "groups": d.groups(op, g) if kind == "CONV_2D" else 1,
                "depth_mult": geo.out_c // geo.in_c if kind != "CONV_2D" else 1,
                "input_zp": g.t(op.inputs[0]).quant.scalar()[1]}
    if kind == "FULLY_CONNECTED":
        batches, in_f, out_f = d.dims(op, g)
        return {"batches": batches, "in_features": in_f, "out_features": out_f,
                "input_zp": g.t(op.inputs[0]).quant.scalar()[1]}
    if kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        return {"pool": d.kernel(op, g, "p").fields}
    if kind == "MEAN":
        kept, red = d.boxes(op, g)
        return {"out": kept, "red": red, "count": g.t(op.inputs[0]).size // g.t(op.outputs[0]).size,
                "in_size": g.t(op.inputs[0]).size}
    if kind == "PAD":
        shape, before, after = d.dims(op, g)
        return {"dims": len(shape), "in_shape": shape, "before": before, "after": after,
                "pad_value": d.pad_value(op, g)}
    return {"size": g.t(op.outputs[0]).size}


# --- rendering ------------------------------------------------------------------------------------


@dataclass
class _Ctx:
    """What the templates render, collected while walking the plan."""

    arrays: list = field(default_factory=list)  # {"ctype", "name", "data" or "size", "const", "f32"}
    structs: list = field(default_factory=list)  # {"type", "name", "fields"}
    flash_bytes: int = 0

    def const(self, ctype: str, name: str, values) -> str:
        values = np.asarray(values)
        self.arrays.append({"ctype": ctype, "name": name, "data": values, "const": True, "f32": ctype == "float"})
        self.flash_bytes += values.size * (1 if ctype == "int8_t" else 4)
        return name

    def sram(self, ctype: str, name: str, size: int) -> str:
        self.arrays.append({"ctype": ctype, "name": name, "size": max(int(size), 1), "const": False, "f32": False})
        return name

    def struct(self, ctype: str, name: str, fields: dict) -> str:
        self.structs.append({"type": ctype, "name": name, "fields": fields})
        return name


class _Renderer:
    def __init__(self, g: Graph, plan):
        self.g, self.plan = g, plan
        self.tg: TrainGraph = train_graph(g, plan.scheme)
        if [o.index for o in plan.path.ops] != [o.index for o in self.tg.path.ops]:
            raise TinymemError("the training plan was made for another backward path; plan this scheme again")
        self.ctx = _Ctx()
        self.probe: list[dict] = []  # SRAM parameter arrays, in the order the probe driver dumps them

    def ptr(self, t: int) -> str:
        return f"(tm_arena + {self.plan.tensor_offset(t)})"

    def grad(self, t: int) -> str:
        off = self.plan.grad_offset(t)
        if off % 4:
            raise TinymemError(f"the gradient of tensor {t} sits at arena byte {off}, not 4-byte aligned for float32")
        return f"TM_F32({off})"

    # -- forward
    def forward_step(self, env, op: Op) -> dict:
        from codegen.render import op_step

        k: Kernel = opdef(op).kernel(op, self.g, f"op{op.index}")
        spec = self.tg.layers.get(op.index)
        if spec is not None:
            # The kernel's fields name its arrays; the SRAM copies take those names, flash keeps
            # the model's values under *_flash for resets.
            moved = {"bias"} | ({"w"} if spec.n_w else set())
            for a in k.arrays:
                suffix = a.name[len(k.prefix) + 1:]
                if suffix in moved:
                    self.ctx.sram(a.ctype, a.name, a.values.size)
                    a.name += "_flash"
        self.ctx.flash_bytes += sum(a.nbytes for a in k.arrays)
        scratch = self.plan.scratch_offset(op.index)
        return op_step(env, self.g, op, k, self.ptr, f"(tm_arena + {scratch})" if scratch is not None else None)

    # -- updated layers
    def update_struct(self, spec: LayerSpec) -> str:
        i, ctx = spec.op.index, self.ctx
        lay = update_layout(self.g, spec)
        p = f"op{i}"
        ptrs = {"weights0": f"{p}_w_flash" if spec.n_w else f"{p}_w", "folded0": f"{p}_bias_flash",
                "bias0": ctx.const("int32_t", f"{p}_b0", lay.bias0),
                "coef_w": ctx.const("float", f"{p}_coef_w", spec.coef_w) if spec.n_w else "NULL",
                "coef_b": ctx.const("float", f"{p}_coef_b", spec.coef_b) if spec.bias else "NULL",
                "weights": f"{p}_w" if spec.n_w else "NULL", "folded": f"{p}_bias",
                "w_master": ctx.sram("float", f"{p}_w_master", spec.n_w * lay.taps) if spec.n_w else "NULL",
                "b_master": ctx.sram("float", f"{p}_b_master", spec.channels) if spec.bias else "NULL"}
        for key, n, dtype in (("weights", lay.weights0.size, "int8"), ("folded", spec.channels, "int32"),
                              ("w_master", spec.n_w * lay.taps, "float32"), ("b_master", spec.channels, "float32")):
            if ptrs[key] != "NULL":
                self.probe.append({"op": i, "key": key, "name": ptrs[key], "count": n, "dtype": dtype})
        return ctx.struct("tm_train_update", f"{p}_update", {**lay.ints, **ptrs})

    # -- backward
    def backward_step(self, op: Op, written: set[int]) -> list[dict]:
        """The calls of one backward step: {"fn", "params", "args"}."""
        g, ctx, p = self.g, self.ctx, f"op{op.index}"
        calls = []
        out = op.outputs[0]
        gy = self.grad(out)
        if op.index in self.tg.masks:
            lo, hi = self.tg.masks[op.index]
            calls.append({"fn": "tm_train_mask", "params": ctx.struct(
                "tm_train_mask_params", f"{p}_mask", {"size": g.t(out).size, "lo": lo, "hi": hi}),
                "args": [self.ptr(out), gy]})
        feeds = self.tg.feeds(op)
        accumulate = []
        for t in feeds:
            accumulate.append(int(t in written))
            written.add(t)
        ints = backward_ints(g, op)
        kind = op.kind
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            calls += self._layer_calls(op, ints, gy, feeds, accumulate)
        elif feeds and kind in ("ADD", "RELU", "RELU6", "RESHAPE", "SQUEEZE"):
            for j, (t, acc) in enumerate(zip(feeds, accumulate)):
                calls.append({"fn": "tm_train_copy", "params": ctx.struct(
                    "tm_train_copy_params", f"{p}_copy{j}", {"size": g.t(t).size, "accumulate": acc}),
                    "args": [gy, self.grad(t)]})
        elif feeds:
            x, gx, acc = op.inputs[0], self.grad(feeds[0]), accumulate[0]
            if kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
                struct = ctx.struct("tm_train_pool_params", f"{p}_bwd", {"pool": literal(ints["pool"]), "accumulate": acc})
                fn = "tm_train_avg_pool_backward" if kind == "AVERAGE_POOL_2D" else "tm_train_max_pool_backward"
                args = ([self.ptr(x)] if kind == "MAX_POOL_2D" else []) + [gy, gx]
            elif kind == "MEAN":
                fields = {"out_dims": len(ints["out"]), "red_dims": len(ints["red"])}
                for name in ("out", "red"):
                    if ints[name]:  # an empty box stays zero-initialized: C has no empty initializer list
                        fields[f"{name}_shape"] = braces(n for n, _ in ints[name])
                        fields[f"{name}_stride"] = braces(s for _, s in ints[name])
                fields.update({"count": _f32(ints["count"]), "in_size": ints["in_size"], "accumulate": acc})
                struct, fn, args = ctx.struct("tm_train_mean_params", f"{p}_bwd", fields), "tm_train_mean_backward", [gy, gx]
            else:  # PAD
                pad = {k: braces(v) if isinstance(v, list) else v for k, v in ints.items()}
                struct = ctx.struct("tm_train_pad_params", f"{p}_bwd", {"pad": literal(pad), "accumulate": acc})
                fn, args = "tm_train_pad_backward", [gy, gx]
            calls.append({"fn": fn, "params": struct, "args": args})
        return calls

    def _layer_calls(self, op: Op, ints: dict, gy: str, feeds: list[int], accumulate: list[int]) -> list[dict]:
        g, ctx, p = self.g, self.ctx, f"op{op.index}"
        spec = self.tg.layers.get(op.index)
        s_x = g.t(op.inputs[0]).quant.scalar()[0]
        fields = {k: v.c_literal() if k == "geo" else v for k, v in ints.items()}
        fields.update({"input_scale": _f32(s_x), "weights": f"{p}_w",
                       "w_scale": ctx.const("float", f"{p}_w_scale", weight_scales(g, op)) if feeds else "NULL",
                       "accumulate": accumulate[0] if feeds else 0,
                       "update": f"&{self.update_struct(spec)}" if spec is not None else "NULL"})
        fc = op.kind == "FULLY_CONNECTED"
        name = {"CONV_2D": "conv", "DEPTHWISE_CONV_2D": "depthwise", "FULLY_CONNECTED": "fc"}[op.kind]
        struct = ctx.struct("tm_train_fc_params" if fc else "tm_train_conv_params", f"{p}_bwd", fields)
        calls = []
        if feeds:
            calls.append({"fn": f"tm_train_{name}_input_grad", "params": struct, "args": [gy, self.grad(feeds[0])]})
        if spec is not None:
            args = [self.ptr(op.inputs[0]), gy, "lr"]
            if not fc:
                off = self.plan.bwd_scratch_offset(op.index)
                if spec.n_w and (off is None or off % 4):
                    raise TinymemError(f"{op.describe()}: the training plan has no float-aligned backward scratch for it")
                args.append(f"TM_F32({off})" if spec.n_w else "NULL")
            calls.append({"fn": f"tm_train_{name}_update", "params": struct, "args": args})
        return calls

    def context(self, env) -> dict:
        g, tg, plan = self.g, self.tg, self.plan
        forward = [self.forward_step(env, op) for op in tg.forward]
        written: set[int] = set()
        n = len(g.ops)
        backward = [{"op": op, "step": n + k, "calls": self.backward_step(op, written)}
                    for k, op in enumerate(reversed(tg.path.ops))]
        logits = tg.path.logits.outputs[0]
        lt = g.t(logits)
        scale, zp = lt.quant.scalar()
        inputs, outputs = training_io(g, plan)
        return {
            "model": g.name, "scheme": plan.scheme, "plan": plan, "forward": forward, "backward": backward,
            "layers": [tg.layers[i] for i in sorted(tg.layers)], "arrays": self.ctx.arrays,
            "structs": self.ctx.structs, "probe": self.probe, "inputs": inputs, "outputs": outputs,
            "logits": {"ptr": self.ptr(logits), "bytes": lt.nbytes, "grad": self.grad(logits)},
            "loss": literal({"classes": lt.size, "scale": _f32(scale), "zero_point": zp}),
            "num_steps": n + len(tg.path.ops), "default_lr": _f32(plan.scheme.lr),
            "flash_bytes": self.ctx.flash_bytes, "peak_sram_bytes": plan.train_peak_sram_bytes,
            "modes": MODES, "status_bad_mode": STATUS_BAD_MODE, "status_bad_label": STATUS_BAD_LABEL,
        }


def training_io(g: Graph, train_plan) -> tuple[list[dict], list[dict]]:
    """The firmware's inputs and outputs as the host and board drivers' templates describe them
    (name, bytes, shape, scale, zero_point; the sample also its arena offset)."""
    def tensor(t, **extra):
        s, z = t.quant.scalar()
        return {"name": t.name, "bytes": t.nbytes, "shape": list(t.shape), "scale": repr(float(s)), "zero_point": z,
                **extra}

    x, lt = g.t(g.inputs[0]), g.t(train_plan.path.logits.outputs[0])
    raw = {"shape": [CONTROL_BYTES], "scale": "1.0", "zero_point": 0}
    return ([tensor(x, offset=train_plan.tensor_offset(x.index)), {"name": "control", "bytes": CONTROL_BYTES, **raw}],
            [tensor(lt), {"name": "status", "bytes": STATUS_BYTES, **raw}])


def render_training(g: Graph, train_plan, out_dir: str | Path, host_main: bool = False,
                    probe: bool = False) -> list[Path]:
    """Write the training firmware's tinymem_model.{c,h} (+ the portable and training kernels, + the
    host driver of `tinymem sim`, + with `probe` a test driver that also dumps the SRAM
    parameters after every sample) into out_dir."""
    return _render(g, train_plan, out_dir, host_main, probe)[0]


def _render(g: Graph, train_plan, out_dir, host_main: bool, probe: bool) -> tuple[list[Path], dict]:
    from codegen.render import KERNEL_DIR, environment

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    env.filters["c_f32"] = c_f32
    ctx = _Renderer(g, train_plan).context(env)
    targets = [("tinymem_model.h", "train/tinymem_model.h.j2"), ("tinymem_model.c", "train/tinymem_model.c.j2")]
    if host_main:
        targets.append(("tinymem_host_main.c", "tinymem_host_main.c.j2"))
    if probe:
        targets.append(("tinymem_train_probe.c", "train/probe_main.c.j2"))
    written = []
    for name, template in targets:
        (out / name).write_text(env.get_template(template).render(ctx))
        written.append(out / name)
    for src in sorted(KERNEL_DIR.glob("*.[ch]")) + sorted(TRAIN_KERNEL_DIR.glob("*.[ch]")):
        shutil.copyfile(src, out / src.name)
        written.append(out / src.name)
    return written, ctx


def build_host_training(g: Graph, train_plan, workdir: str | Path | None = None, sanitize: bool = False,
                        probe: bool = False):
    """The training firmware compiled for the host: a TrainHostModel (tinymem/train/host.py)."""
    from .host import build_host_training as build

    return build(g, train_plan, workdir, sanitize, probe)


__all__ = ["MODES", "UpdateLayout", "backward_ints", "build_host_training", "c_f32", "render_training", "training_io",
           "update_layout", "weight_scales"]
