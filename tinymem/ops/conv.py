"""CONV_2D and DEPTHWISE_CONV_2D: int8 NHWC convolution, per-channel requantization.

Geometry (output size, SAME/VALID padding) follows TFLite's ComputePaddingHeightWidth; the
arithmetic follows its reference ConvPerChannel / DepthwiseConvPerChannel kernels, with the input
zero point folded into the bias (see tm_conv.h for why borders stay exact).
"""
from __future__ import annotations

from dataclasses import astuple, dataclass, fields, replace

import numpy as np

from . import register
from .armv7em import (
    DSP_STAGE, DW_QUAD, GEMM_K, depthwise_stream, dsp_enabled, gemm_scratch, gemm_stream, requant_fits, right_shifts,
)
from .base import (
    Kernel, OpDef, Overlap, PatchCall, Window, axis_window, check_shape, check_symmetric_weights, const_input,
    fused_range, per_channel_requant, raster_min_delta, wrap_int32,
)

PADDING_SAME, PADDING_VALID = 0, 1
DEPTHWISE_BLOCK = 16  # TM_DEPTHWISE_BLOCK in tm_conv.h: the overlap rule and weight padding depend on it
DOT_CHUNK = 16  # TM_CONV_DOT_CHUNK in tm_conv.h: the window scratch and weight padding depend on it
CONV_PIXELS = 2  # TM_CONV_PIXELS in tm_conv.h: the conv overlap rule and window scratch depend on it
MAX_TAPS = 1 << 16  # products per output: 2^16 * 128 * 128 = 2^30 keeps the kernels' int32 sums exact


@dataclass(frozen=True)
class Geometry:
    """Mirrors tm_conv_geometry field for field (rendered into the C struct by name)."""

    batches: int
    in_h: int
    in_w: int
    in_c: int
    out_h: int
    out_w: int
    out_c: int
    k_h: int
    k_w: int
    stride_h: int
    stride_w: int
    dil_h: int
    dil_w: int
    pad_top: int
    pad_left: int

    def c_literal(self) -> str:
        return "{ " + ", ".join(f".{f.name} = {v}" for f, v in zip(fields(self), astuple(self))) + " }"


def out_size_and_pad(padding: int, size: int, k: int, stride: int, dil: int) -> tuple[int, int]:
    """(output size, padding before) along one axis, as TFLite computes them. The padding after
    is whatever is left: with an odd total the extra pad lands at the bottom/right."""
    eff = (k - 1) * dil + 1
    out = (size + stride - 1) // stride if padding == PADDING_SAME else (size + stride - eff) // stride
    total = max((out - 1) * stride + eff - size, 0)
    return out, total // 2


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def padded_weights(w: np.ndarray, multiple: int, rows: int) -> np.ndarray:
    """The weights flattened, with zeros appended so that reading whole `multiple`-byte pieces
    from the start of each of the `rows` rows (the kernels' loads) stays inside the array."""
    flat = w.reshape(-1)
    row = flat.size // rows
    return np.concatenate([flat, np.zeros(round_up(row, multiple) - row, flat.dtype)])


def first_valid_tap(out: int, stride: int, pad: int, k: int, dil: int, size: int) -> np.ndarray:
    """Per output coordinate, the lowest input coordinate a tap inside the image reads (-1: none)."""
    taps = (np.arange(out) * stride - pad)[:, None] + np.arange(k)[None, :] * dil
    valid = (taps >= 0) & (taps < size)
    return np.where(valid.any(axis=1), np.where(valid, taps, size).min(axis=1), -1)


