"""What every op kind reports about itself, in one place (TinyEngine's lesson, without its copy-paste).

An `OpDef` owns: validation of the variants we support, MACs, the constant arrays and literal
parameters its template emits (so flash bytes are counted from exactly what is emitted), scratch
bytes, and the memory-overlap rules its kernel's read/write order allows.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import TinymemError, UnsupportedError
from ..model.graph import Graph, Op, Tensor
from ..model.quant import FUSED_NAMES, activation_range, quantize_multiplier


@dataclass
class CArray:
    """A constant array the generated C holds in flash."""

    name: str
    ctype: str  # int8_t, int16_t, int32_t, uint8_t
    values: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.values.size) * {"int8_t": 1, "uint8_t": 1, "int16_t": 2, "int32_t": 4}[self.ctype]


@dataclass
class Kernel:
    """How codegen emits one op.

    Most ops are one call of a firmware kernel with a const parameter struct:
    `function(&<prefix>_params, <activation inputs...>, <outputs...>[, scratch])`, rendered by the
    shared template `ops/call.c.j2` from `struct` and `fields` (field -> C literal or array name).
    Ops that need other C (RESHAPE emits nothing) name their own template.
    """

    prefix: str
    function: str = ""
    struct: str = ""
    fields: dict = field(default_factory=dict)
    template: str = "ops/call.c.j2"
    arrays: list[CArray] = field(default_factory=list)

    def array(self, suffix: str, ctype: str, values) -> str:
        """Register a constant array (emitted in flash) and return its C name."""
        name = f"{self.prefix}_{suffix}"
        self.arrays.append(CArray(name, ctype, np.ascontiguousarray(values)))
        return name


@dataclass(frozen=True)
class Overlap:
    """The output may share bytes with op input `input_pos` when in_offset - out_offset >= min_delta.

    Any larger delta is safe too (writes only ever fall further below unread input), and fully
    disjoint placement is always safe. `min_delta` comes from the kernel's access order.
    """

    input_pos: int
    min_delta: int


@dataclass(frozen=True)
class Window:
    """Rows [y0, y1) x columns [x0, x1) of a 4-D NHWC tensor with batch 1 (patch-based inference)."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def h(self) -> int:
        return self.y1 - self.y0

    @property
    def w(self) -> int:
        return self.x1 - self.x0

    @property
    def area(self) -> int:
        return self.h * self.w

    def union(self, other: "Window") -> "Window":
        """The bounding box of both (an empty window adds nothing)."""
        if other.area == 0:
            return self
        if self.area == 0:
            return other
        return Window(min(self.y0, other.y0), max(self.y1, other.y1), min(self.x0, other.x0), max(self.x1, other.x1))

    def contains(self, other: "Window") -> bool:
        return other.area == 0 or (self.y0 <= other.y0 and other.y1 <= self.y1 and self.x0 <= other.x0 and other.x1 <= self.x1)


def full_window(t: Tensor) -> Window:
    return Window(0, int(t.shape[1]), 0, int(t.shape[2]))


def axis_window(lo: int, hi: int, stride: int, pad: int, k: int, dil: int, size: int) -> tuple[int, int]:
    """Input rows a sliding-window op reads for output rows [lo, hi): the bounding box of every tap
    y * stride - pad + i * dil, clipped to [0, size) (empty, at its start, when no tap lies inside)."""
    if hi <= lo:
        return 0, 0
    a = max(0, lo * stride - pad)
    b = min(size, (hi - 1) * stride - pad + (k - 1) * dil + 1)
    return a, max(a, b)


@dataclass
class PatchCall:
    """How one op runs on one patch: C member paths of its params struct set to literal integers
    (e.g. "geo.in_h": 7), and per activation input (op.inputs order, constants skipped) an element
    offset into the stored window it reads."""

    fields: dict
    offsets: list


class OpDef:
    kinds: tuple[str, ...] = ()

    # --- checks -----------------------------------------------------------------------------
    def validate(self, op: Op, g: Graph) -> None:
        require_int8_activations(op, g)

    # --- cost -------------------------------------------------------------------------------
    def macs(self, op: Op, g: Graph) -> int:
        return 0

    def scratch_bytes(self, op: Op, g: Graph) -> int:
        return 0

    # --- memory -----------------------------------------------------------------------------
    def is_alias(self, op: Op, g: Graph) -> bool:
        """True when the output is the input's bytes reinterpreted (RESHAPE): no copy, one buffer."""
        return False

    def overlaps(self, op: Op, g: Graph) -> list[Overlap]:
        return []

    # --- codegen ----------------------------------------------------------------------------
    def kernel(self, op: Op, g: Graph, prefix: str) -> Kernel:
        raise NotImplementedError

    # --- patch-based inference (tinymem/plan/patch.py) --------------------------------------
    # An op that runs on a spatial patch computes an output window from input windows that are
    # held in small buffers ("stored" windows, each clipped to its tensor). Ops that do not
    # implement input_window end a patch stage.
    def input_window(self, op: Op, g: Graph, out: Window) -> list[Window | None] | None:
        """Per input, the window computing output window `out` reads (None for constants and
        unused inputs); None when this op cannot run on a patch."""
        return None

    def output_window(self, op: Op, g: Graph, need: Window, stored: list[Window | None]) -> Window:
        """The window this op computes when `need` is wanted and its inputs hold `stored` (which
        cover input_window(need)); usually `need` itself."""
        return need

    def patch_call(self, op: Op, g: Graph, k: Kernel, out: Window, stored: list[Window | None]) -> PatchCall:
        """Overrides of kernel(op).fields (by C member path) that make the same kernel compute
        output window `out` from inputs held as `stored`."""
        raise NotImplementedError

    def patch_overlaps(self, op: Op, g: Graph, out: Window, stored: list[Window | None]) -> list[Overlap]:
        """overlaps() for one patch's buffers (none: always safe)."""
        return []


