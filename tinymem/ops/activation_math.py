"""Codegen-time arithmetic of the activation ops, replicating LiteRT's Prepare step bit for bit.

- `float_lut`: LiteRT's int8 LOGISTIC/TANH table (LUTPopulate): float32 arithmetic around the C
  library's expf/tanhf, which is what LiteRT calls (we call the same functions through ctypes).
- `hard_swish_lut`: TFLite's reference int8 HARD_SWISH, int16 fixed point, over all 256 inputs.
- `softmax_scaling`: PreprocessSoftmaxScaling + CalculateInputRadius, in double.

LiteRT's activation kernels are built without TFLITE_SINGLE_ROUNDING (measured: their
requantization rounds twice, gemmlowp style), so QuantizeMultiplier does not saturate shifts
above 30 for them either: `quantize_multiplier_unsaturated`.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache

import numpy as np

from ..errors import UnsupportedError
from ..model.quant import quantize_multiplier

F32 = np.float32
INT8_VALUES = np.arange(-128, 128, dtype=np.int64)


@lru_cache(maxsize=None)
def _libm_float_fn(name: str):
    """float name(float) from the C library LiteRT links against; numpy's float32 version otherwise
    (numpy's SIMD exp/tanh may differ from libm in the last bit, i.e. in rare table entries)."""
    path = ctypes.util.find_library("m")
    try:
        fn = getattr(ctypes.CDLL(path), name + "f") if path else None
    except OSError:
        fn = None
    if fn is None:
        return getattr(np, name)
    fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return lambda v: np.array([fn(float(e)) for e in np.ravel(v)], F32).reshape(np.shape(v))


def _transform(kind: str, v: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp overflows to inf and 1 / inf = 0, in C as here
        if kind == "logistic":  # 1.0f / (1.0f + std::exp(-value)), all float32
            return F32(1) / (F32(1) + _libm_float_fn("exp")(-v))
        return _libm_float_fn("tanh")(v)


def float_lut(op, kind: str, in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> np.ndarray:
    """LUTPopulateInt8: table[i] for input i - 128, every step in float32 as LiteRT's Prepare does it."""
    dequantized = F32(in_scale) * (INT8_VALUES - in_zp).astype(F32)
    transformed = _transform(kind, dequantized).astype(F32)
    scaled = (transformed * (F32(1) / F32(out_scale))).astype(np.float64)  # exact float32 values
    rounded = np.where(scaled >= 0, np.floor(scaled + 0.5), -np.floor(-scaled + 0.5))  # roundf
    shifted = rounded.astype(F32) + F32(out_zp)
    if np.any(np.abs(shifted.astype(np.float64)) >= 2.0**31):
        raise UnsupportedError(f"{op.describe()}: output scale {out_scale:.9g} is too small "
                               "(LiteRT's table values overflow int32)")
    return np.clip(np.trunc(shifted.astype(np.float64)), -128, 127).astype(np.int8)


def quantize_multiplier_unsaturated(real: float) -> tuple[int, int]:
    """QuantizeMultiplier without the single-rounding build's clamp of shifts above 30."""
    if real >= 1.0:  # halving is exact and keeps the mantissa; only multipliers >= 1 can clamp
        mult, shift = quantize_multiplier(real / 2.0)
        return mult, shift + 1
    return quantize_multiplier(real)


# --- HARD_SWISH: int16 fixed point, evaluated on numpy int64 arrays with explicit int16 wraps ----


def _wrap16(v):
    return ((np.asarray(v, np.int64) + 32768) & 0xFFFF) - 32768


def _trunc_div(a, b: int):
    return np.sign(a) * (np.abs(a) // b)  # C division (toward zero), b > 0


def _sat_rounding_doubling_high_mul16(a, b):
    ab = a * b
    r = _trunc_div(ab + np.where(ab >= 0, 1 << 14, 1 - (1 << 14)), 1 << 15)
    return _wrap16(np.where((a == b) & (a == -32768), 32767, r))


def _sat_doubling_high_mul16(a, b):
    """Like the above but truncating: TFLite's SaturatingDoublingHighMul."""
    return _wrap16(np.where((a == b) & (a == -32768), 32767, _trunc_div(a * b, 1 << 15)))


def _rounding_divide_by_pot16(x, exponent: int):
    """gemmlowp's RoundingDivideByPOT on int16 values, mask and threshold wrapped to int16 too."""
    mask = int(_wrap16((1 << exponent) - 1))
    threshold = _wrap16((mask >> 1) + (x < 0))
    return _wrap16((x >> exponent) + ((x & mask) > threshold))


def _sat_left_shift16(x, amount: int):
    return np.clip(x * (1 << amount), -32768, 32767)


def _int16_multiplier(op, real: float, what: str) -> tuple[int, int]:
    """QuantizeMultiplier, then DownScaleInt32ToInt16Multiplier (round to the top 16 bits)."""
    m, e = quantize_multiplier_unsaturated(real)
    return (32767 if m >= 2**31 - 1 - (1 << 15) else (m + (1 << 15)) >> 16), e


def hard_swish_lut(op, in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> np.ndarray:
    # HardSwishPrepare: multipliers from float32 quotients.
    hires_scale = F32(1.0 / 128.0) * F32(in_scale)
    out_m, out_e = _int16_multiplier(op, float(hires_scale / F32(out_scale)), "output multiplier")
    if out_e > 0:
        raise UnsupportedError(f"{op.describe()}: input scale {in_scale:.9g} / 128 exceeds output scale "
                               f"{out_scale:.9g}; LiteRT's int8 HARD_SWISH requires a multiplier below 1")
    relu_m, relu_e = _int16_multiplier(op, float(hires_scale / (F32(3.0) / F32(32768.0))), "relu-ish multiplier")

    hires = _wrap16((INT8_VALUES - in_zp) * 128)
    preshift_out = _sat_rounding_doubling_high_mul16(hires, out_m)
    # x rescaled so that 3.0 maps to 32768 (saturating), then mapped from [-1, 1] to [0, 1]
    reluish = hires
    if relu_e > 0:
        reluish = _sat_left_shift16(reluish, relu_e - 1)
    reluish = _sat_rounding_doubling_high_mul16(reluish, relu_m)
    if relu_e > 0:
        reluish = _sat_left_shift16(reluish, 1)
    if relu_e < 0:
        reluish = _rounding_divide_by_pot16(reluish, -relu_e)
    reluish = _wrap16((reluish + (1 << 15)) >> 1)
    out = _rounding_divide_by_pot16(_sat_doubling_high_mul16(reluish, preshift_out), -out_e)
    return np.clip(_wrap16(out + out_zp), -128, 127).astype(np.int8)


# --- SOFTMAX ------------------------------------------------------------------------------------


def softmax_scaling(op, x, beta: float) -> tuple[int, int, int]:
    """(input_multiplier, input_left_shift, diff_min) of TFLite's reference int8 softmax."""
    in_scale = x.quant.scalar()[0]
    # beta * input_scale as a rescale into Q5.26 (5 integer bits), capped at 2^31 - 1, in double
    real = min(float(F32(beta)) * float(in_scale) * float(1 << 26), float(2**31 - 1))
    if not real > 1.0:
        raise UnsupportedError(f"{op.describe()}: beta {beta:.9g} times input scale {in_scale:.9g} of "
                               f"{x.describe()} is below 2^-26; LiteRT's int8 softmax cannot represent it")
    mult, shift = quantize_multiplier_unsaturated(real)  # QuantizeMultiplierGreaterThanOne: shift <= 31
    # CalculateInputRadius(5, shift): floor(31 * 2^26 / 2^shift); smaller differences give exp() = 0
    return mult, shift, -((31 << 26) >> shift)
