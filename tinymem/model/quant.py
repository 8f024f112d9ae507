"""TFLite's quantization arithmetic, on the host side: multipliers and shifts computed at codegen time.

The spec is TFLite's reference arithmetic (`QuantizeMultiplier`, `CalculateActivationRangeQuantized`).
The integer requantization itself runs only in C (firmware/kernels/portable/tm_quant.h), where the
tests check it against LiteRT.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import TinymemError



def quantize_multiplier(real: float) -> tuple[int, int]:
    """real ~= mult * 2^(shift - 31), mult in [2^30, 2^31): TFLite's QuantizeMultiplier."""
    real = float(real)
    if real == 0.0:
        return 0, 0
    if not math.isfinite(real) or real < 0:
        raise TinymemError(f"cannot quantize multiplier {real!r} (scales must be positive and finite)")
    frac, shift = math.frexp(real)
    q = int(math.floor(frac * (1 << 31) + 0.5))  # std::round: half away from zero (frac > 0)
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:  # too small to represent: TFLite flushes to zero
        return 0, 0
    if shift > 30:  # single-rounding requantization supports shifts up to 30: saturate like TFLite
        return (1 << 31) - 1, 30
    return q, shift


def quantize_multiplier_smaller_than_one(real: float) -> tuple[int, int]:
    """Like quantize_multiplier but for 0 < real < 1; the shift is <= 0 (TFLite's *SmallerThanOneExp)."""
    if not 0.0 < real < 1.0:
        raise TinymemError(f"multiplier {real!r} must lie in (0, 1)")
    return quantize_multiplier(real)


def activation_range(fused: int, scale: float, zero_point: int, qmin: int = -128, qmax: int = 127) -> tuple[int, int]:
    """Clamp bounds of a fused activation in the quantized domain (TFLite's CalculateActivationRangeQuantized)."""
    def q(v: float) -> int:
        # TFLite divides in float32 (`f / scale` with float operands): keep that precision.
        return zero_point + int(round_half_away(float(np.float32(v) / np.float32(scale))))

    if fused == 0:  # NONE
        return qmin, qmax
    if fused == 1:  # RELU
        return max(qmin, q(0.0)), qmax
    if fused == 2:  # RELU_N1_TO_1
        return max(qmin, q(-1.0)), min(qmax, q(1.0))
    if fused == 3:  # RELU6
        return max(qmin, q(0.0)), min(qmax, q(6.0))
    raise TinymemError(f"fused activation {FUSED_NAMES.get(fused, fused)} is not supported on int8 ops")


FUSED_NAMES = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}


def round_half_away(v: float) -> float:
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)
