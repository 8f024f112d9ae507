"""Activations and int8 requantization, each exactly as LiteRT's BUILTIN_REF kernels compute them.

Three C kernels cover the family (firmware/kernels/portable/tm_activation.h):
- tm_requant_s8: RELU, RELU6, RELU_N1_TO_1, RELU_0_TO_1, LEAKY_RELU, QUANTIZE (int8 -> int8);
- tm_lut_s8: LOGISTIC and TANH (LiteRT itself tabulates them in float at Prepare time: we build the
  identical table) and HARD_SWISH (its int16 fixed-point arithmetic, tabulated over the 256 inputs);
- tm_softmax_s8: gemmlowp fixed point, as TFLite's reference int8 softmax.
All read input element i before writing output element i, so the output may overlay the input.
"""
from __future__ import annotations

import numpy as np

from . import register
from .activation_math import float_lut, hard_swish_lut, quantize_multiplier_unsaturated, softmax_scaling
from .base import Kernel, OpDef, Overlap, PatchCall, UnsupportedError, check_shape, raster_min_delta
from ..errors import TinymemError
from ..model.quant import activation_range


def _quant(op, g):
    x, y = g.t(op.inputs[0]), g.t(op.outputs[0])
    return x.quant.scalar() + y.quant.scalar()  # (in_scale, in_zp, out_scale, out_zp)


def _multiplier(op, real: float, what: str) -> tuple[int, int]:
    try:
        mult, shift = quantize_multiplier_unsaturated(real)
    except TinymemError as e:
        raise UnsupportedError(f"{op.describe()}: {what}: {e}") from None
    if shift > 30:  # LiteRT would shift an int32 left by 31 or more
        raise UnsupportedError(f"{op.describe()}: {what} {real:.9g} is too large (at least 2^30)")
    return mult, shift


class _Elementwise(OpDef):
    """One int8 input, one int8 output of the same shape, element i written right after it is read."""

    def validate(self, op, g):
        check_shape(op, len(op.inputs) >= 1 and op.inputs[0] >= 0 and len(op.outputs) == 1,
                    "expects one input and one output")
        super().validate(op, g)
        x, y = g.t(op.inputs[0]), g.t(op.outputs[0])
        check_shape(op, not x.is_const, f"input {x.describe()} is a constant (fold it before conversion)")
        check_shape(op, x.shape == y.shape, f"output {y.describe()} does not match input {x.describe()}")

    def overlaps(self, op, g):
        n = g.t(op.outputs[0]).size
        return [Overlap(0, raster_min_delta(np.arange(n, dtype=np.float64)))]

    # --- patch-based inference: element-wise on whatever window the input holds -----------------
    def input_window(self, op, g, out):
        x = g.t(op.inputs[0])
        if len(x.shape) != 4 or x.shape[0] != 1:
            return None
        return [out] + [None] * (len(op.inputs) - 1)

    def output_window(self, op, g, need, stored):
        return stored[0]  # the kernels walk contiguous bytes: compute the whole stored window

    def patch_call(self, op, g, k, out, stored):
        return PatchCall({"size": out.area * int(g.t(op.outputs[0]).shape[3])}, [0])

    def patch_overlaps(self, op, g, out, stored):
        n = out.area * int(g.t(op.outputs[0]).shape[3])
        return [Overlap(0, raster_min_delta(np.arange(n, dtype=np.float64)))]


# --- requantizing ops -------------------------------------------------------------------------


class _Requant(_Elementwise):
    def params(self, op, g):
        """((mult, shift) for x >= 0, (mult, shift) for x < 0, (act_min, act_max))."""
        raise NotImplementedError

    def validate(self, op, g):
        super().validate(op, g)
        self.params(op, g)

    def kernel(self, op, g, prefix):
        _, in_zp, _, out_zp = _quant(op, g)
        pos, neg, act = self.params(op, g)
        k = Kernel(prefix, "tm_requant_s8", "tm_requant_params")
        k.fields = {"size": g.t(op.outputs[0]).size, "input_offset": in_zp, "output_offset": out_zp,
                    "mult_pos": pos[0], "shift_pos": pos[1], "mult_neg": neg[0], "shift_neg": neg[1],
                    "act_min": act[0], "act_max": act[1]}
        return k


@register
class Relu(_Requant):
    kinds = ("RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1")

    def params(self, op, g):
        in_s, _, out_s, out_zp = _quant(op, g)
        # LiteRT's ReluPrepare divides the float scales in float32 before widening to double.
        m = _multiplier(op, float(np.float32(in_s) / np.float32(out_s)), "input/output scale ratio")
        # Bounds as QuantizedReluX computes them: zp + roundf(bound / scale), the same formula as a
        # fused activation's; RELU_0_TO_1 takes RELU's lower bound and RELU_N1_TO_1's upper one.
        bounds = {k: activation_range(code, out_s, out_zp) for k, code in
                  (("RELU", 1), ("RELU_N1_TO_1", 2), ("RELU6", 3))}
        bounds["RELU_0_TO_1"] = (bounds["RELU"][0], bounds["RELU_N1_TO_1"][1])
        return m, m, bounds[op.kind]


