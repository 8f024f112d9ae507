"""Ops that move bytes without arithmetic: RESHAPE (an alias), PAD/PADV2, CONCATENATION.

Also the small shape helpers the element-wise and pooling families share (C brace literals,
row-major strides, TM_MAX_DIMS).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import register
from .base import (
    Kernel, OpDef, Overlap, PatchCall, UnsupportedError, Window, check_shape, const_input, raster_min_delta,
)

MAX_DIMS = 6  # TM_MAX_DIMS in tm_shape.h


def braces(values) -> str:
    """A C initializer list: {1, 2, 3}."""
    return "{" + ", ".join(str(int(v)) for v in values) + "}"


def row_major_strides(shape) -> list[int]:
    strides, acc = [], 1
    for n in reversed(list(shape)):
        strides.append(acc)
        acc *= int(n)
    return strides[::-1]


def same_quant(a, b) -> bool:
    """Exact equality of per-tensor quantization, as TFLite compares it (float32 scales)."""
    return a.quant is not None and b.quant is not None and a.quant.scalar() == b.quant.scalar()


def check_int8_const(op, t, what: str) -> None:
    """Constant int8 operands need the same per-tensor quantization activations have."""
    check_shape(op, t.dtype == "int8", f"{what} {t.describe()} must be int8")
    check_shape(op, t.quant is not None and not t.quant.per_channel,
                f"{what} {t.describe()} needs a per-tensor quantization")


def raster_overlap(pos: int, min_read: np.ndarray) -> Overlap:
    """Overlap rule of a kernel writing its output in raster order (see raster_min_delta)."""
    return Overlap(pos, raster_min_delta(np.asarray(min_read, np.float64).reshape(-1)))


@register
class Reshape(OpDef):
    """RESHAPE never copies: the output tensor is the input's buffer under another shape."""

    kinds = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS")

    def validate(self, op, g):
        super().validate(op, g)
        src, dst = g.t(op.inputs[0]), g.t(op.outputs[0])
        check_shape(op, src.size == dst.size, f"reshapes {src.size} elements into {dst.size}")
        check_shape(op, src.quant.scalar() == dst.quant.scalar(),
                    "input and output quantization differ (a requantizing reshape)")

    def is_alias(self, op, g):
        return True

    def kernel(self, op, g, prefix):
        return Kernel(prefix, template="ops/alias.c.j2")