class _ConvBase(OpDef):
    """What CONV_2D and DEPTHWISE_CONV_2D share: options, geometry, bias folding, overlap rule."""

    # --- per-kind hooks ---------------------------------------------------------------------
    def filter_hw_out(self, w_shape) -> tuple[int, int, int]:
        raise NotImplementedError

    def check_filter(self, op, g, x, w) -> None:
        raise NotImplementedError

    def min_read(self, op, g, geo: Geometry, pixel: np.ndarray) -> np.ndarray:
        """raster_min_delta's min_read (per output byte, in order) from `pixel`: per output pixel
        in raster order, the lowest input byte any of its taps inside the image reads (inf: none)."""
        raise NotImplementedError

    # --- shared -----------------------------------------------------------------------------
    def validate(self, op, g):
        super().validate(op, g)
        x, out = g.t(op.inputs[0]), g.t(op.outputs[0])
        w = const_input(op, g, 1, "filter")
        check_shape(op, len(x.shape) == 4, f"input {x.describe()} must be 4-D [batch, height, width, channels]")
        check_shape(op, w.dtype == "int8" and len(w.shape) == 4,
                    f"filter {w.describe()} must be int8 and 4-D (int4/int16 filters are not supported)")
        check_symmetric_weights(op, w)
        self.check_filter(op, g, x, w)
        for key in ("StrideH", "StrideW", "DilationHFactor", "DilationWFactor"):
            check_shape(op, int(op.options.get(key, 1)) >= 1, f"{key} must be >= 1, got {op.options.get(key)}")
        padding = int(op.options.get("Padding", PADDING_SAME))
        check_shape(op, padding in (PADDING_SAME, PADDING_VALID), f"padding {padding} is neither SAME nor VALID")
        geo = self.geometry(op, g)
        taps = int(np.prod(w.shape)) // geo.out_c
        check_shape(op, taps <= MAX_TAPS, f"filter {w.describe()} sums {taps} products per output; more than "
                    f"{MAX_TAPS} could overflow the int32 accumulator")
        check_shape(op, geo.out_h >= 1 and geo.out_w >= 1,
                    f"VALID padding: the dilated {geo.k_h}x{geo.k_w} filter is larger than the "
                    f"{geo.in_h}x{geo.in_w} input of {x.describe()}")
        want = (geo.batches, geo.out_h, geo.out_w, geo.out_c)
        check_shape(op, tuple(out.shape) == want,
                    f"output {out.describe()} should be {list(want)} for this input, filter, stride, dilation "
                    "and padding")
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            b = const_input(op, g, 2, "bias")
            check_shape(op, b.dtype == "int32" and b.size == geo.out_c,
                        f"bias {b.describe()} must be int32 [{geo.out_c}] (int64 bias is not supported)")
        fused_range(op, out)

    def geometry(self, op, g) -> Geometry:
        x, w = g.t(op.inputs[0]), g.t(op.inputs[1])
        k_h, k_w, out_c = self.filter_hw_out(w.shape)
        o = op.options
        sh, sw = int(o.get("StrideH", 1)), int(o.get("StrideW", 1))
        dh, dw = int(o.get("DilationHFactor", 1)), int(o.get("DilationWFactor", 1))
        padding = int(o.get("Padding", PADDING_SAME))
        b, in_h, in_w, in_c = x.shape
        out_h, pad_top = out_size_and_pad(padding, in_h, k_h, sh, dh)
        out_w, pad_left = out_size_and_pad(padding, in_w, k_w, sw, dw)
        return Geometry(b, in_h, in_w, in_c, out_h, out_w, out_c, k_h, k_w, sh, sw, dh, dw, pad_top, pad_left)

    def overlaps(self, op, g):
        return self._raster_rule(op, g, self.geometry(op, g))

    def _raster_rule(self, op, g, geo: Geometry) -> list[Overlap]:
        fy = first_valid_tap(geo.out_h, geo.stride_h, geo.pad_top, geo.k_h, geo.dil_h, geo.in_h)
        fx = first_valid_tap(geo.out_w, geo.stride_w, geo.pad_left, geo.k_w, geo.dil_w, geo.in_w)
        batch = np.arange(geo.batches)[:, None, None] * (geo.in_h * geo.in_w)
        pixel = (batch + fy[None, :, None] * geo.in_w + fx[None, None, :]).astype(np.float64) * geo.in_c
        # A pixel with no tap inside the image (possible with large dilation) reads nothing.
        pixel[:, (fy < 0), :] = np.inf
        pixel[:, :, (fx < 0)] = np.inf
        return [Overlap(0, raster_min_delta(self.min_read(op, g, geo, pixel.reshape(-1))))]

    # --- patch-based inference ---------------------------------------------------------------
    def input_window(self, op, g, out):
        if g.t(op.inputs[0]).shape[0] != 1:
            return None
        geo = self.geometry(op, g)
        y = axis_window(out.y0, out.y1, geo.stride_h, geo.pad_top, geo.k_h, geo.dil_h, geo.in_h)
        x = axis_window(out.x0, out.x1, geo.stride_w, geo.pad_left, geo.k_w, geo.dil_w, geo.in_w)
        return [Window(*y, *x)] + [None] * (len(op.inputs) - 1)

    def window_geometry(self, op, g, out: Window, stored: Window) -> Geometry:
        """The whole-tensor geometry moved onto one patch: the input is the stored window, the
        output the patch; the pads (any sign) keep every tap on its input pixel, so taps outside
        the image still read the zero point and interior patches pad nothing."""
        geo = self.geometry(op, g)
        return replace(geo, in_h=stored.h, in_w=stored.w, out_h=out.h, out_w=out.w,
                       pad_top=geo.pad_top - out.y0 * geo.stride_h + stored.y0,
                       pad_left=geo.pad_left - out.x0 * geo.stride_w + stored.x0)

    def patch_call(self, op, g, k, out, stored):
        geo = self.window_geometry(op, g, out, stored[0])
        names = ("in_h", "in_w", "out_h", "out_w", "pad_top", "pad_left")
        return PatchCall({f"geo.{n}": getattr(geo, n) for n in names}, [0])

    def patch_overlaps(self, op, g, out, stored):
        return self._raster_rule(op, g, self.window_geometry(op, g, out, stored[0]))

    def quant_values(self, op, g, filter_sums: np.ndarray) -> dict:
        """input_zp, output_zp, act_min, act_max, and per output channel the folded int32 bias,
        multiplier and shift; `filter_sums[c]` is the sum of output channel c's weights."""
        x, w, out = g.t(op.inputs[0]), g.t(op.inputs[1]), g.t(op.outputs[0])
        in_scale, in_zp = x.quant.scalar()
        out_scale, out_zp = out.quant.scalar()
        out_c = filter_sums.size
        bias = np.zeros(out_c, np.int64)
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            bias += g.t(op.inputs[2]).data.astype(np.int64)
        # sum((x - zp) * w) = sum(x * w) - zp * sum(w) over all taps. TFLite skips padded taps;
        # the kernels make them read zp instead, which cancels their share of the fold.
        folded = bias - in_zp * filter_sums.astype(np.int64)
        mult, shift = per_channel_requant(in_scale, w.quant.scale, out_scale, out_c)
        act_min, act_max = fused_range(op, out)
        return {"input_zp": in_zp, "output_zp": out_zp, "act_min": act_min, "act_max": act_max,
                "bias": wrap_int32(folded), "mult": mult, "shift": shift}

    def quant_fields(self, op, g, k: Kernel, filter_sums: np.ndarray) -> str:
        """The tm_conv_quant literal."""
        q = self.quant_values(op, g, filter_sums)
        return (f"{{ .input_zp = {q['input_zp']}, .output_offset = {q['output_zp']}, .act_min = {q['act_min']}, "
                f".act_max = {q['act_max']}, .bias = {k.array('bias', 'int32_t', q['bias'])}, "
                f".multiplier = {k.array('mult', 'int32_t', q['mult'])}, "
                f".shift = {k.array('shift', 'int32_t', q['shift'])} }}")

    # --- Armv7E-M kernels (tinymem/ops/armv7em.py) ------------------------------------------
    def filter_rows(self, op, g) -> np.ndarray:
        """The weights as [out_c, taps]: what each output channel's accumulator multiplies."""
        raise NotImplementedError

    def dsp_shape_ok(self, op, g, geo: Geometry) -> bool:
        raise NotImplementedError

    def dsp_kernel_name(self, op, g, geo: Geometry) -> str:
        raise NotImplementedError

    def dsp_function(self, op, g) -> str | None:
        """The DSP kernel this layer runs under the armv7em kernel set; None: the portable one."""
        if not dsp_enabled():
            return None
        geo = self.geometry(op, g)
        if not self.dsp_shape_ok(op, g, geo):
            return None
        rows = self.filter_rows(op, g)
        q = self.quant_values(op, g, rows.astype(np.int64).sum(axis=1))
        return self.dsp_kernel_name(op, g, geo) if requant_fits(q["bias"], rows, q["shift"]) else None

    def dsp_kernel(self, op, g, prefix: str, function: str) -> Kernel:
        """The DSP kernel's call: the same geometry literal as the portable one (the patch stage
        sets geo.*), then the kernel's own constants (dsp_arrays)."""
        rows = self.filter_rows(op, g)
        q = self.quant_values(op, g, rows.astype(np.int64).sum(axis=1))
        k = Kernel(prefix, function, self.dsp_struct)
        k.fields = {
            "geo": self.geometry(op, g).c_literal(),
            "input_zp": q["input_zp"], "out_round": 1 + 2 * q["output_zp"],
            "act_min": q["act_min"], "act_max": q["act_max"],
        }
        k.fields.update(self.dsp_arrays(k, rows, q))
        return k


