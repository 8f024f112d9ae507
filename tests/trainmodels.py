"""What the training tests share: small random int8 models built layer by layer (`Chain`), samples
they can learn, LiteRT's intermediate tensors, and the comparison of two training states.

Scales follow the activations' spread (like test_op_conv.conv_model), so outputs span the int8
range instead of saturating or collapsing: masks and rounding then matter in every test.
"""
from __future__ import annotations

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from modelgen import ACT, PADDING, ModelBuilder, options, rand_int8, rand_scale
from tinymem.ops.conv import out_size_and_pad
from tinymem.ops.pool import pool_axis


def unit_gain(taps: int) -> float:
    """A weight scale that keeps real activations about as spread as the layer's inputs (int8
    values spread ~74 around zero, `taps` products summed): real values stay O(1), so one
    learning rate suits every test model."""
    return 60 / (74 * 74 * np.sqrt(taps))


def all_tensors(model: bytes, x: np.ndarray) -> Interpreter:
    """LiteRT BUILTIN_REF after one invoke on x, every intermediate tensor kept (get_tensor(i))."""
    it = Interpreter(model_content=model, experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                     experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], x.reshape(d["shape"]))
    it.invoke()
    return it


def class_samples(rng, shape, classes, n):
    """Samples a small model can learn: a random pattern per class plus noise."""
    patterns = rng.integers(-100, 100, (classes,) + tuple(shape))
    ys = np.arange(n) % classes
    return np.clip(patterns[ys] + rng.integers(-40, 40, (n,) + tuple(shape)), -128, 127).astype(np.int8), ys