@register
class Pad(OpDef):
    """PAD / PADV2: a byte copy into a frame of the pad value (TFLite never requantizes here)."""

    kinds = ("PAD", "PADV2")

    def validate(self, op, g):
        x, y = g.t(op.inputs[0]), g.t(op.outputs[0])
        check_shape(op, 1 <= len(x.shape) <= 5, f"input {x.describe()} must have rank 1 to 5 (TFLite's PAD limit)")
        before, after = self.paddings(op, g)  # first: dynamic paddings would read as an int32 activation
        super().validate(op, g)
        self.pad_value(op, g)
        check_shape(op, not x.is_const, f"input {x.describe()} is a constant (a foldable PAD)")
        check_shape(op, same_quant(x, y), f"input {x.describe()} and output {y.describe()} quantization differ; "
                    "TFLite's int8 PAD copies bytes and never requantizes")
        want = tuple(int(n) + b + a for n, b, a in zip(x.shape, before, after))
        check_shape(op, tuple(y.shape) == want, f"output {y.describe()} should have shape {list(want)}")

    def paddings(self, op, g):
        x, p = g.t(op.inputs[0]), const_input(op, g, 1, "paddings")
        check_shape(op, p.dtype in ("int32", "int64") and tuple(p.shape) == (len(x.shape), 2),
                    f"paddings {p.describe()} must be int32/int64 [{len(x.shape)}, 2]")
        check_shape(op, bool(np.all(p.data >= 0)), f"paddings {p.describe()} has negative entries {p.data.tolist()}")
        return [int(v) for v in p.data[:, 0]], [int(v) for v in p.data[:, 1]]

    def pad_value(self, op, g) -> int:
        y = g.t(op.outputs[0])
        if op.kind == "PAD" or len(op.inputs) < 3 or op.inputs[2] < 0:
            return y.quant.scalar()[1]  # the output zero point is real 0.0
        c = const_input(op, g, 2, "constant_values")
        check_int8_const(op, c, "constant_values")
        check_shape(op, c.size == 1, f"constant_values {c.describe()} must hold one value")
        check_shape(op, same_quant(c, y), f"constant_values {c.describe()} must share the output's "
                    "scale and zero point (TFLite requires it)")
        return int(c.data.reshape(-1)[0])

    def dims(self, op, g):
        """(in_shape, before, after) with trailing unpadded dims merged into the row before them."""
        before, after = self.paddings(op, g)
        dims = []
        for n, b, a in zip(g.t(op.inputs[0]).shape, before, after):
            if dims and b == 0 and a == 0:
                pn, pb, pa = dims[-1]
                dims[-1] = (pn * n, pb * n, pa * n)
            else:
                dims.append((int(n), b, a))
        return [list(c) for c in zip(*dims)]

    def overlaps(self, op, g):
        # Output byte t reads at most input byte t: the input may sit anywhere at or above the
        # output by the margin the leading padding needs.
        x, y = g.t(op.inputs[0]), g.t(op.outputs[0])
        before, _ = self.paddings(op, g)
        min_read = np.full(y.shape, np.inf)
        min_read[tuple(slice(b, b + n) for b, n in zip(before, x.shape))] = np.arange(x.size).reshape(x.shape)
        return [raster_overlap(0, min_read)]

    # --- patch-based inference: spatial and channel padding of a batch-1 NHWC tensor ------------
    def input_window(self, op, g, out):
        x = g.t(op.inputs[0])
        if len(x.shape) != 4 or x.shape[0] != 1:
            return None
        before, after = self.paddings(op, g)
        if before[0] or after[0]:
            return None

        def axis(lo, hi, b, n):
            a = min(max(0, lo - b), n)
            return a, max(a, min(n, hi - b))

        return [Window(*axis(out.y0, out.y1, before[1], x.shape[1]), *axis(out.x0, out.x1, before[2], x.shape[2]))] + \
            [None] * (len(op.inputs) - 1)

    def output_window(self, op, g, need, stored):
        # The kernel copies its whole input: the output window spans the stored input (moved by
        # the leading padding) and whatever of `need` lies around it, which is pure padding.
        before, _ = self.paddings(op, g)
        s = stored[0]
        return Window(min(need.y0, s.y0 + before[1]), max(need.y1, s.y1 + before[1]),
                      min(need.x0, s.x0 + before[2]), max(need.x1, s.x1 + before[2]))

    def _window_box(self, op, g, out, s):
        before, after = self.paddings(op, g)
        c = int(g.t(op.inputs[0]).shape[3])
        return ([s.h, s.w, c], [s.y0 + before[1] - out.y0, s.x0 + before[2] - out.x0, before[3]],
                [out.y1 - s.y1 - before[1], out.x1 - s.x1 - before[2], after[3]])

    def patch_call(self, op, g, k, out, stored):
        shape, before, after = self._window_box(op, g, out, stored[0])
        fields = {"dims": 3}
        for name, vals in (("in_shape", shape), ("before", before), ("after", after)):
            fields.update({f"{name}[{d}]": v for d, v in enumerate(vals)})
        return PatchCall(fields, [0])

    def patch_overlaps(self, op, g, out, stored):
        shape, before, _ = self._window_box(op, g, out, stored[0])
        min_read = np.full((out.h, out.w, int(g.t(op.outputs[0]).shape[3])), np.inf)
        min_read[tuple(slice(b, b + n) for b, n in zip(before, shape))] = np.arange(int(np.prod(shape))).reshape(shape)
        return [raster_overlap(0, min_read)]

    def kernel(self, op, g, prefix):
        shape, before, after = self.dims(op, g)
        k = Kernel(prefix, "tm_pad_s8", "tm_pad_params")
        k.fields = {"dims": len(shape), "in_shape": braces(shape), "before": braces(before),
                    "after": braces(after), "pad_value": self.pad_value(op, g)}
        return k


