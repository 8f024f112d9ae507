"""The numpy reference of one training step (docs/training.md): int8 forward, float32 backward,
SGD with quantization-aware scaling. The generated C must agree with it (section 5).

- Forward: path ops by tinymem.train.forward (bit-exact with LiteRT BUILTIN_REF) with the current
  int8 parameters; the frozen ops before the path by the generated inference C on the host, once
  per sample (their outputs never change), which tests/test_zoo.py holds bit-exact with LiteRT.
- Backward: `backward` on a `View` of the activations. The int8 view dequantizes the forward's
  tensors; tests give it a float view of the same graph without rounding (finite differences).
- Update: all gradients first, then every update. The C interleaves them (operator reordering),
  which computes the same numbers: an op's update touches only that op's parameters, and its
  input gradient is taken with the old weights on both sides.
"""
from __future__ import annotations

import tempfile
import weakref
from dataclasses import dataclass, field

import numpy as np

from ..errors import TinymemError
from ..model.boundary import sample_shape
from ..model.graph import Graph, Op
from ..ops import opdef
from .forward import conv_taps, gather, layer_params, pool_taps, prepare, run_op
from .layers import TrainGraph, channel_rows, from_rows, train_graph
from .scheme import Scheme

F32 = np.float32
BIAS_MAX = F32(2147483520.0)  # the largest float32 below 2^31: bias masters round into int32


def round_weights(m: np.ndarray) -> np.ndarray:
    """Wq = clamp(floorf(M + 0.5f), -127, 127)."""
    return np.clip(np.floor(m + F32(0.5)), -127, 127).astype(np.int8)


def round_bias(b: np.ndarray) -> np.ndarray:
    """bq = (int32)clamp(floorf(B + 0.5f), -2^31, BIAS_MAX)."""
    return np.clip(np.floor(b + F32(0.5)), F32(-2147483648.0), BIAS_MAX).astype(np.int64).astype(np.int32)


# --- the frozen prefix, run by the generated inference C ------------------------------------------

_PREFIX_CACHE: dict[tuple, "FrozenPrefix"] = {}


class FrozenPrefix:
    """The forward ops before the path, compiled once per graph and boundary; outputs cached per sample."""

    def __init__(self, g: Graph, ops: list[Op], outputs: list[int]):
        from ..plan import make_plan
        from ..sim import build_host

        sub = Graph(f"{g.name}_frozen", g.tensors, [Op(k, o.kind, list(o.inputs), list(o.outputs), o.options)
                                                     for k, o in enumerate(ops)],
                    list(g.inputs), list(outputs), [None] * len(g.inputs), [None] * len(outputs))
        self.outputs = outputs
        self.shapes = [g.t(t).shape for t in outputs]
        self.host = build_host(sub, make_plan(sub), tempfile.mkdtemp(prefix="tinymem-frozen-"))
        self.values: dict[bytes, list[np.ndarray]] = {}

    @classmethod
    def get(cls, g: Graph, ops: list[Op], outputs: list[int]) -> "FrozenPrefix":
        key = (id(g), tuple(o.index for o in ops), tuple(outputs))
        if key not in _PREFIX_CACHE:
            _PREFIX_CACHE[key] = cls(g, ops, outputs)
            weakref.finalize(g, _PREFIX_CACHE.pop, key, None)
        return _PREFIX_CACHE[key]

    def run(self, xs: np.ndarray) -> list[dict[int, np.ndarray]]:
        """Per sample of xs [N, *input shape]: frozen tensor -> int8 value."""
        xs = np.asarray(xs, np.int8)
        todo = [x for x in {x.tobytes(): x for x in xs}.values() if x.tobytes() not in self.values]
        if todo:
            outs = self.host.run([np.stack(todo)])
            for k, x in enumerate(todo):
                self.values[x.tobytes()] = [o[k].reshape(s) for o, s in zip(outs, self.shapes)]
        return [dict(zip(self.outputs, self.values[x.tobytes()])) for x in xs]


# --- the backward pass ------------------------------------------------------------------------------


