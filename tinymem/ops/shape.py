"""Ops that move bytes without arithmetic: RESHAPE (an alias), PAD, CONCATENATION."""
from __future__ import annotations

from . import register
from .base import Kernel, OpDef, check_shape


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
