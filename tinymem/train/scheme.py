"""A sparse-update training scheme and the part of the graph it trains through.

A scheme names which layers' biases are updated and, per weight tensor, the fraction of output
channels updated (the first ceil(ratio * C_out) channels). Everything else stays frozen in flash.
`backward_path` works out what the backward pass must touch: the ops gradients flow through (from
the logits back to the earliest updated layer), the activations the forward pass must keep for it,
and the tensors that get a gradient buffer. The arithmetic is specified in docs/training.md.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TinymemError, UnsupportedError
from ..model.graph import Graph, Op

TRAINABLE_KINDS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
# Ops gradients can flow through (backward kernels exist for these).
BACKWARD_KINDS = TRAINABLE_KINDS + ("ADD", "MEAN", "AVERAGE_POOL_2D", "MAX_POOL_2D", "RESHAPE", "SQUEEZE", "PAD", "RELU", "RELU6")
RATIOS = (0.0, 0.125, 0.25, 0.5, 1.0)
# Ops whose int8 output clamps (fused activation or saturation): the gradient is masked where the
# output sits at a bound, so their output is kept for the backward pass.
MASKED_KINDS = TRAINABLE_KINDS + ("ADD", "RELU", "RELU6")


@dataclass
class Scheme:
    bias_ops: list[int] = field(default_factory=list)  # op indices whose biases are updated
    weight_ratios: dict[int, float] = field(default_factory=dict)  # op index -> fraction of out channels
    qas: bool = True  # Quantization-Aware Scaling of the gradients (docs/training.md)
    lr: float = 0.05

    def updated_ops(self) -> list[int]:
        return sorted(set(self.bias_ops) | {i for i, r in self.weight_ratios.items() if r > 0})

    def as_dict(self) -> dict:
        return {"bias_ops": sorted(self.bias_ops),
                "weight_ratios": {str(k): v for k, v in sorted(self.weight_ratios.items()) if v > 0},
                "qas": self.qas, "lr": self.lr}

    @classmethod
    def from_dict(cls, d: dict) -> "Scheme":
        try:
            return cls(bias_ops=[int(i) for i in d.get("bias_ops", [])],
                       weight_ratios={int(k): float(v) for k, v in d.get("weight_ratios", {}).items()},
                       qas=bool(d.get("qas", True)), lr=float(d.get("lr", 0.05)))
        except (TypeError, ValueError, AttributeError) as e:
            raise TinymemError(f"bad training scheme: {e}") from None


def read_json_object(path: str | Path, what: str = "training plan") -> dict:
    """A JSON file holding one object (a plan, a scheme, a gain table); one-line errors."""
    try:
        d = json.loads(Path(path).read_text())
    except OSError as e:
        raise TinymemError(f"cannot read {what} {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise TinymemError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(d, dict):
        raise TinymemError(f"{path}: a {what} must be a JSON object")
    return d


def load_scheme(path: str | Path) -> Scheme:
    """A scheme from a train-plan JSON (its "scheme" member) or a bare scheme JSON."""
    d = read_json_object(path)
    return Scheme.from_dict(d.get("scheme", d))


def out_channels(g: Graph, op: Op) -> int:
    return int(g.t(op.outputs[0]).shape[-1])


def updated_channels(g: Graph, op: Op, ratio: float) -> int:
    """Output channels updated at `ratio`: the first ceil(ratio * C_out)."""
    return min(out_channels(g, op), math.ceil(ratio * out_channels(g, op) - 1e-9)) if ratio > 0 else 0


def logits_op(g: Graph) -> Op:
    """The op whose output the loss reads: the producer of the single model output, or the input
    of a final SOFTMAX (the loss applies its own softmax)."""
    if len(g.outputs) != 1:
        raise UnsupportedError(f"training needs a model with one output, this one has {len(g.outputs)}")
    op = g.producer(g.outputs[0])
    if op is None:
        raise UnsupportedError("the model output is not produced by any op")
    while op.kind in ("SOFTMAX", "RESHAPE", "SQUEEZE"):
        prev = g.producer(op.inputs[0])
        if prev is None:
            raise UnsupportedError(f"{op.describe()} reads the model input: nothing to train")
        op = prev
    return op


def trainable_ops(g: Graph) -> list[Op]:
    """Ops with parameters the training can update, in graph order, up to the logits op."""
    last = logits_op(g).index
    return [op for op in g.ops if op.kind in TRAINABLE_KINDS and op.index <= last]


@dataclass
class BackwardPath:
    ops: list[Op]  # ops the gradient flows through, in forward order (backward runs them reversed)
    logits: Op
    grad_tensors: list[int]  # tensors that get a float32 gradient buffer
    saved_tensors: dict[int, int]  # activation tensor -> index of the last backward op that reads it
    input_grad: dict[int, bool]  # op index -> does its backward compute the gradient of its input


def backward_path(g: Graph, scheme: Scheme) -> BackwardPath:
    """What the backward pass of `scheme` touches (see the module docstring)."""
    logits = logits_op(g)
    trainable = {op.index for op in trainable_ops(g)}
    updated = scheme.updated_ops()
    if not updated:
        raise TinymemError("the training scheme updates nothing (no biases, no weight ratio > 0)")
    for i in updated:
        if i not in trainable:
            kind = g.ops[i].kind if 0 <= i < len(g.ops) else "no such op"
            raise TinymemError(f"the scheme updates op {i} ({kind}); trainable ops are "
                               f"{', '.join(map(str, sorted(trainable)))}")
    for i, r in scheme.weight_ratios.items():
        if not 0 <= r <= 1:
            raise TinymemError(f"weight ratio of op {i} is {r}; it must be in [0, 1]")

    # Ops downstream of an updated op (inclusive) and upstream of the logits (inclusive).
    down: set[int] = set()
    for op in g.ops:
        if op.index in updated or any((p := g.producer(t)) is not None and p.index in down
                                      for t in op.inputs if t >= 0):
            down.add(op.index)
    up: set[int] = {logits.index}
    for op in reversed(g.ops):
        if op.index in up:
            for t in op.inputs:
                if t >= 0 and (p := g.producer(t)) is not None:
                    up.add(p.index)
    on_path = sorted(down & up)
    for i in on_path:
        op = g.ops[i]
        if op.kind not in BACKWARD_KINDS:
            raise UnsupportedError(f"{op.describe()}: training cannot back-propagate through {op.kind} "
                                   f"(supported: {', '.join(BACKWARD_KINDS)}); update only layers after it")
    path = [g.ops[i] for i in on_path]
    in_path = set(on_path)

    # Backward runs path ops in reverse; position k of op i is its backward step.
    bstep = {op.index: k for k, op in enumerate(reversed(path))}
    saved: dict[int, int] = {}
    grads: set[int] = {t for op in path for t in op.outputs}
    input_grad: dict[int, bool] = {}

    def keep(t: int, op: Op) -> None:
        saved[t] = max(saved.get(t, -1), bstep[op.index])

    keep(logits.outputs[0], logits)  # the loss reads the logits
    for op in path:
        acts = [t for t in op.inputs if t >= 0 and not g.t(t).is_const]
        feeds = [t for t in acts if (p := g.producer(t)) is not None and p.index in in_path]
        input_grad[op.index] = bool(feeds)
        grads.update(feeds)
        if op.kind in TRAINABLE_KINDS and scheme.weight_ratios.get(op.index, 0) > 0:
            keep(acts[0], op)  # weight gradients read the input
        if op.kind in MASKED_KINDS:
            keep(op.outputs[0], op)  # the activation mask reads the output
        if op.kind == "MAX_POOL_2D" and feeds:
            keep(acts[0], op)  # the gradient goes to the first maximum of each window
    return BackwardPath(path, logits, sorted(grads), saved, input_grad)


__all__ = ["BACKWARD_KINDS", "BackwardPath", "RATIOS", "Scheme", "TRAINABLE_KINDS", "backward_path",
           "load_scheme", "read_json_object", "logits_op", "out_channels", "trainable_ops", "updated_channels"]
