"""ADD and MUL: int8 element-wise arithmetic with NumPy-style broadcasting.

TFLite's reference picks Add/Mul or BroadcastAdd6DSlow/BroadcastMul6DSlow by shape, but both
apply the same per-element function, so one broadcasting kernel matches either. Multipliers are
computed exactly as the kernels' Prepare does (ADD in double, MUL's scale product in float).
"""
from __future__ import annotations

import numpy as np

from . import register
from .armv7em import dsp_enabled
from .base import Kernel, OpDef, PatchCall, TinymemError, UnsupportedError, Window, check_shape, fused_range
from .shape import MAX_DIMS, braces, check_int8_const, raster_overlap, row_major_strides
from ..model.quant import quantize_multiplier, quantize_multiplier_smaller_than_one

ADD_LEFT_SHIFT = 20  # TFLite's headroom for int8 ADD (15 is its int16 value)
MAX_BROADCAST_RANK = 8  # BroadcastBinaryOpSimple's kMaxRank


def broadcast_dims(a_shape, b_shape, out_shape) -> list[tuple[int, int, int]]:
    """(extent, a stride, b stride) per loop, outermost first: size-1 output dims dropped and
    neighbours merged wherever both operands step through them contiguously (or not at all)."""
    rank = len(out_shape)

    def strides(shape):
        ext = (1,) * (rank - len(shape)) + tuple(shape)
        return [0 if n == 1 else s for n, s in zip(ext, row_major_strides(ext))]

    dims: list[tuple[int, int, int]] = []
    for n, x, y in zip(out_shape, strides(a_shape), strides(b_shape)):
        if n == 1:
            continue
        if dims and dims[-1][1] == x * n and dims[-1][2] == y * n:
            dims[-1] = (dims[-1][0] * n, x, y)
        else:
            dims.append((int(n), x, y))
    return dims or [(1, 0, 0)]


class _Binary(OpDef):
    function = ""
    struct = ""

    def operands(self, op, g):
        """(a, b) in kernel order: a constant operand always goes second (both ops commute)."""
        a, b = g.t(op.inputs[0]), g.t(op.inputs[1])
        return (b, a) if a.is_const else (a, b)

    def validate(self, op, g):
        super().validate(op, g)
        check_shape(op, len(op.inputs) == 2 and min(op.inputs) >= 0 and len(op.outputs) == 1,
                    "needs exactly two inputs and one output")
        a, b = g.t(op.inputs[0]), g.t(op.inputs[1])
        y = g.t(op.outputs[0])
        for pos, t in enumerate((a, b)):
            if t.is_const:
                check_int8_const(op, t, f"input {pos}")
        check_shape(op, not (a.is_const and b.is_const), "both inputs are constants (a foldable op)")
        for t in (a, b, y):
            check_shape(op, float(t.quant.scale[0]) > 0, f"{t.describe()} has a non-positive scale")
        try:
            want = np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise UnsupportedError(f"{op.describe()}: {a.describe()} and {b.describe()} do not broadcast") from None
        check_shape(op, tuple(y.shape) == tuple(want), f"output {y.describe()} should have shape {list(want)}")
        check_shape(op, len(want) <= MAX_BROADCAST_RANK, f"rank {len(want)} exceeds TFLite's broadcast limit of 8")
        dims = broadcast_dims(*(t.shape for t in self.operands(op, g)), y.shape)
        check_shape(op, len(dims) <= MAX_DIMS,
                    f"this broadcast pattern needs {len(dims)} loops; tinymem handles up to {MAX_DIMS}")
        fused_range(op, y)
        try:
            self.requant(*self.operands(op, g), y)
        except TinymemError as e:
            raise UnsupportedError(f"{op.describe()}: unsupported quantization scales ({e})") from None

    def macs(self, op, g):
        return g.t(op.outputs[0]).size

    def overlaps(self, op, g):
        # Output element t reads each operand at its broadcast position, then is written.
        y = g.t(op.outputs[0])
        rules = []
        for pos, i in enumerate(op.inputs):
            t = g.t(i)
            if not t.is_const:
                rules.append(raster_overlap(pos, np.broadcast_to(np.arange(t.size).reshape(t.shape), y.shape)))
        return rules

    def requant(self, a, b, y) -> dict:
        """Kind-specific struct fields (multipliers and shifts)."""
        raise NotImplementedError

    def kernel_function(self, requant: dict) -> str:
        """The kernel's name without its _s8 / _const_s8 ending, for the kernel set in use."""
        return self.function

    # --- patch-based inference ---------------------------------------------------------------
    # Activation operands are 4-D (a spatial size of 1 broadcasts); a constant operand must
    # broadcast over rows and columns. The kernel reads any sub-window through its strides.
    def input_window(self, op, g, out):
        y = g.t(op.outputs[0])
        if len(y.shape) != 4 or y.shape[0] != 1:
            return None
        wins = []
        for i in op.inputs:
            t = g.t(i)
            ext = (1,) * (4 - len(t.shape)) + tuple(t.shape)
            if t.is_const:
                if ext[1] != 1 or ext[2] != 1:
                    return None
                wins.append(None)
                continue
            if len(t.shape) != 4:
                return None
            wins.append(Window(*((out.y0, out.y1) if ext[1] > 1 else (0, 1)), *((out.x0, out.x1) if ext[2] > 1 else (0, 1))))
        return wins

    def _window_strides(self, t, out: Window, stored: Window | None) -> tuple[list[int], int]:
        """([row, column, channel] element strides, element offset) of operand t over output
        window `out` when t holds `stored` (a constant: the whole, spatially broadcast tensor)."""
        _, h, w, c = (1,) * (4 - len(t.shape)) + tuple(t.shape)
        width = stored.w if stored is not None else w
        strides = [width * c if h > 1 else 0, c if w > 1 else 0, 1 if c > 1 else 0]
        offset = 0
        if stored is not None:
            offset = (out.y0 - stored.y0) * strides[0] + (out.x0 - stored.x0) * strides[1]
        return strides, offset

    def patch_call(self, op, g, k, out, stored):
        y = g.t(op.outputs[0])
        a, b = self.operands(op, g)
        by_tensor = {i: s for i, s in zip(op.inputs, stored)}
        fields = {"bc.dims": 3, "bc.shape[0]": out.h, "bc.shape[1]": out.w, "bc.shape[2]": int(y.shape[3])}
        for name, t in (("a", a), ("b", b)):
            strides, _ = self._window_strides(t, out, by_tensor[t.index] if not t.is_const else None)
            fields.update({f"bc.{name}_stride[{d}]": v for d, v in enumerate(strides)})
        offsets = [self._window_strides(g.t(i), out, s)[1] for i, s in zip(op.inputs, stored) if not g.t(i).is_const]
        return PatchCall(fields, offsets)

    def patch_overlaps(self, op, g, out, stored):
        c = int(g.t(op.outputs[0]).shape[3])
        idx = np.indices((out.h, out.w, c)).reshape(3, -1)
        rules = []
        for pos, (i, s) in enumerate(zip(op.inputs, stored)):
            if not g.t(i).is_const:
                strides, offset = self._window_strides(g.t(i), out, s)
                rules.append(raster_overlap(pos, offset + np.tensordot(strides, idx, axes=1)))
        return rules

    def kernel(self, op, g, prefix):
        a, b = self.operands(op, g)
        y = g.t(op.outputs[0])
        ext, sa, sb = zip(*broadcast_dims(a.shape, b.shape, y.shape))
        act_min, act_max = fused_range(op, y)
        requant = self.requant(a, b, y)
        k = Kernel(prefix, self.kernel_function(requant) + ("_const_s8" if b.is_const else "_s8"), self.struct)
        k.fields = {
            "bc": f"{{ .dims = {len(ext)}, .shape = {braces(ext)}, .a_stride = {braces(sa)}, .b_stride = {braces(sb)} }}",
            "a_offset": -a.quant.scalar()[1], "b_offset": -b.quant.scalar()[1], **requant,
            "output_offset": y.quant.scalar()[1], "act_min": act_min, "act_max": act_max,
        }
        if b.is_const:
            k.fields["b_const"] = k.array("b", "int8_t", b.data.reshape(-1))
        return k