@dataclass
class ConcatKernel(Kernel):
    """The concat template builds the input pointer table from `sources`: None takes the next
    activation pointer, a string names a constant array."""

    sources: list = field(default_factory=list)


@register
class Concatenation(OpDef):
    """CONCATENATION: int8 inputs must share the output's quantization (TFLite enforces it), so
    it is a pure copy."""

    kinds = ("CONCATENATION",)

    def validate(self, op, g):
        super().validate(op, g)
        y = g.t(op.outputs[0])
        ins = [g.t(i) for i in op.inputs]
        check_shape(op, int(op.options.get("FusedActivationFunction", 0)) == 0,
                    "a fused activation is not allowed on CONCATENATION (TFLite rejects it)")
        check_shape(op, not all(t.is_const for t in ins), "every input is a constant (a foldable CONCATENATION)")
        rank = len(y.shape)
        check_shape(op, rank >= 1, f"output {y.describe()} must have rank >= 1")
        axis = self.axis(op, g)
        total = 0
        for pos, t in enumerate(ins):
            if t.is_const:
                check_int8_const(op, t, f"input {pos}")
            check_shape(op, len(t.shape) == rank and all(t.shape[d] == y.shape[d] for d in range(rank) if d != axis),
                        f"input {pos} {t.describe()} does not match output {y.describe()} off axis {axis}")
            check_shape(op, same_quant(t, y), f"input {pos} {t.describe()} quantization differs from the output's "
                        "(TFLite's int8 CONCATENATION requires equal scale and zero point)")
            total += t.shape[axis]
        check_shape(op, total == y.shape[axis], f"inputs add up to {total} along axis {axis}, output has {y.shape[axis]}")

    def axis(self, op, g) -> int:
        rank = len(g.t(op.outputs[0]).shape)
        axis = int(op.options.get("Axis", 0))
        axis = axis + rank if axis < 0 else axis
        if not 0 <= axis < rank:
            raise UnsupportedError(f"{op.describe()}: axis {op.options.get('Axis')} is out of range for rank {rank}")
        return axis

    def chunks(self, op, g) -> tuple[int, list[int]]:
        """(outer, bytes per outer step of each input)."""
        y, axis = g.t(op.outputs[0]), self.axis(op, g)
        outer = int(np.prod(y.shape[:axis], dtype=np.int64))
        return outer, [g.t(i).size // max(outer, 1) for i in op.inputs]

    def overlaps(self, op, g):
        # Output step o holds each input's o-th chunk in turn; an input placed exactly over its
        # own slot (axis 0) is a no-op copy.
        outer, chunks = self.chunks(op, g)
        total = sum(chunks)
        rules = []
        start = 0
        for pos, c in enumerate(chunks):
            if not g.t(op.inputs[pos]).is_const:
                min_read = np.full((outer, total), np.inf)
                min_read[:, start:start + c] = np.arange(outer * c).reshape(outer, c)
                rules.append(raster_overlap(pos, min_read))
            start += c
        return rules

    def kernel(self, op, g, prefix):
        outer, chunks = self.chunks(op, g)
        k = ConcatKernel(prefix, "tm_concat_s8", "tm_concat_params", template="ops/concat.c.j2")
        k.sources = [k.array(f"in{pos}", "int8_t", t.data.reshape(-1)) if t.is_const else None
                     for pos, t in enumerate(g.t(i) for i in op.inputs)]
        k.fields = {"inputs": len(chunks), "outer": outer, "chunk": k.array("chunk", "int32_t", np.array(chunks, np.int32))}
        return k
