"""The int8 forward of every op a backward path can cross, in numpy, bit-exact with LiteRT BUILTIN_REF.

Written from TFLite's reference arithmetic (as firmware/kernels/portable documents it), not from
the C: CONV_2D, DEPTHWISE_CONV_2D, MEAN, ADD and RELU/RELU6 requantize with gemmlowp's double
rounding, FULLY_CONNECTED with single rounding. Accumulators are computed without folding the
input zero point (padded taps skipped, as TFLite does), so the C's folded bias is checked, not
copied. Multipliers, shifts and clamp bounds come from the op registry (the same Prepare-time
arithmetic codegen emits). tests/test_train_reference.py checks every such op of the zoo against
LiteRT's intermediate tensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import UnsupportedError
from ..model.graph import Graph, Op
from ..ops import opdef
from ..ops.base import fused_range

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def wrap32(v: np.ndarray) -> np.ndarray:
    """Two's-complement int32 wrap of int64 values (kept as int64)."""
    return ((np.asarray(v, np.int64) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul: round(a * b / 2^31), half away from zero."""
    ab = a * b
    s = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    q = np.where(s >= 0, s >> 31, -((-s) >> 31))  # C division truncates toward zero
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, q)


def _divide_pot(x: np.ndarray, e: np.ndarray) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2^e, half away from zero."""
    mask = np.left_shift(np.int64(1), e) - 1
    return (x >> e) + ((x & mask) > (mask >> 1) + (x < 0))


def requant_double(x, mult, shift) -> np.ndarray:
    """TFLite's double-rounding MultiplyByQuantizedMultiplier (int64 in, int64 out)."""
    x, mult, shift = (np.asarray(v, np.int64) for v in (x, mult, shift))
    shifted = wrap32(x << np.maximum(shift, 0))
    return _divide_pot(_high_mul(shifted, mult), np.maximum(-shift, 0))


def requant_single(x, mult, shift) -> np.ndarray:
    """TFLite's single-rounding MultiplyByQuantizedMultiplier (tm_requantize)."""
    x, mult, shift = (np.asarray(v, np.int64) for v in (x, mult, shift))
    total = 31 - shift
    r = (x * mult + np.left_shift(np.int64(1), total - 1)) >> total
    return np.clip(r, INT32_MIN, INT32_MAX)


def _s8(v: np.ndarray, lo: int = -128, hi: int = 127) -> np.ndarray:
    return np.clip(v, lo, hi).astype(np.int8)


# --- window geometry shared with the backward pass ----------------------------------------------


@lru_cache(maxsize=256)
def window_taps(batches: int, in_h: int, in_w: int, out_h: int, out_w: int, k_h: int, k_w: int, stride_h: int,
                stride_w: int, dil_h: int, dil_w: int, pad_top: int, pad_left: int) -> np.ndarray:
    """int64 [batches * out_h * out_w, k_h * k_w]: per output pixel (raster order) and tap
    (row-major), the flat input pixel b * in_h * in_w + y * in_w + x it reads, or -1 for a tap
    outside the image. Read-only (cached)."""
    oy, ox = np.arange(out_h) * stride_h - pad_top, np.arange(out_w) * stride_w - pad_left
    ky, kx = np.arange(k_h) * dil_h, np.arange(k_w) * dil_w
    y = oy[:, None, None, None] + ky[None, None, :, None]  # [oh, 1, kh, 1]
    x = ox[None, :, None, None] + kx[None, None, None, :]  # [1, ow, 1, kw]
    inside = (y >= 0) & (y < in_h) & (x >= 0) & (x < in_w)
    flat = np.where(inside, y * in_w + x, -1).reshape(out_h * out_w, k_h * k_w)
    base = (np.arange(batches) * in_h * in_w)[:, None, None]
    idx = np.where(flat[None] >= 0, flat[None] + base, -1).reshape(-1, k_h * k_w)
    idx.setflags(write=False)
    return idx


def gather(x_pixels: np.ndarray, idx: np.ndarray, fill) -> np.ndarray:
    """x_pixels [pixels, C] gathered at idx [P, T] -> [P, T, C], `fill` where idx < 0."""
    padded = np.concatenate([x_pixels, np.full((1, x_pixels.shape[1]), fill, x_pixels.dtype)])
    return padded[np.where(idx >= 0, idx, len(x_pixels))]


def conv_taps(geo) -> np.ndarray:
    return window_taps(geo.batches, geo.in_h, geo.in_w, geo.out_h, geo.out_w, geo.k_h, geo.k_w, geo.stride_h,
                       geo.stride_w, geo.dil_h, geo.dil_w, geo.pad_top, geo.pad_left)


def pool_taps(p: dict) -> np.ndarray:
    return window_taps(p["batches"], p["in_h"], p["in_w"], p["out_h"], p["out_w"], p["filter_h"], p["filter_w"],
                       p["stride_h"], p["stride_w"], 1, 1, p["pad_h"], p["pad_w"])


# --- per-op preparation (done once) and evaluation -------------------------------------------------


@dataclass
class Prepared:
    """What one op's forward needs besides its activations: the registry's integer parameters."""

    op: Op
    fields: dict  # kernel fields that are plain integers
    arrays: dict  # kernel arrays by suffix (mult, shift, ...)
    extra: dict  # kind-specific geometry


def prepare(g: Graph, op: Op) -> Prepared:
    d = opdef(op)
    k = d.kernel(op, g, "p")
    fields = {n: v for n, v in k.fields.items() if isinstance(v, (int, np.integer))}
    arrays = {a.name[2:]: a.values for a in k.arrays}
    extra: dict = {}
    kind = op.kind
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        x, out = g.t(op.inputs[0]), g.t(op.outputs[0])
        extra = {"geo": d.geometry(op, g), "in_zp": x.quant.scalar()[1], "out_zp": out.quant.scalar()[1],
                 "act": fused_range(op, out)}
        if kind == "CONV_2D":
            extra["groups"] = d.groups(op, g)
    elif kind == "FULLY_CONNECTED":
        extra = {"in_zp": g.t(op.inputs[0]).quant.scalar()[1], "dims": d.dims(op, g)}
    elif kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        extra = {"pool": d.params(op, g)}
    elif kind == "MEAN":
        extra = {"axes": tuple(sorted(d.axes(op, g)))}
    elif kind == "PAD":
        extra = {"paddings": list(zip(*d.paddings(op, g))), "value": d.pad_value(op, g)}
    elif kind == "ADD":
        a, b = d.operands(op, g)
        extra = {"swap": a.index != op.inputs[0]}
    elif kind not in ("RESHAPE", "SQUEEZE", "RELU", "RELU6"):
        raise UnsupportedError(f"{op.describe()}: the training reference has no int8 forward for {kind}")
    return Prepared(op, fields, arrays, extra)


def layer_params(g: Graph, op: Op) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weights in the model's layout, int32 bias; zeros when the op has none)."""
    w = g.t(op.inputs[1]).data
    c = int(g.t(op.outputs[0]).shape[-1])
    b = g.t(op.inputs[2]).data if len(op.inputs) > 2 and op.inputs[2] >= 0 else np.zeros(c, np.int32)
    return w.astype(np.int8), b.astype(np.int32).reshape(c)


def _conv(p: Prepared, x: np.ndarray, w: np.ndarray, b: np.ndarray, out_shape) -> np.ndarray:
    geo, kind = p.extra["geo"], p.op.kind
    idx = conv_taps(geo)
    centered = x.astype(np.float64).reshape(-1, geo.in_c) - p.extra["in_zp"]
    taps = gather(centered, idx, 0.0)  # [pixels, k_h * k_w, in_c]; padded taps add nothing
    # float64 products and sums of int8 values stay exact far beyond MAX_TAPS * 2^14.
    if kind == "CONV_2D":
        groups = p.extra["groups"]
        fc = geo.in_c // groups
        t = taps.reshape(len(idx), -1, groups, fc).transpose(2, 0, 1, 3).reshape(groups, len(idx), -1)
        wg = w.astype(np.float64).reshape(groups, geo.out_c // groups, -1)
        acc = np.matmul(t, wg.transpose(0, 2, 1)).transpose(1, 0, 2).reshape(len(idx), geo.out_c)
    else:
        mult = geo.out_c // geo.in_c
        acc = (taps[:, :, np.arange(geo.out_c) // mult] * w.astype(np.float64).reshape(-1, geo.out_c)).sum(axis=1)
    acc = wrap32(acc.astype(np.int64) + b.astype(np.int64))
    y = requant_double(acc, p.arrays["mult"], p.arrays["shift"]) + p.extra["out_zp"]
    return _s8(y, *p.extra["act"]).reshape(out_shape)


def _fully_connected(p: Prepared, x: np.ndarray, w: np.ndarray, b: np.ndarray, out_shape) -> np.ndarray:
    batches, in_f, out_f = p.extra["dims"]
    xc = x.astype(np.float64).reshape(batches, in_f) - p.extra["in_zp"]
    acc = wrap32((xc @ w.astype(np.float64).T).astype(np.int64) + b.astype(np.int64))
    y = requant_single(acc, p.arrays["mult"], p.arrays["shift"]) + p.fields["output_offset"]
    return _s8(y, p.fields["act_min"], p.fields["act_max"]).reshape(out_shape)


def _pool(p: Prepared, x: np.ndarray, out_shape) -> np.ndarray:
    q = p.extra["pool"]
    idx = pool_taps(q)
    taps = gather(x.astype(np.int64).reshape(-1, q["channels"]), idx, -129 if p.op.kind == "MAX_POOL_2D" else 0)
    if p.op.kind == "MAX_POOL_2D":
        y = np.maximum(taps.max(axis=1), -128)
    else:
        s, n = taps.sum(axis=1), (idx >= 0).sum(axis=1)[:, None]
        y = np.where(s > 0, (s + n // 2) // n, -((-s + n // 2) // n))  # C's truncating division
    return _s8(y, p.fields["act_min"], p.fields["act_max"]).reshape(out_shape)


def _add(p: Prepared, a: np.ndarray, b: np.ndarray, out_shape) -> np.ndarray:
    f = p.fields
    if p.extra["swap"]:
        a, b = b, a
    sa = requant_double((a.astype(np.int64) + f["a_offset"]) << f["left_shift"], f["a_multiplier"], f["a_shift"])
    sb = requant_double((b.astype(np.int64) + f["b_offset"]) << f["left_shift"], f["b_multiplier"], f["b_shift"])
    y = requant_double(sa + sb, f["output_multiplier"], f["output_shift"]) + f["output_offset"]
    return _s8(np.broadcast_to(y, out_shape), f["act_min"], f["act_max"])


def run_op(g: Graph, p: Prepared, inputs: list[np.ndarray], params: tuple | None = None) -> np.ndarray:
    """One op's int8 output from its activation inputs (op.inputs order, constants left out);
    `params` (int8 weights, int32 bias) replaces a conv/FC's constants."""
    op, f = p.op, p.fields
    out_shape = g.t(op.outputs[0]).shape
    kind = op.kind
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        w, b = params if params is not None else layer_params(g, op)
        fn = _fully_connected if kind == "FULLY_CONNECTED" else _conv
        return fn(p, inputs[0], w, b, out_shape)
    if kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        return _pool(p, inputs[0], out_shape)
    if kind == "ADD":
        acts = iter(inputs)
        x0, x1 = (g.t(i).data if g.t(i).is_const else next(acts) for i in op.inputs)
        return _add(p, x0, x1, out_shape)
    x = inputs[0]
    if kind == "MEAN":
        s = x.astype(np.int64).sum(axis=p.extra["axes"])
        y = requant_double(wrap32(s - f["sum_offset"]), f["multiplier"], f["shift"]) + f["output_offset"]
        return _s8(y).reshape(out_shape)
    if kind == "PAD":
        return np.pad(x, p.extra["paddings"], constant_values=p.extra["value"]).astype(np.int8)
    if kind in ("RELU", "RELU6"):
        c = x.astype(np.int64) - f["input_offset"]
        y = np.where(c >= 0, requant_double(c, f["mult_pos"], f["shift_pos"]),
                     requant_double(c, f["mult_neg"], f["shift_neg"]))
        return _s8(wrap32(y + f["output_offset"]), f["act_min"], f["act_max"])
    return x.reshape(out_shape)  # RESHAPE, SQUEEZE


__all__ = ["Prepared", "conv_taps", "gather", "layer_params", "pool_taps", "prepare", "requant_double",
           "requant_single", "run_op", "window_taps", "wrap32"]
