"""FULLY_CONNECTED: int8 x int8 -> int32 accumulate -> per-channel requantize."""
from __future__ import annotations

import numpy as np

from ..model.quant import quantize_multiplier

from . import register
from .armv7em import dsp_enabled, gemm_stream
from .base import (
    Kernel, OpDef, Overlap, check_shape, check_symmetric_weights, const_input, fused_range,
    per_channel_requant, raster_min_delta, wrap_int32,
)


FC_GROUP = 4  # outputs tm_dsp_fully_connected_s8 computes per pass over the input row


@register
class FullyConnected(OpDef):
    kinds = ("FULLY_CONNECTED",)

    def validate(self, op, g):
        super().validate(op, g)
        w = const_input(op, g, 1, "weights")
        check_shape(op, w.dtype == "int8" and len(w.shape) == 2, f"weights {w.describe()} must be int8 [out, in]")
        check_shape(op, int(op.options.get("WeightsFormat", 0)) == 0, "shuffled weights format is not supported")
        check_symmetric_weights(op, w)
        x = g.t(op.inputs[0])
        check_shape(op, x.size % w.shape[1] == 0, f"input of {x.size} elements is not a multiple of {w.shape[1]} features")
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            b = const_input(op, g, 2, "bias")
            check_shape(op, b.dtype == "int32" and b.size == w.shape[0], f"bias {b.describe()} must be int32 [{w.shape[0]}]")
        fused_range(op, g.t(op.outputs[0]))

    def dims(self, op, g):
        w = g.t(op.inputs[1])
        out_f, in_f = w.shape
        return g.t(op.inputs[0]).size // in_f, in_f, out_f

    def macs(self, op, g):
        b, i, o = self.dims(op, g)
        return b * i * o

    def overlaps(self, op, g):
        # Row by row: output row r is written after its whole input row r has been read.
        batches, in_f, out_f = self.dims(op, g)
        rows = np.repeat(np.arange(batches, dtype=np.float64) * in_f, out_f)
        return [Overlap(0, raster_min_delta(rows))]

    def kernel(self, op, g, prefix):
        batches, in_f, out_f = self.dims(op, g)
        x, w, out = g.t(op.inputs[0]), g.t(op.inputs[1]), g.t(op.outputs[0])
        in_scale, in_zp = x.quant.scalar()
        out_scale, out_zp = out.quant.scalar()
        bias = np.zeros(out_f, np.int64)
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            bias += g.t(op.inputs[2]).data.astype(np.int64)
        # Fold the input zero point into the bias: sum((x - zx) * w) = sum(x * w) - zx * sum(w).
        folded = bias - in_zp * w.data.astype(np.int64).sum(axis=1)
        if w.quant.per_channel:
            mult, shift = per_channel_requant(in_scale, w.quant.scale, out_scale, out_f)
        else:
            # LiteRT's per-tensor path multiplies the two scales in float32 before widening to
            # double (GetQuantizedConvolutionMultipler); the per-channel path multiplies in double.
            m, s = quantize_multiplier(float(np.float32(in_scale) * np.float32(w.quant.scale[0])) / float(out_scale))
            mult, shift = np.full(out_f, m, np.int32), np.full(out_f, s, np.int32)
        act_min, act_max = fused_range(op, out)
        # The Armv7E-M kernel: the same arithmetic and row order, weights in its read order.
        dsp = dsp_enabled()
        k = Kernel(prefix, *(("tm_dsp_fully_connected_s8", "tm_dsp_fully_connected_params") if dsp
                             else ("tm_fully_connected_s8", "tm_fully_connected_params")))
        k.fields = {
            "batches": batches, "in_features": in_f, "out_features": out_f,
            "output_offset": out_zp, "act_min": act_min, "act_max": act_max,
        }
        if dsp:
            stream = gemm_stream(w.data, wrap_int32(folded), mult, shift, FC_GROUP)
            k.fields["stream"] = k.array("stream", "int32_t", stream)
            return k
        k.fields |= {
            "weights": k.array("w", "int8_t", w.data),
            "bias": k.array("bias", "int32_t", wrap_int32(folded)),
            "multiplier": k.array("mult", "int32_t", mult),
            "shift": k.array("shift", "int32_t", shift),
        }
        return k