def check_filter_scales(op, w, axis: int, channels: int) -> None:
    """Per-tensor, or per-channel along the output-channel axis (TFLite's own rule)."""
    n = w.quant.scale.size
    check_shape(op, n in (1, channels), f"filter {w.describe()} has {n} scales; expected 1 or {channels}")
    if n > 1:
        check_shape(op, w.quant.axis == axis,
                    f"filter {w.describe()} is quantized per channel on axis {w.quant.axis}; expected axis {axis}")


@register
class Conv2D(_ConvBase):
    kinds = ("CONV_2D",)

    def filter_hw_out(self, w_shape):
        return int(w_shape[1]), int(w_shape[2]), int(w_shape[0])

    def check_filter(self, op, g, x, w):
        in_c, fc, out_c = x.shape[3], w.shape[3], w.shape[0]
        check_shape(op, fc >= 1 and in_c % fc == 0, f"filter {w.describe()} has {fc} input channels, which does "
                    f"not divide the {in_c} of {x.describe()}")
        groups = in_c // fc
        check_shape(op, out_c % groups == 0,
                    f"grouped conv: {out_c} filters of {w.describe()} do not split into {groups} groups")
        check_filter_scales(op, w, 0, out_c)

    def groups(self, op, g) -> int:
        return g.t(op.inputs[0]).shape[3] // g.t(op.inputs[1]).shape[3]

    def filter_rows(self, op, g):
        w = g.t(op.inputs[1])
        return w.data.reshape(w.shape[0], -1)

    def dsp_shape_ok(self, op, g, geo):
        # tm_dsp_conv_s8 widens whole-quad taps from the input, or stages small windows
        return self.groups(op, g) == 1 and (geo.in_c % GEMM_K == 0 or geo.k_h * geo.k_w * geo.in_c <= DSP_STAGE)

    def dsp_kernel_name(self, op, g, geo):
        return "tm_dsp_conv_1x1_s8" if geo.k_h == geo.k_w == 1 else "tm_dsp_conv_s8"

    dsp_struct = "tm_dsp_conv_params"

    def dsp_arrays(self, k, rows, q):
        stream = gemm_stream(rows, q["bias"], q["mult"], right_shifts(q["shift"]))
        return {"stream": k.array("stream", "int32_t", stream)}

    def scratch_bytes(self, op, g):
        taps = int(np.prod(g.t(op.inputs[1]).shape[1:]))
        if self.dsp_function(op, g):
            return gemm_scratch(taps)  # the same two-pixel passes, windows padded to fours
        # Every group's window of CONV_PIXELS pixels, widened to int16 and zero-padded to whole
        # dot-product chunks, plus a byte to realign an odd scratch offset.
        return 2 * CONV_PIXELS * self.groups(op, g) * round_up(taps, DOT_CHUNK) + 1

    def min_read(self, op, g, geo, pixel):
        # CONV_PIXELS pixels at a time (raster order, across rows and batches): all their reads,
        # every group's, happen before the first of their output bytes is written (in whatever
        # order those are written), and none after it until the next pass.
        first = np.minimum.reduceat(pixel, np.arange(0, pixel.size, CONV_PIXELS))
        out = np.full((pixel.size, geo.out_c), np.inf)
        out[::CONV_PIXELS, 0] = first
        return out.reshape(-1)

    def macs(self, op, g):
        geo = self.geometry(op, g)
        return geo.batches * geo.out_h * geo.out_w * geo.out_c * geo.k_h * geo.k_w * g.t(op.inputs[1]).shape[3]

    def kernel(self, op, g, prefix):
        function = self.dsp_function(op, g)
        if function:
            return self.dsp_kernel(op, g, prefix, function)
        geo = self.geometry(op, g)
        w = g.t(op.inputs[1])
        k = Kernel(prefix, "tm_conv_s8", "tm_conv_params")
        sums = w.data.astype(np.int64).reshape(geo.out_c, -1).sum(axis=1)
        k.fields = {
            "geo": geo.c_literal(),
            "q": self.quant_fields(op, g, k, sums),
            "groups": self.groups(op, g),
            # A filter's last dot-product chunk runs past its end (into zeros of the window).
            "weights": k.array("w", "int8_t", padded_weights(w.data, DOT_CHUNK, geo.out_c)),
        }
        return k