class View:
    """Activations as the backward pass sees them (the int8 forward, dequantized)."""

    def __init__(self, tg: TrainGraph, values: dict[int, np.ndarray], weights: dict[int, np.ndarray]):
        self.tg, self.values, self.weights = tg, values, weights

    def real(self, t: int) -> np.ndarray:
        """x = s * (float)(q - z), float32."""
        s, z = self.tg.g.t(t).quant.scalar()
        return F32(s) * (self.values[t].astype(np.int32) - z).astype(F32)

    def passes(self, op: Op) -> np.ndarray:
        lo, hi = self.tg.masks[op.index]
        q = self.values[op.outputs[0]]
        return (q > lo) & (q < hi)

    def pool_values(self, t: int) -> np.ndarray:
        """Values max-pool ranks its window by (int8, or float in the relaxation)."""
        return self.values[t].astype(np.float64)

    def logits(self) -> np.ndarray:
        return self.real(self.tg.path.logits.outputs[0]).reshape(-1)

    def real_weights(self, op: Op) -> np.ndarray:
        """float32 [C_out, K]: s_w[oc] * Wq."""
        g = self.tg.g
        s = np.broadcast_to(np.asarray(g.t(op.inputs[1]).quant.scale, F32), (int(g.t(op.outputs[0]).shape[-1]),))
        wq = self.weights[op.index] if op.index in self.weights else layer_params(g, op)[0]  # frozen: the model's
        return (s[:, None] * channel_rows(op.kind, wq).astype(F32)).astype(F32)


@dataclass
class Grads:
    loss: float
    probs: np.ndarray
    tensors: dict[int, np.ndarray] = field(default_factory=dict)  # float32 gradient per path tensor
    weights: dict[int, np.ndarray] = field(default_factory=dict)  # op -> float32 [n_w, K]
    biases: dict[int, np.ndarray] = field(default_factory=dict)  # op -> float32 [C_out]


def softmax_loss(z: np.ndarray, label: int) -> tuple[float, np.ndarray, np.ndarray]:
    """(loss, p, dL/dz) in float32: p = exp(z - max) / sum, loss = log(sum) - (z_y - max)."""
    z = z.astype(F32)
    e = np.exp(z - z.max()).astype(F32)
    total = F32(e.sum(dtype=F32))
    p = (e / total).astype(F32)
    loss = F32(np.log(total)) - (z[label] - z.max())
    grad = p.copy()
    grad[label] -= F32(1.0)
    return float(loss), p, grad