# ---------------------------------------------------------------------------------------------
# helpers shared by op families


def require_int8_activations(op: Op, g: Graph) -> None:
    """Every non-constant tensor an op touches must be int8 with a per-tensor quantization."""
    for role, tensors in (("input", g.op_inputs(op)), ("output", g.op_outputs(op))):
        for pos, t in enumerate(tensors):
            if t is None or t.is_const:
                continue
            if t.dtype in ("float32", "float16"):
                raise UnsupportedError(
                    f"{op.describe()}: {role} {pos} is {t.describe()}; tinymem runs fully int8-quantized "
                    "models (convert with a representative dataset and int8 inference input/output types)"
                )
            if t.dtype != "int8":
                raise UnsupportedError(f"{op.describe()}: {role} {pos} is {t.describe()}; only int8 activations are supported")
            if t.quant is None:
                raise UnsupportedError(f"{op.describe()}: {role} {pos} {t.describe()} has no quantization parameters")
            if t.quant.per_channel:
                raise UnsupportedError(f"{op.describe()}: activation {t.describe()} is quantized per channel")


def const_input(op: Op, g: Graph, pos: int, what: str) -> Tensor:
    if pos >= len(op.inputs) or op.inputs[pos] < 0:
        raise UnsupportedError(f"{op.describe()}: missing {what} (input {pos})")
    t = g.t(op.inputs[pos])
    if not t.is_const:
        raise UnsupportedError(f"{op.describe()}: {what} {t.describe()} must be a constant")
    return t


def fused_range(op: Op, out: Tensor) -> tuple[int, int]:
    fused = int(op.options.get("FusedActivationFunction", 0))
    if fused not in (0, 1, 2, 3):
        raise UnsupportedError(f"{op.describe()}: fused activation {FUSED_NAMES.get(fused, fused)} is not supported")
    scale, zp = out.quant.scalar()
    return activation_range(fused, scale, zp)


def per_channel_requant(input_scale: float, filter_scales: np.ndarray, output_scale: float, channels: int):
    """Per-output-channel (multiplier, shift) for conv-like ops, in double as TFLite computes them."""
    scales = np.broadcast_to(np.asarray(filter_scales, np.float32), (channels,))
    pairs = [quantize_multiplier(float(input_scale) * float(s) / float(output_scale)) for s in scales]
    return (np.array([m for m, _ in pairs], np.int32), np.array([s for _, s in pairs], np.int32))


def raster_min_delta(min_read: np.ndarray) -> int:
    """Smallest safe in_offset - out_offset for a kernel that writes output bytes 0,1,2,... in order.

    `min_read[t]` is the lowest input byte read while computing output byte t (+inf if none). When
    byte t is written, every byte read later (by t' > t) must lie above it:
    in + min_read[t'] > out + t  for all t' > t.
    """
    n = min_read.size
    if n <= 1:
        return -(1 << 62)
    future = np.minimum.accumulate(min_read[::-1])[::-1][1:]  # min over t' > t, for t = 0..n-2
    t = np.arange(n - 1, dtype=np.int64)
    finite = np.isfinite(future)
    if not finite.any():
        return -(1 << 62)
    return int(np.max(t[finite] - future[finite].astype(np.int64))) + 1


def check_symmetric_weights(op: Op, w: Tensor) -> None:
    if w.quant is None or np.any(w.quant.zero_point != 0):
        raise UnsupportedError(f"{op.describe()}: weights {w.describe()} must be symmetrically quantized (zero point 0)")


def wrap_int32(v: np.ndarray) -> np.ndarray:
    """Two's-complement wrap to int32: the C kernels accumulate in int32, so folded constants do too."""
    return (((np.asarray(v, np.int64) + 2**31) % 2**32) - 2**31).astype(np.int32)


def check_shape(op: Op, cond: bool, msg: str) -> None:
    if not cond:
        raise UnsupportedError(f"{op.describe()}: {msg}")


__all__ = [
    "CArray", "Kernel", "OpDef", "Overlap", "PatchCall", "TinymemError", "UnsupportedError", "Window",
    "axis_window", "full_window",
    "check_shape", "check_symmetric_weights", "const_input", "fused_range", "per_channel_requant",
    "raster_min_delta", "require_int8_activations", "wrap_int32",
]