@register
class LeakyRelu(_Requant):
    kinds = ("LEAKY_RELU",)

    def params(self, op, g):
        in_s, _, out_s, _ = _quant(op, g)
        alpha = np.float32(op.options.get("Alpha", 0.0))
        f_in, f_out = np.float32(in_s), np.float32(out_s)
        # LeakyReluPrepare: float32 products/quotients, widened to double only for QuantizeMultiplier.
        identity = _multiplier(op, float(f_in / f_out), "input/output scale ratio")
        m_alpha, s_alpha = _multiplier(op, abs(float(f_in * alpha / f_out)), "alpha multiplier")
        # A negative alpha: LiteRT rounds x * |alpha| and negates the result (the kernel's
        # convention for a negative mult_neg); rounding half up is not odd, so the order matters.
        return identity, (-m_alpha if alpha < 0 else m_alpha, s_alpha), (-128, 127)


@register
class Quantize(_Requant):
    kinds = ("QUANTIZE",)

    def params(self, op, g):
        in_s, _, out_s, _ = _quant(op, g)
        m = _multiplier(op, float(in_s) / float(out_s), "input/output scale ratio")  # double, as quantize.cc
        return m, m, (-128, 127)

    def is_alias(self, op, g):
        # Multiplier 2^30 with shift 1 is exactly x: with equal zero points QUANTIZE copies its
        # input, so the output can be the input's bytes.
        _, in_zp, _, out_zp = _quant(op, g)
        return in_zp == out_zp and self.params(op, g)[0] == (1 << 30, 1)

    def kernel(self, op, g, prefix):
        if self.is_alias(op, g):
            return Kernel(prefix, template="ops/alias.c.j2")
        return super().kernel(op, g, prefix)


# --- table lookups ----------------------------------------------------------------------------


class _Lut(_Elementwise):
    def table(self, op, g) -> np.ndarray:
        """int8[256], entry i for input i - 128."""
        raise NotImplementedError

    def validate(self, op, g):
        super().validate(op, g)
        self.table(op, g)

    def kernel(self, op, g, prefix):
        k = Kernel(prefix, "tm_lut_s8", "tm_lut_params")
        k.fields = {"size": g.t(op.outputs[0]).size, "table": k.array("table", "int8_t", self.table(op, g))}
        return k


@register
class Logistic(_Lut):
    kinds = ("LOGISTIC",)

    def table(self, op, g):
        in_s, in_zp, out_s, out_zp = _quant(op, g)
        if np.float32(out_s) != np.float32(1.0 / 256):
            raise UnsupportedError(f"{op.describe()}: output {g.t(op.outputs[0]).describe()} has scale "
                                   f"{out_s:.9g}; LiteRT requires exactly 1/256 for int8 LOGISTIC")
        return float_lut(op, "logistic", in_s, in_zp, out_s, out_zp)


@register
class Tanh(_Lut):
    kinds = ("TANH",)

    def table(self, op, g):
        return float_lut(op, "tanh", *_quant(op, g))


@register
class HardSwish(_Lut):
    kinds = ("HARD_SWISH",)

    def table(self, op, g):
        return hard_swish_lut(op, *_quant(op, g))


# --- softmax ----------------------------------------------------------------------------------


@register
class Softmax(_Elementwise):
    kinds = ("SOFTMAX",)

    def validate(self, op, g):
        super().validate(op, g)
        x, y = g.t(op.inputs[0]), g.t(op.outputs[0])
        check_shape(op, len(x.shape) >= 1, f"input {x.describe()} has no axis to normalize over")
        out_s, out_zp = y.quant.scalar()
        # SoftmaxPrepare's float32 check: |scale - 1/256| <= 0.001/256, and zero point -128.
        f = np.float32
        if out_zp != -128 or abs(f(out_s) - f(1.0 / 256)) > f(0.001) / f(256):
            raise UnsupportedError(f"{op.describe()}: output {y.describe()} is quantized (scale {out_s:.9g}, "
                                   f"zero point {out_zp}); int8 SOFTMAX requires scale 1/256 and zero point -128")
        self.params(op, g)

    def params(self, op, g):
        x = g.t(op.inputs[0])
        return softmax_scaling(op, x, float(op.options.get("Beta", 0.0)))

    # Element-wise overlap holds: each row is read whole (max, then sum) before any of its outputs is
    # written, and the output pass reads element c just before writing it.

    def patch_call(self, op, g, k, out, stored):
        return PatchCall({"rows": out.area}, [0])  # one row per pixel: depth is the channel axis

    def kernel(self, op, g, prefix):
        x = g.t(op.inputs[0])
        depth = x.shape[-1]
        mult, shift, diff_min = self.params(op, g)
        k = Kernel(prefix, "tm_softmax_s8", "tm_softmax_params")
        k.fields = {"rows": x.size // depth if depth else 0, "depth": depth, "input_multiplier": mult,
                    "input_left_shift": shift, "diff_min": diff_min}
        return k