class Chain:
    """Builds input -> layers -> logits; `t` is the current tensor, `history` every tensor so far."""

    def __init__(self, rng, shape, scale=0.05):
        self.rng, self.m = rng, ModelBuilder()
        self.t = self.input = self.m.act(list(shape), scale, int(rng.integers(-20, 20)))
        self.shape, self.scale = list(shape), scale
        self.history = [(self.t, list(shape), scale)]

    def _out(self, shape, scale, zp=None):
        zp = int(self.rng.integers(-30, 30)) if zp is None else zp
        self.t = self.m.act(list(shape), scale, zp)
        self.shape, self.scale = list(shape), scale
        self.history.append((self.t, list(shape), scale))
        return self.t

    def conv(self, out_c, k=3, stride=1, padding="SAME", act="NONE", groups=1, dil=1, depthwise=False, bias=True):
        b, h, w, c = self.shape
        kh, kw = (k, k) if isinstance(k, int) else k
        taps = kh * kw * (1 if depthwise else c // groups)
        w_scale = np.array([rand_scale(self.rng, 0.5, 2) * unit_gain(taps) for _ in range(out_c)])
        f_shape = [1, kh, kw, out_c] if depthwise else [out_c, kh, kw, c // groups]
        f = self.m.tensor(f_shape, "int8", w_scale, np.zeros(out_c, int), rand_int8(self.rng, f_shape),
                          axis=3 if depthwise else 0)
        ins = [self.t, f]
        if bias:
            ins.append(self.m.tensor([out_c], "int32", w_scale * self.scale, np.zeros(out_c, int),
                                     self.rng.integers(-3000, 3000, out_c).astype(np.int32)))
        oh, _ = out_size_and_pad(PADDING[padding], h, kh, stride, dil)
        ow, _ = out_size_and_pad(PADDING[padding], w, kw, stride, dil)
        x = self.t
        y = self._out([b, oh, ow, out_c], self.scale * float(w_scale.mean()) * 74 * 74 * np.sqrt(taps) / 60)
        common = dict(padding=PADDING[padding], strideH=stride, strideW=stride, dilationHFactor=dil,
                      dilationWFactor=dil, fusedActivationFunction=ACT[act])
        if depthwise:
            self.m.op("DEPTHWISE_CONV_2D", ins, [y], options("DepthwiseConv2DOptions", depthMultiplier=out_c // c, **common))
        else:
            self.m.op("CONV_2D", ins, [y], options("Conv2DOptions", **common))
        return x

    def fc(self, out, act="NONE", per_channel=False, logit_std=None):
        """`logit_std`: weight scales for real outputs of about that spread (logits a softmax
        neither saturates nor flattens), for inputs spread over the int8 range."""
        n = self.shape[-1]
        w_scale = np.array([rand_scale(self.rng, 0.5, 2) * unit_gain(n) for _ in range(out if per_channel else 1)])
        if logit_std is not None:
            w_scale *= logit_std / (np.sqrt(n) * 74 * 74 * self.scale * float(w_scale.mean()))
        wt = self.m.tensor([out, n], "int8", w_scale, np.zeros(w_scale.size, int), rand_int8(self.rng, (out, n)))
        b = self.m.tensor([out], "int32", np.broadcast_to(w_scale * self.scale, (out,)), np.zeros(out, int),
                          self.rng.integers(-3000, 3000, out).astype(np.int32))
        x = self.t
        rows = int(np.prod(self.shape)) // n
        y = self._out([rows, out] if rows > 1 else [1, out], self.scale * float(w_scale.mean()) * 74 * 74 * np.sqrt(n) / 60)
        self.m.op("FULLY_CONNECTED", [x, wt, b], [y], options("FullyConnectedOptions", fusedActivationFunction=ACT[act]))

    def add(self, back=2, act="NONE"):
        """The current tensor plus the one `back` tensors earlier (same shape)."""
        other, shape, scale = self.history[-1 - back]
        assert shape == self.shape, (shape, self.shape)
        x = self.t
        y = self._out(self.shape, 1.3 * max(scale, self.scale))
        self.m.op("ADD", [x, other], [y], options("AddOptions", fusedActivationFunction=ACT[act]))

    def pool(self, kind, k=2, stride=2, padding="VALID"):
        b, h, w, c = self.shape
        oh, _ = pool_axis(PADDING[padding], h, k, stride)
        ow, _ = pool_axis(PADDING[padding], w, k, stride)
        x, zp = self.t, self.m.tensors[self.t].quantization.zeroPoint[0]
        y = self._out([b, oh, ow, c], self.scale, zp)
        self.m.op(kind, [x], [y], options("Pool2DOptions", padding=PADDING[padding], strideW=stride, strideH=stride,
                                          filterWidth=k, filterHeight=k))

    def mean(self):
        b, _, _, c = self.shape
        x = self.t
        axis = self.m.tensor([2], "int32", data=np.array([1, 2], np.int32))
        y = self._out([b, c], self.scale * 0.6)
        self.m.op("MEAN", [x, axis], [y], options("ReducerOptions", keepDims=False))

    def pad(self, pads):
        x, zp = self.t, self.m.tensors[self.t].quantization.zeroPoint[0]
        p = self.m.tensor([len(pads), 2], "int32", data=np.array(pads, np.int32))
        y = self._out([n + a + b for n, (a, b) in zip(self.shape, pads)], self.scale, zp)
        self.m.op("PAD", [x, p], [y])

    def relu(self, kind="RELU"):
        x = self.t
        y = self._out(self.shape, self.scale * 0.7 if kind == "RELU" else 6 / 255, -128)
        self.m.op(kind, [x], [y])

    def reshape(self, shape):
        x, zp = self.t, self.m.tensors[self.t].quantization.zeroPoint[0]
        s = self.m.tensor([len(shape)], "int32", data=np.array(shape, np.int32))
        y = self._out(shape, self.scale, zp)
        self.m.op("RESHAPE", [x, s], [y], options("ReshapeOptions", newShape=list(shape)))

    def flatten(self):
        self.reshape([1, int(np.prod(self.shape))])

    def build(self, softmax=True) -> bytes:
        out = self.t
        if softmax:
            out = self.m.act(self.shape, 1 / 256, -128)
            self.m.op("SOFTMAX", [self.t], [out], options("SoftmaxOptions", beta=1.0))
        return self.m.build([self.input], [out])


def tiny_model(rng, kind: str) -> tuple[bytes, dict]:
    """A model whose backward path crosses `kind`, and a scheme dict updating the first conv's
    weights and biases and the logits FC's (the gradient reaches the conv through `kind`)."""
    c = Chain(rng, [1, 6, 6, 3])
    c.conv(6, 3)  # op 0, updated
    if kind == "CONV_2D":
        c.conv(5, (3, 2), stride=2, act="RELU")
    elif kind == "CONV_2D_GROUPS":
        c.conv(4, 3, groups=2, padding="VALID")
    elif kind == "DEPTHWISE_CONV_2D":
        c.conv(12, 3, stride=2, depthwise=True, act="RELU6")
    elif kind == "DEPTHWISE_DILATED":
        c.conv(6, 3, dil=2, depthwise=True)
    elif kind == "ADD":
        c.conv(6, 1)
        c.add(back=1)  # residual: conv 0's output + conv 1's
    elif kind == "MEAN":
        c.mean()
    elif kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        c.pool(kind, k=3, stride=2, padding="SAME")
    elif kind == "PAD":
        c.pad([[0, 0], [1, 2], [0, 1], [0, 0]])
        c.conv(4, 2, stride=2, padding="VALID")
    elif kind in ("RELU", "RELU6"):
        c.relu(kind)
    elif kind == "FULLY_CONNECTED":
        c.fc(7)  # on every pixel: batches = 36
    if len(c.shape) > 2:
        c.flatten()
    c.fc(5, logit_std=2.0)
    n_ops = len(c.m.ops)
    return c.build(), {"bias_ops": [0, n_ops - 1], "weight_ratios": {"0": 1.0, str(n_ops - 1): 1.0}}


def state_differences(c_state: dict, ref_state: dict, layers: dict) -> int:
    """Compare a C training state with the reference's (both op -> {"weights", "bias", "w_master",
    "b_master"}, model layouts). Float32 masters must agree to rounding; int8 weights and int32
    biases exactly, except where the master lies within rounding of a .5 boundary: those ±1 cases
    are returned (counted), anything else fails."""
    from tinymem.train.layers import channel_rows

    flips = 0
    for i, spec in layers.items():
        c, r = c_state[i], ref_state[i]
        kind = spec.op.kind
        for key, n in (("w_master", spec.n_w), ("b_master", spec.channels if spec.bias else 0)):
            if n:
                np.testing.assert_allclose(c[key], r[key], rtol=2e-6, atol=2e-6 * max(1.0, np.abs(r[key]).max()),
                                           err_msg=f"op {i} {key}")
        pairs = [("weights", channel_rows(kind, c["weights"])[:spec.n_w], channel_rows(kind, r["weights"])[:spec.n_w],
                  r["w_master"])]
        if spec.bias:
            pairs.append(("bias", c["bias"], r["bias"], r["b_master"]))
        else:
            np.testing.assert_array_equal(c["bias"], r["bias"], err_msg=f"op {i}: a frozen bias changed")
        for name, cv, rv, master in pairs:
            bad = cv.astype(np.int64) != rv
            if bad.any():
                m = master[bad].astype(np.float64) + 0.5
                near = np.abs(m - np.round(m)) <= 1e-5 * np.maximum(1.0, np.abs(m))
                assert np.all(np.abs(cv[bad].astype(np.int64) - rv[bad]) == 1) and near.all(), \
                    f"op {i} {name}: {int(bad.sum())} values differ, not only at .5 boundaries"
                flips += int(bad.sum())
        frozen = channel_rows(kind, c["weights"])[spec.n_w:]
        np.testing.assert_array_equal(frozen, channel_rows(kind, r["weights"])[spec.n_w:], err_msg=f"op {i}: frozen channels")
    return flips