@register
class DepthwiseConv2D(_ConvBase):
    kinds = ("DEPTHWISE_CONV_2D",)

    def filter_hw_out(self, w_shape):
        return int(w_shape[1]), int(w_shape[2]), int(w_shape[3])

    def check_filter(self, op, g, x, w):
        in_c, out_c = x.shape[3], w.shape[3]
        check_shape(op, w.shape[0] == 1, f"filter {w.describe()} must be [1, height, width, channels]")
        # Like LiteRT, the multiplier comes from the shapes; the DepthMultiplier option is ignored.
        check_shape(op, in_c >= 1 and out_c % in_c == 0,
                    f"filter {w.describe()} has {out_c} channels, not a multiple of the {in_c} of {x.describe()}")
        check_filter_scales(op, w, 3, out_c)

    def filter_rows(self, op, g):
        w = g.t(op.inputs[1])
        return w.data.reshape(-1, w.shape[3]).T

    def dsp_shape_ok(self, op, g, geo):
        return ((geo.k_h, geo.k_w, geo.dil_h, geo.dil_w) == (3, 3, 1, 1) and geo.out_c == geo.in_c
                and geo.in_c % DW_QUAD == 0)

    def dsp_kernel_name(self, op, g, geo):
        return "tm_dsp_depthwise_3x3_s8"

    dsp_struct = "tm_dsp_depthwise_params"

    def dsp_arrays(self, k, rows, q):
        return {"quads": k.array("quads", "int32_t", depthwise_stream(q["bias"], q["mult"], q["shift"], rows.T))}

    def min_read(self, op, g, geo, pixel):
        # A block's reads all happen before its first byte is written, and none between its later
        # bytes: charge them to the first byte, from the block's first input channel up (a partial
        # last block may read past the pixel's channels, but those reads do not reach its output).
        # The DSP kernel's blocks are its four-channel passes.
        block = DW_QUAD if self.dsp_function(op, g) else DEPTHWISE_BLOCK
        c = np.arange(geo.out_c)
        offsets = np.where(c % block == 0, c // (geo.out_c // geo.in_c), np.inf)
        return (pixel[:, None] + offsets[None, :]).reshape(-1)

    def macs(self, op, g):
        geo = self.geometry(op, g)
        return geo.batches * geo.out_h * geo.out_w * geo.out_c * geo.k_h * geo.k_w

    def kernel(self, op, g, prefix):
        function = self.dsp_function(op, g)
        if function:
            return self.dsp_kernel(op, g, prefix, function)
        geo = self.geometry(op, g)
        w = g.t(op.inputs[1])
        k = Kernel(prefix, "tm_depthwise_conv_s8", "tm_depthwise_conv_params")
        sums = w.data.astype(np.int64).reshape(-1, geo.out_c).sum(axis=0)
        k.fields = {
            "geo": geo.c_literal(),
            "q": self.quant_fields(op, g, k, sums),
            "depth_mult": geo.out_c // geo.in_c,
            # A partial last block of channels still loads a whole block of weights.
            "weights": k.array("w", "int8_t", padded_weights(w.data, DEPTHWISE_BLOCK, geo.k_h * geo.k_w)),
        }
        return k


__all__ = ["Conv2D", "DepthwiseConv2D", "Geometry", "out_size_and_pad"]