@register
class Add(_Binary):
    kinds = ("ADD",)
    function = "tm_add"
    struct = "tm_add_params"

    def kernel_function(self, requant):
        # The DSP kernel takes the same parameters; its rescales are right shifts only (a real
        # multiplier that rounds up to 2^31 becomes shift 1: the portable kernel takes that).
        right = all(requant[f] <= 0 for f in ("a_shift", "b_shift", "output_shift"))
        return "tm_dsp_add" if dsp_enabled() and right else self.function

    def requant(self, a, b, y):
        # Both inputs rescaled to twice the larger input scale, then that sum to the output.
        sa, sb, sy = (float(t.quant.scale[0]) for t in (a, b, y))
        twice_max = 2.0 * max(sa, sb)
        out_real = twice_max / (float(1 << ADD_LEFT_SHIFT) * sy)
        if out_real >= 1.0:
            raise TinymemError(f"output scale {sy:.6g} is too small for inputs of scale {sa:.6g} and {sb:.6g}: "
                               f"TFLite's int8 ADD needs 2 * max input scale < 2^20 * output scale")
        (am, ash), (bm, bsh), (om, osh) = (quantize_multiplier_smaller_than_one(r)
                                           for r in (sa / twice_max, sb / twice_max, out_real))
        return {"left_shift": ADD_LEFT_SHIFT, "a_multiplier": am, "a_shift": ash, "b_multiplier": bm,
                "b_shift": bsh, "output_multiplier": om, "output_shift": osh}


@register
class Mul(_Binary):
    kinds = ("MUL",)
    function = "tm_mul"
    struct = "tm_mul_params"

    def requant(self, a, b, y):
        # mul.cc computes input1_scale * input2_scale / output_scale in float before widening.
        s = np.float32(a.quant.scale[0]) * np.float32(b.quant.scale[0]) / np.float32(y.quant.scale[0])
        m, sh = quantize_multiplier(float(s))
        return {"output_multiplier": m, "output_shift": sh}