def _scatter(rows: int, idx: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Sum values [P, T, C] into rows [rows, C] at idx [P, T] (taps outside the image dropped)."""
    out = np.zeros((rows + 1, values.shape[-1]), F32)
    np.add.at(out, np.where(idx >= 0, idx, rows), values.astype(F32))
    return out[:rows]


def _conv_backward(view: View, op: Op, gy: np.ndarray, need_x: bool, n_w: int):
    """(gx or None, gW [n_w, K], gb) of CONV_2D / DEPTHWISE_CONV_2D."""
    g = view.tg.g
    geo = opdef(op).geometry(op, g)
    idx = conv_taps(geo)
    gy = gy.reshape(len(idx), geo.out_c)
    pixels = geo.batches * geo.in_h * geo.in_w
    gx = gw = None
    if op.kind == "DEPTHWISE_CONV_2D":
        src = np.arange(geo.out_c) // (geo.out_c // geo.in_c)
        if n_w:
            taps = gather(view.real(op.inputs[0]).reshape(-1, geo.in_c), idx, F32(0))[:, :, src[:n_w]]
            gw = np.einsum("po,pto->ot", gy[:, :n_w], taps).astype(F32)
        if need_x:
            per_out = gy[:, None, :] * view.real_weights(op).T[None]  # [P, T, C_out]
            gx = _scatter(pixels, idx, per_out.reshape(len(idx), idx.shape[1], geo.in_c, -1).sum(axis=3, dtype=F32))
    else:
        groups = opdef(op).groups(op, g)
        fc, go = geo.in_c // groups, geo.out_c // groups
        if n_w:
            taps = gather(view.real(op.inputs[0]).reshape(-1, geo.in_c), idx, F32(0))
            gw = np.concatenate([gy[:, k * go:(k + 1) * go].T @ taps[:, :, k * fc:(k + 1) * fc].reshape(len(idx), -1)
                                 for k in range(groups)])[:n_w].astype(F32)
        if need_x:
            w = view.real_weights(op)
            parts = [(gy[:, k * go:(k + 1) * go] @ w[k * go:(k + 1) * go]).reshape(len(idx), -1, fc) for k in range(groups)]
            gx = _scatter(pixels, idx, np.concatenate(parts, axis=2))
    return gx, gw, gy.sum(axis=0, dtype=F32)


def op_backward(view: View, op: Op, gy: np.ndarray, need_x: bool, n_w: int):
    """(gradient of the first activation input or None, gW, gb) of one path op, gy masked."""
    g = view.tg.g
    kind = op.kind
    x_shape = g.t(op.inputs[0]).shape
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        gx, gw, gb = _conv_backward(view, op, gy, need_x, n_w)
        return (gx.reshape(x_shape) if gx is not None else None), gw, gb
    if kind == "FULLY_CONNECTED":
        batches, in_f, out_f = opdef(op).dims(op, g)
        gy = gy.reshape(batches, out_f)
        gw = (gy[:, :n_w].T @ view.real(op.inputs[0]).reshape(batches, in_f)).astype(F32) if n_w else None
        gx = (gy @ view.real_weights(op)).astype(F32).reshape(x_shape) if need_x else None
        return gx, gw, gy.sum(axis=0, dtype=F32)
    if not need_x:
        return None, None, None
    if kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        p = opdef(op).params(op, g)
        idx = pool_taps(p)
        gy = gy.reshape(len(idx), p["channels"])
        pixels = p["batches"] * p["in_h"] * p["in_w"]
        if kind == "AVERAGE_POOL_2D":
            share = gy / (idx >= 0).sum(axis=1).astype(F32)[:, None]  # gy / taps inside the image
            gx = _scatter(pixels, idx, np.broadcast_to(share[:, None, :], idx.shape + share.shape[1:]))
            return gx.reshape(x_shape), None, None
        taps = gather(view.pool_values(op.inputs[0]).reshape(-1, p["channels"]), idx, -np.inf)
        first = taps.argmax(axis=1)  # the first maximal tap, row-major
        onehot = (np.arange(idx.shape[1])[None, :, None] == first[:, None, :]) * gy[:, None, :]
        return _scatter(pixels, idx, onehot).reshape(x_shape), None, None
    if kind == "MEAN":
        axes = opdef(op).axes(op, g)
        count = F32(g.t(op.inputs[0]).size // g.t(op.outputs[0]).size)
        kept = [1 if d in axes else n for d, n in enumerate(x_shape)]
        return np.broadcast_to((gy / count).reshape(kept), x_shape).astype(F32), None, None
    if kind == "PAD":
        before, _ = opdef(op).paddings(op, g)
        return gy[tuple(slice(b, b + n) for b, n in zip(before, x_shape))].astype(F32), None, None
    if kind == "ADD":
        return gy.astype(F32), None, None  # every input that gets a gradient has the output's shape
    return gy.reshape(x_shape).astype(F32), None, None  # RELU, RELU6, RESHAPE, SQUEEZE


def backward(view: View, label: int) -> Grads:
    """Loss, gradients of every path tensor and of the updated parameters (not applied)."""
    tg = view.tg
    g = tg.g
    loss, probs, dz = softmax_loss(view.logits(), label)
    out = Grads(loss, probs)
    out.tensors[tg.path.logits.outputs[0]] = dz.reshape(g.t(tg.path.logits.outputs[0]).shape)
    for op in reversed(tg.path.ops):
        gy = out.tensors[op.outputs[0]]
        if op.index in tg.masks:
            gy = np.where(view.passes(op), gy, F32(0)).astype(F32)
        feeds = tg.feeds(op)
        layer = tg.layers.get(op.index)
        gx, gw, gb = op_backward(view, op, gy, bool(feeds), layer.n_w if layer else 0)
        if layer is not None:
            if layer.n_w:
                out.weights[op.index] = gw
            if layer.bias:
                out.biases[op.index] = gb
        for t in feeds:  # ADD's inputs both get gy; every other op has one activation input
            prev = out.tensors.get(t)
            out.tensors[t] = gx.copy() if prev is None else (prev + gx).astype(F32)
    return out


# --- the trainer ------------------------------------------------------------------------------------


class Trainer:
    """One sample at a time: forward (int8), backward (float32), SGD + QAS update."""

    def __init__(self, g: Graph, scheme: Scheme):
        self.g, self.scheme = g, scheme
        self.tg = train_graph(g, scheme)
        self.prepared = {op.index: prepare(g, op) for op in self.tg.path.ops}
        on = self.tg.on_path
        boundary = sorted({t for op in self.tg.path.ops for t in op.inputs
                           if t >= 0 and not g.t(t).is_const and t not in g.inputs
                           and (p := g.producer(t)) is not None and p.index not in on})
        self.prefix = FrozenPrefix.get(g, self.tg.frozen, boundary) if boundary else None
        self.reset()

    def reset(self) -> None:
        """Parameters back to the model's (masters = the int8/int32 values)."""
        self.weights, self.bias, self.w_master, self.b_master = {}, {}, {}, {}
        for i, spec in self.tg.layers.items():
            w, b = layer_params(self.g, spec.op)
            self.weights[i], self.bias[i] = w.copy(), b.copy()
            self.w_master[i] = channel_rows(spec.op.kind, w)[:spec.n_w].astype(F32)
            self.b_master[i] = b.astype(F32)

    # -- forward
    def forward_many(self, xs: np.ndarray) -> list[dict[int, np.ndarray]]:
        shape = self.g.t(self.g.inputs[0]).shape
        xs = np.asarray(xs, np.int8).reshape((-1,) + tuple(shape))
        frozen = self.prefix.run(xs.reshape((len(xs),) + sample_shape(shape))) if self.prefix else [{} for _ in xs]
        return [self._forward(x, f) for x, f in zip(xs, frozen)]

    def forward(self, x: np.ndarray) -> dict[int, np.ndarray]:
        """Every int8 tensor the path reads or writes (tensor index -> value)."""
        return self.forward_many(np.asarray(x)[None])[0]

    def _forward(self, x: np.ndarray, frozen: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        g = self.g
        values = {g.inputs[0]: np.asarray(x, np.int8).reshape(g.t(g.inputs[0]).shape), **frozen}
        for op in self.tg.path.ops:
            ins = [values[t] for t in op.inputs if t >= 0 and not g.t(t).is_const]
            params = (self.weights[op.index], self.bias[op.index]) if op.index in self.tg.layers else None
            values[op.outputs[0]] = run_op(g, self.prepared[op.index], ins, params)
        return values

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[self.tg.path.logits.outputs[0]]

    def predict(self, x: np.ndarray) -> int:
        return int(np.argmax(self.logits(x).reshape(-1)))

    def evaluate(self, xs: np.ndarray, ys: np.ndarray) -> float:
        t = self.tg.path.logits.outputs[0]
        preds = [int(np.argmax(v[t].reshape(-1))) for v in self.forward_many(xs)]
        return float(np.mean(np.asarray(preds) == np.asarray(ys)))

    # -- training
    def gradients(self, x: np.ndarray, label: int) -> tuple[Grads, dict[int, np.ndarray]]:
        """(gradients, int8 forward values) of one sample at the current parameters."""
        values = self.forward(x)
        return backward(View(self.tg, values, self.weights), int(label)), values

    def step(self, x: np.ndarray, label: int, lr: float | None = None) -> tuple[float, int]:
        """One SGD step on one sample; returns (loss, predicted class) of its forward pass."""
        n = self.g.t(self.tg.path.logits.outputs[0]).size
        if not 0 <= int(label) < n:
            raise TinymemError(f"label {label} is out of range for {n} classes")
        grads, values = self.gradients(x, label)
        self.apply(grads, self.scheme.lr if lr is None else lr)
        return grads.loss, int(np.argmax(values[self.tg.path.logits.outputs[0]].reshape(-1)))

    def apply(self, grads: Grads, lr: float) -> None:
        """M -= lr * (coef * g), then the int8/int32 working copies (docs/training.md, Update)."""
        lr = F32(lr)
        for i, spec in self.tg.layers.items():
            if spec.n_w:
                self.w_master[i] -= lr * (spec.coef_w[:spec.n_w, None] * grads.weights[i])
                rows = channel_rows(spec.op.kind, self.weights[i])
                rows[:spec.n_w] = round_weights(self.w_master[i])
                self.weights[i] = from_rows(spec.op.kind, rows, self.weights[i].shape)
            if spec.bias:
                self.b_master[i] -= lr * (spec.coef_b * grads.biases[i])
                self.bias[i] = round_bias(self.b_master[i])

    # -- parameters
    def folded_bias(self, i: int) -> np.ndarray:
        """What the forward kernel reads: bq - z_x * sum(Wq of the channel), int32 wrap."""
        spec = self.tg.layers[i]
        sums = channel_rows(spec.op.kind, self.weights[i]).astype(np.int64).sum(axis=1)
        v = self.bias[i].astype(np.int64) - spec.in_zp * sums
        return (((v + 2**31) % 2**32) - 2**31).astype(np.int32)

    def params(self) -> dict[int, dict[str, np.ndarray]]:
        """Per updated op: int8 "weights" (the model's layout), int32 "bias" and "folded_bias"."""
        return {i: {"weights": self.weights[i].copy(), "bias": self.bias[i].copy(), "folded_bias": self.folded_bias(i)}
                for i in self.tg.layers}

    def state(self) -> dict[int, dict[str, np.ndarray]]:
        """params() plus the float32 masters: "w_master" [n_w, K] and "b_master" [C_out]."""
        return {i: {**p, "w_master": self.w_master[i].copy(), "b_master": self.b_master[i].copy()}
                for i, p in self.params().items()}

    def load_state(self, state: dict[int, dict[str, np.ndarray]]) -> None:
        """Adopt a state (e.g. the C build's, to compare one step from identical starting points)."""
        for i in self.tg.layers:
            s = state[i]
            self.weights[i] = np.asarray(s["weights"], np.int8).reshape(self.weights[i].shape).copy()
            self.bias[i] = np.asarray(s["bias"], np.int32).copy()
            self.w_master[i] = np.asarray(s["w_master"], F32).reshape(self.w_master[i].shape).copy()
            self.b_master[i] = np.asarray(s["b_master"], F32).copy()


__all__ = ["Grads", "Trainer", "View", "backward", "op_backward", "round_bias", "round_weights", "softmax_loss"]
