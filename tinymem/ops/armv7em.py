"""The Armv7E-M DSP kernels' side of codegen: when a layer may use one, and its constant arrays
in the order the kernel reads them (firmware/kernels/armv7em/tm_dsp_kernels.h).

Conditions shared by the conv kernels: every output channel's requantization shift is negative
(scale < 0.5, nearly always) and every accumulator provably stays within |acc| < 2^30, so
tm_dsp_requant's SMMULR form equals TFLite's double rounding (see tm_dsp.h). Layers that fail a
condition keep the portable kernel: slower, never wrong.
"""
from __future__ import annotations

import numpy as np

from .isa import ARMV7EM, current_isa

ACC_LIMIT = 1 << 30  # |acc| below this: 2 * acc fits int32 (tm_dsp_requant)
GEMM_K = 4  # the GEMM kernels consume input elements four at a time (one int8x4 weight word)
DW_QUAD = 4  # the depthwise kernel's channels per pass; in_c must be a multiple of it
DSP_STAGE = 64  # TM_DSP_STAGE: tm_dsp_conv_s8 stages windows of other in_c up to this many elements


def dsp_enabled() -> bool:
    return current_isa() == ARMV7EM


def requant_fits(bias: np.ndarray, w_rows: np.ndarray, shift: np.ndarray) -> bool:
    """bias: folded int32 bias per output channel; w_rows: [out_c, taps] weights; shift: TFLite's.
    Inputs and padded taps are int8, so |acc| <= |bias| + 128 * sum |w| over the channel's taps."""
    bound = np.abs(bias.astype(np.int64)) + 128 * np.abs(w_rows.astype(np.int64)).sum(axis=1)
    return bool(np.all(shift < 0) and np.all(shift >= -31) and np.all(bound < ACC_LIMIT))


def right_shifts(shift: np.ndarray) -> np.ndarray:
    """-shift - 1 >= 0: the conv kernels' form of TFLite's (negative) shift, see tm_dsp_requant."""
    return -shift.astype(np.int64) - 1


def s8x4_words(b: np.ndarray) -> np.ndarray:
    """int8 [..., 4] -> int32 [...]: byte k of the little-endian word is element k."""
    u = b.astype(np.int64) & 0xFF
    w = u[..., 0] | (u[..., 1] << 8) | (u[..., 2] << 16) | (u[..., 3] << 24)
    return ((w + 2**31) % 2**32 - 2**31).astype(np.int32)


def s16x2_words(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Two int16 per word: `lo` in bits 0..15, `hi` in 16..31 (SMLABB/SMLATT operands)."""
    w = (lo.astype(np.int64) & 0xFFFF) | ((hi.astype(np.int64) & 0xFFFF) << 16)
    return ((w + 2**31) % 2**32 - 2**31).astype(np.int32)


def gemm_stream(w_rows: np.ndarray, bias: np.ndarray, mult: np.ndarray, shift: np.ndarray,
                group: int = 2) -> np.ndarray:
    """The GEMM kernels' stream (tm_dsp_kernels.h): per group of `group` output channels their
    biases, per four input elements one int8x4 word of each channel (K zero-padded to a multiple
    of 4), then (mult, shift) of each; the channels left over alone, the same way (groups of one).
    w_rows: [out_c, K] int8."""
    out_c, k = w_rows.shape
    k4 = -(-k // GEMM_K) * GEMM_K
    padded = np.zeros((out_c, k4), np.int8)
    padded[:, :k] = w_rows
    words = s8x4_words(padded.reshape(out_c, k4 // GEMM_K, GEMM_K)).astype(np.int64)  # [out_c, quads]
    requant = np.stack([mult.astype(np.int64), shift.astype(np.int64)], axis=1)  # [out_c, 2]
    bias = bias.astype(np.int64)
    parts, whole = [], out_c // group * group
    for size, lo, hi in [(group, 0, whole)] + [(1, c, c + 1) for c in range(whole, out_c)]:
        n = (hi - lo) // size
        if n:
            body = words[lo:hi].reshape(n, size, -1).transpose(0, 2, 1).reshape(n, -1)  # [group][quad][size]
            parts.append(np.concatenate([bias[lo:hi].reshape(n, size), body, requant[lo:hi].reshape(n, 2 * size)],
                                        axis=1).reshape(-1))
    return np.concatenate(parts).astype(np.int32)


def depthwise_stream(bias: np.ndarray, mult: np.ndarray, shift: np.ndarray, w_taps: np.ndarray) -> np.ndarray:
    """tm_dsp_depthwise_params.quads: per four channels (C a multiple of 4) the doubled biases,
    the (multiplier, -shift - 1) of each channel, then per tap the int16 pairs of doubled weights
    (2 w0, 2 w2), (2 w1, 2 w3). w_taps: [9, C] int8."""
    taps, c = w_taps.shape
    n = c // DW_QUAD
    q = 2 * w_taps.astype(np.int64).reshape(taps, n, DW_QUAD).transpose(1, 0, 2)  # [quad][tap][4]
    pairs = np.stack([s16x2_words(q[..., 0], q[..., 2]), s16x2_words(q[..., 1], q[..., 3])], axis=-1)
    requant = np.stack([mult.astype(np.int64), right_shifts(shift)], axis=1).reshape(n, 2 * DW_QUAD)
    doubled = 2 * bias.astype(np.int64).reshape(n, DW_QUAD)  # |bias| < 2^30 (requant_fits): no wrap
    return np.concatenate([doubled, requant, pairs.reshape(n, -1)], axis=1).astype(np.int32).reshape(-1)


def gemm_scratch(k: int) -> int:
    """Two pixel windows of ceil(k / 4) word pairs, plus 3 bytes to realign any offset."""
    return 2 * 8 * (-(-k // GEMM_K)) + 3


__all__ = ["ACC_LIMIT", "DSP_STAGE", "DW_QUAD", "GEMM_K", "depthwise_stream", "dsp_enabled", "gemm_scratch",
           "gemm_stream", "requant_fits", "right_shifts", "s16x2_words", "s8x4_words"]
