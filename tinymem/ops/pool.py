"""AVERAGE_POOL_2D, MAX_POOL_2D and MEAN (int8).

Pooling follows TFLite's reference_integer_ops AveragePool/MaxPool: raw int8 values (input and
output quantization must match), taps outside the image skipped and left out of the average's
count, rounding half away from zero.

MEAN: for int8, BUILTIN_REF (reduce.cc, EvalMean with kReference) always takes
reference_ops::QuantizedMeanOrSum, whatever the axes, keep_dims or quantization (the special 4-D
[1, 2] Mean kernel is only used by the optimized kernels): an int32 sum over the reduced axes,
minus zero point * count, times QuantizeMultiplier(input_scale / output_scale) with 1/count
folded into the multiplier by an integer division, plus the output zero point, clamped to int8.
"""
from __future__ import annotations

import numpy as np

from . import register
from .armv7em import DW_QUAD, dsp_enabled
from .base import (
    Kernel, OpDef, PatchCall, TinymemError, UnsupportedError, Window, axis_window, check_shape, const_input, fused_range,
    wrap_int32,
)
from .shape import MAX_DIMS, braces, raster_overlap, row_major_strides
from ..model.quant import quantize_multiplier

PADDING_SAME, PADDING_VALID = 0, 1


def pool_axis(padding: int, size: int, k: int, stride: int) -> tuple[int, int]:
    """(output size, padding before) along one axis, as TFLite's ComputePaddingHeightWidth."""
    out = (size + stride - 1) // stride if padding == PADDING_SAME else (size + stride - k) // stride
    return out, max(((out - 1) * stride + k - size) // 2, 0)


def window_starts(out: int, stride: int, pad: int, k: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output coordinate: first input coordinate of the clipped window and its tap count."""
    origin = np.arange(out) * stride - pad
    start, end = np.maximum(origin, 0), np.minimum(origin + k, size)
    return start, end - start


class _Pool(OpDef):
    function = ""

    def validate(self, op, g):
        super().validate(op, g)
        x, y = g.t(op.inputs[0]), g.t(op.outputs[0])
        check_shape(op, len(x.shape) == 4, f"input {x.describe()} must be 4-D NHWC")
        o = op.options
        for name in ("StrideH", "StrideW", "FilterHeight", "FilterWidth"):
            check_shape(op, int(o.get(name, 0)) > 0, f"{name} is {o.get(name, 0)}; it must be positive")
        check_shape(op, int(o.get("Padding", 0)) in (PADDING_SAME, PADDING_VALID), f"unknown padding {o.get('Padding')}")
        (xs, xz), (ys, yz) = x.quant.scalar(), y.quant.scalar()
        check_shape(op, xz == yz and abs(xs - ys) <= 1e-6, f"input {x.describe()} and output {y.describe()} "
                    "quantization differ; TFLite's int8 pooling works on raw values and requires them equal "
                    "(scales within 1e-6)")
        p = self.params(op, g)
        want = (p["batches"], p["out_h"], p["out_w"], p["channels"])
        check_shape(op, min(want) > 0 and tuple(y.shape) == want, f"output {y.describe()} should have shape {list(want)}")
        for n in (self.windows(p)[1], self.windows(p)[3]):
            check_shape(op, bool(np.all(n > 0)), "a pooling window lies entirely in the padding")
        fused_range(op, y)

    def params(self, op, g) -> dict:
        x, o = g.t(op.inputs[0]), op.options
        n, h, w, c = x.shape
        fh, fw, sh, sw = (int(o.get(k)) for k in ("FilterHeight", "FilterWidth", "StrideH", "StrideW"))
        out_h, pad_h = pool_axis(int(o.get("Padding", 0)), h, fh, sh)
        out_w, pad_w = pool_axis(int(o.get("Padding", 0)), w, fw, sw)
        return {"batches": n, "in_h": h, "in_w": w, "channels": c, "out_h": out_h, "out_w": out_w,
                "filter_h": fh, "filter_w": fw, "stride_h": sh, "stride_w": sw, "pad_h": pad_h, "pad_w": pad_w}

    @staticmethod
    def windows(p):
        return (*window_starts(p["out_h"], p["stride_h"], p["pad_h"], p["filter_h"], p["in_h"]),
                *window_starts(p["out_w"], p["stride_w"], p["pad_w"], p["filter_w"], p["in_w"]))

    def overlaps(self, op, g):
        return self._raster_rule(self.params(op, g))

    def _raster_rule(self, p):
        # Output (b, y, x, c) is written after its window of channel c, whose lowest byte is the
        # window's clipped top-left tap.
        y0, _, x0, _ = self.windows(p)
        b = np.arange(p["batches"])[:, None, None, None]
        c = np.arange(p["channels"])[None, None, None, :]
        min_read = ((b * p["in_h"] + y0[None, :, None, None]) * p["in_w"] + x0[None, None, :, None]) * p["channels"] + c
        return [raster_overlap(0, min_read)]

    # --- patch-based inference ---------------------------------------------------------------
    def input_window(self, op, g, out):
        if g.t(op.inputs[0]).shape[0] != 1:
            return None
        p = self.params(op, g)
        y = axis_window(out.y0, out.y1, p["stride_h"], p["pad_h"], p["filter_h"], 1, p["in_h"])
        x = axis_window(out.x0, out.x1, p["stride_w"], p["pad_w"], p["filter_w"], 1, p["in_w"])
        return [Window(*y, *x)]

    def window_params(self, op, g, out: Window, stored: Window) -> dict:
        """params() moved onto one patch (see _ConvBase.window_geometry): taps outside the image
        stay outside the stored window, so they are still skipped and left out of the count."""
        p = self.params(op, g)
        return {**p, "in_h": stored.h, "in_w": stored.w, "out_h": out.h, "out_w": out.w,
                "pad_h": p["pad_h"] - out.y0 * p["stride_h"] + stored.y0,
                "pad_w": p["pad_w"] - out.x0 * p["stride_w"] + stored.x0}

    def patch_call(self, op, g, k, out, stored):
        q = self.window_params(op, g, out, stored[0])
        return PatchCall({n: q[n] for n in ("in_h", "in_w", "out_h", "out_w", "pad_h", "pad_w")}, [0])

    def patch_overlaps(self, op, g, out, stored):
        return self._raster_rule(self.window_params(op, g, out, stored[0]))

    def kernel(self, op, g, prefix):
        act_min, act_max = fused_range(op, g.t(op.outputs[0]))
        k = Kernel(prefix, self.function, "tm_pool_params")
        k.fields = {**self.params(op, g), "act_min": act_min, "act_max": act_max}
        return k


@register
class AveragePool(_Pool):
    kinds = ("AVERAGE_POOL_2D",)
    function = "tm_avg_pool_s8"

    def macs(self, op, g):
        # One add per tap actually read (padding taps are skipped).
        p = self.params(op, g)
        _, nh, _, nw = self.windows(p)
        return int(nh.sum() * nw.sum()) * p["batches"] * p["channels"]


@register
class MaxPool(_Pool):
    kinds = ("MAX_POOL_2D",)
    function = "tm_max_pool_s8"

    def kernel(self, op, g, prefix):
        k = super().kernel(op, g, prefix)
        # The Armv7E-M kernel takes the same parameters, four channels at a time; it reads no
        # byte after writing one the portable kernel would not, so the overlap rule holds for it.
        if dsp_enabled() and k.fields["channels"] % DW_QUAD == 0:
            k.function = "tm_dsp_max_pool_s8"
        return k


@register
class Mean(OpDef):
    kinds = ("MEAN",)

    def validate(self, op, g):
        axes = self.axes(op, g)  # first: a non-constant axis would otherwise read as an int32 activation
        super().validate(op, g)
        x, y = g.t(op.inputs[0]), g.t(op.outputs[0])
        check_shape(op, not x.is_const, f"input {x.describe()} is a constant (a foldable MEAN)")
        check_shape(op, 1 <= len(x.shape) <= MAX_DIMS and x.size > 0, f"input {x.describe()} must have rank 1 to {MAX_DIMS}")
        keep = bool(op.options.get("KeepDims", False))
        want = tuple(1 if d in axes else n for d, n in enumerate(x.shape) if keep or d not in axes)
        check_shape(op, tuple(y.shape) == want, f"output {y.describe()} should have shape {list(want)}")
        count = x.size // y.size
        # TFLite's int32 sum and zero point * count must not overflow.
        check_shape(op, count < 2**23, f"reduces {count} elements per output; tinymem supports fewer than 2^23")
        try:
            self.requant(op, g)
        except TinymemError as e:
            raise UnsupportedError(f"{op.describe()}: unsupported quantization scales ({e})") from None

    def axes(self, op, g) -> set[int]:
        x, a = g.t(op.inputs[0]), const_input(op, g, 1, "axis")
        check_shape(op, a.dtype == "int32", f"axis {a.describe()} must be int32")
        rank = len(x.shape)
        axes = set()
        for v in a.data.reshape(-1).tolist():
            check_shape(op, -rank <= v < rank, f"axis {v} is out of range for {x.describe()}")
            axes.add(v + rank if v < 0 else v)
        return axes

    def requant(self, op, g) -> tuple[int, int]:
        """(multiplier, shift) with 1/count folded in exactly as QuantizedMeanOrSum does."""
        x, y = g.t(op.inputs[0]), g.t(op.outputs[0])
        mult, shift = quantize_multiplier(float(x.quant.scale[0]) / float(y.quant.scale[0]))
        count = x.size // y.size
        n = min(count.bit_length() - 1, 32, 31 + shift)
        return (mult << n) // count, shift - n

    def boxes(self, op, g):
        """(kept, reduced): lists of (extent, input stride), adjacent axes merged where contiguous."""
        x, axes = g.t(op.inputs[0]), self.axes(op, g)
        kept, red = [], []
        prev = None
        for d, (n, s) in enumerate(zip(x.shape, row_major_strides(x.shape))):
            if n == 1:
                continue
            box = red if d in axes else kept
            if prev is box and box[-1][1] == s * n:
                box[-1] = (box[-1][0] * n, s)
            else:
                box.append((int(n), s))
            prev = box
        return kept, red

    def macs(self, op, g):
        return g.t(op.inputs[0]).size

    def overlaps(self, op, g):
        # Each output is written after summing its box, whose lowest byte is its base offset.
        kept, _ = self.boxes(op, g)
        base = np.zeros(1, np.int64)
        for n, s in kept:
            base = (base[:, None] + np.arange(n) * s).reshape(-1)
        return [raster_overlap(0, base)]

    def kernel(self, op, g, prefix):
        x, y = g.t(op.inputs[0]), g.t(op.outputs[0])
        kept, red = self.boxes(op, g)
        mult, shift = self.requant(op, g)
        k = Kernel(prefix, "tm_mean_s8", "tm_mean_params")
        k.fields = {"out_dims": len(kept), "red_dims": len(red)}
        for name, box in (("out", kept), ("red", red)):
            if box:  # an empty box stays zero-initialized: C has no empty initializer list
                k.fields[f"{name}_shape"] = braces(n for n, _ in box)
                k.fields[f"{name}_stride"] = braces(s for _, s in box)
        k.fields.update({"sum_offset": int(wrap_int32(x.quant.scalar()[1] * (x.size // y.size))),
                         "multiplier": mult, "shift": shift, "output_offset": y.quant.scalar()[1]})
        return k
