"""What the reference and the generated C share about a training scheme: the path's ops in the
order the forward needs them, and per updated op the constants of its update (docs/training.md).

Float32 constants are computed here once, in numpy float32, and emitted to C bit for bit (hex
literals), so the two sides multiply by the very same numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import TinymemError, UnsupportedError
from ..model.graph import Graph, Op
from ..ops import opdef
from ..ops.base import fused_range
from .scheme import MASKED_KINDS, BackwardPath, Scheme, backward_path, updated_channels

F32 = np.float32


def upstream_ops(g: Graph, op: Op) -> list[Op]:
    """`op` and every op it depends on, in graph order: what a forward pass to `op` runs."""
    need = {op.index}
    for o in reversed(g.ops[:op.index + 1]):
        if o.index in need:
            need.update(p.index for t in o.inputs if t >= 0 and (p := g.producer(t)) is not None)
    return [o for o in g.ops if o.index in need]


def channel_rows(kind: str, w: np.ndarray) -> np.ndarray:
    """Weights as [C_out, K] rows (K = taps feeding one output channel), a copy."""
    c = w.shape[3] if kind == "DEPTHWISE_CONV_2D" else w.shape[0]
    return (w.reshape(-1, c).T if kind == "DEPTHWISE_CONV_2D" else w.reshape(c, -1)).copy()


def from_rows(kind: str, rows: np.ndarray, shape) -> np.ndarray:
    """Inverse of channel_rows."""
    return (rows.T if kind == "DEPTHWISE_CONV_2D" else rows).reshape(shape).copy()


def mask_range(g: Graph, op: Op) -> tuple[int, int]:
    """[lo, hi]: the int8 clamp of a masked op's output; the gradient passes where lo < q < hi."""
    if op.kind in ("RELU", "RELU6"):
        f = opdef(op).kernel(op, g, "m").fields
        return int(f["act_min"]), int(f["act_max"])
    return fused_range(op, g.t(op.outputs[0]))


@dataclass
class LayerSpec:
    """An updated op's constants: channels updated, scales and the per-channel step factors.
    The update is M -= lr * (coef * g) with g the real-unit gradient: coef = s / (s * s) with QAS
    (the step g_q / s^2 of g_q = s * g), s without it."""

    op: Op
    n_w: int  # weight channels updated (the first n_w)
    bias: bool  # biases updated
    in_scale: np.float32
    in_zp: int
    w_scale: np.ndarray  # float32 [C_out]
    coef_w: np.ndarray  # float32 [C_out]
    coef_b: np.ndarray  # float32 [C_out], for bias scale in_scale * w_scale

    @property
    def channels(self) -> int:
        return self.w_scale.size


def layer_spec(g: Graph, op: Op, scheme: Scheme) -> LayerSpec:
    x, w = g.t(op.inputs[0]), g.t(op.inputs[1])
    c = int(g.t(op.outputs[0]).shape[-1])
    s_x, z_x = x.quant.scalar()
    s_w = np.broadcast_to(np.asarray(w.quant.scale, F32), (c,)).astype(F32)
    s_b = (F32(s_x) * s_w).astype(F32)

    def coef(s):
        return (s / (s * s)).astype(F32) if scheme.qas else s

    return LayerSpec(op, updated_channels(g, op, scheme.weight_ratios.get(op.index, 0.0)), op.index in scheme.bias_ops,
                     F32(s_x), z_x, s_w, coef(s_w), coef(s_b))


@dataclass
class TrainGraph:
    """A scheme on a graph: the backward path, the forward ops, the updated layers."""

    g: Graph
    scheme: Scheme
    path: BackwardPath
    forward: list[Op]  # every op up to the logits, graph order
    frozen: list[Op]  # forward ops off the path: their outputs never change
    layers: dict[int, LayerSpec]
    masks: dict[int, tuple[int, int]]  # masked path op -> (lo, hi)

    @property
    def on_path(self) -> set[int]:
        return {op.index for op in self.path.ops}

    def feeds(self, op: Op) -> list[int]:
        """Activation inputs of a path op that receive a gradient (produced on the path)."""
        on = self.on_path
        return [t for t in op.inputs if t >= 0 and (p := self.g.producer(t)) is not None and p.index in on]


def train_graph(g: Graph, scheme: Scheme) -> TrainGraph:
    if len(g.inputs) != 1:
        raise UnsupportedError(f"training needs a model with one input, this one has {len(g.inputs)}")
    path = backward_path(g, scheme)
    forward = upstream_ops(g, path.logits)
    on = {op.index for op in path.ops}
    tg = TrainGraph(g, scheme, path, forward, [op for op in forward if op.index not in on],
                    {i: layer_spec(g, g.ops[i], scheme) for i in scheme.updated_ops()},
                    {op.index: mask_range(g, op) for op in path.ops if op.kind in MASKED_KINDS})
    for op in path.ops:
        if op.kind == "ADD":
            for t in tg.feeds(op):
                if g.t(t).shape != g.t(op.outputs[0]).shape:
                    raise UnsupportedError(f"{op.describe()}: training cannot back-propagate through a broadcasting "
                                           f"ADD ({g.t(t).describe()} is broadcast to {list(g.t(op.outputs[0]).shape)})")
    if g.t(path.logits.outputs[0]).size < 2:
        raise TinymemError(f"{path.logits.describe()}: the logits have one element; the loss needs two classes or more")
    return tg


__all__ = ["LayerSpec", "TrainGraph", "channel_rows", "from_rows", "layer_spec", "mask_range", "train_graph",
           "upstream_ops"]
