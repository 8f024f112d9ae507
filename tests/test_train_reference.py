"""The numpy training reference (tinymem/train/reference.py) against independent references:
LiteRT BUILTIN_REF for the int8 forward, finite differences on the float relaxation of the graph
for the gradients, float SGD on the real weights for the QAS update."""
from pathlib import Path

import numpy as np
import pytest

from reference import litert_run
from test_op_conv import conv_model, random_case
from modelgen import options
from trainmodels import Chain, all_tensors, class_samples, tiny_model
from tinymem.errors import TinymemError, UnsupportedError
from tinymem.model.boundary import sample_shape
from tinymem.model.tflite import parse_tflite
from tinymem.ops import opdef
from tinymem.train.forward import conv_taps, gather, layer_params, pool_taps, prepare, run_op
from tinymem.train.layers import channel_rows
from tinymem.train.reference import Trainer, View, backward
from tinymem.train.scheme import BACKWARD_KINDS, Scheme

MODELS = Path(__file__).resolve().parent.parent / "models"
ZOO = ["digits_cnn", "awkward", "dscnn_kws", "mcunet_like", "mobilenetv2_035_96"]
F32 = np.float32


# --- int8 forward ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ZOO)
def test_forward_ops_match_litert_intermediates(name, rng):
    """Every op of a back-propagatable kind in the zoo, fed LiteRT's own input tensors."""
    model = (MODELS / f"{name}.tflite").read_bytes()
    g = parse_tflite(model, name)
    xs = np.load(MODELS / f"{name}.inputs.npy")[:1]
    xs = np.concatenate([xs, rng.integers(-128, 128, xs.shape).astype(np.int8)])
    kinds = set()
    for x in xs:
        it = all_tensors(model, x)
        for op in g.ops:
            if op.kind in BACKWARD_KINDS:
                ins = [it.get_tensor(t) for t in op.inputs if t >= 0 and not g.t(t).is_const]
                ref = it.get_tensor(op.outputs[0])
                np.testing.assert_array_equal(run_op(g, prepare(g, op), ins).reshape(ref.shape), ref,
                                              err_msg=op.describe())
                kinds.add(op.kind)
    assert kinds >= {"CONV_2D", "FULLY_CONNECTED"}


@pytest.mark.parametrize("kind", ["CONV_2D", "DEPTHWISE_CONV_2D"])
def test_forward_random_convs_match_litert(kind, rng):
    """Groups, dilation, strides, depth multipliers, per-tensor scales, batches, no bias."""
    for case in range(8):
        model = conv_model(rng, kind, **random_case(rng, case, kind))
        g = parse_tflite(model)
        shape = g.t(g.inputs[0]).shape
        x = rng.integers(-128, 128, (2,) + sample_shape(shape)).astype(np.int8)
        ours = [run_op(g, prepare(g, g.ops[0]), [s.reshape(shape)]) for s in x]
        ref = litert_run(model, x)[0]
        np.testing.assert_array_equal(np.stack(ours).reshape(ref.shape), ref, err_msg=f"case {case}")


def test_forward_path_kinds_match_litert(rng):
    """RELU, RELU6, PAD, pools, MEAN, ADD and FC on every pixel, as tiny_model builds them."""
    for kind in ("ADD", "MEAN", "AVERAGE_POOL_2D", "MAX_POOL_2D", "PAD", "RELU", "RELU6", "FULLY_CONNECTED"):
        model, _ = tiny_model(rng, kind)
        g = parse_tflite(model)
        x = rng.integers(-128, 128, g.t(g.inputs[0]).shape).astype(np.int8)
        it = all_tensors(model, x)
        for op in g.ops[:-1]:
            ins = [it.get_tensor(t) for t in op.inputs if t >= 0 and not g.t(t).is_const]
            np.testing.assert_array_equal(run_op(g, prepare(g, op), ins), it.get_tensor(op.outputs[0]),
                                          err_msg=f"{kind}: {op.describe()}")


def test_trainer_forward_with_frozen_prefix_matches_litert(rng):
    """digits_cnn trained from op 4: ops 0-3 run in the generated C, 4-5 in numpy."""
    model = (MODELS / "digits_cnn.tflite").read_bytes()
    g = parse_tflite(model, "digits_cnn")
    tr = Trainer(g, Scheme(bias_ops=[5], weight_ratios={4: 0.25}))
    assert [op.index for op in tr.tg.frozen] == [0, 1, 2, 3]
    for x in np.load(MODELS / "digits_cnn.inputs.npy")[:2]:
        it = all_tensors(model, x)
        values = tr.forward(x)
        for t in (g.ops[3].outputs[0], g.ops[4].outputs[0], g.ops[5].outputs[0]):
            np.testing.assert_array_equal(values[t], it.get_tensor(t))


# --- gradients: finite differences on the float relaxation -------------------------------------------


class FloatView(View):
    """The same graph in real numbers without rounding: what backward() differentiates."""

    def real(self, t):
        return self.values[t].astype(F32)

    def bounds(self, op):
        s, z = self.tg.g.t(op.outputs[0]).quant.scalar()
        lo, hi = self.tg.masks[op.index]
        return s * (lo - z), s * (hi - z)

    def passes(self, op):
        lo, hi = self.bounds(op)
        y = self.values[op.outputs[0]]
        return (y > lo) & (y < hi)

    def pool_values(self, t):
        return self.values[t]

    def logits(self):
        return self.real(self.tg.path.logits.outputs[0]).reshape(-1)

    def real_weights(self, op):
        return self.weights[op.index].astype(F32)


def real_params(tr: Trainer) -> tuple[dict, dict]:
    """Float64 real weights [C, K] and biases of every path op with parameters."""
    g, w, b = tr.g, {}, {}
    for op in tr.tg.path.ops:
        if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            wq, bq = layer_params(g, op)
            c = int(g.t(op.outputs[0]).shape[-1])
            s = np.broadcast_to(np.asarray(g.t(op.inputs[1]).quant.scale, np.float64), (c,))
            w[op.index] = s[:, None] * channel_rows(op.kind, wq)
            b[op.index] = g.t(op.inputs[0]).quant.scalar()[0] * s * bq
    return w, b


def float_forward(view: FloatView, x_real: np.ndarray, w: dict, b: dict) -> dict:
    g = view.tg.g
    v = {g.inputs[0]: x_real}
    for op in view.tg.path.ops:
        x = v[op.inputs[0]]
        out = g.t(op.outputs[0])
        d = opdef(op)
        if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            geo = d.geometry(op, g)
            taps = gather(x.reshape(-1, geo.in_c), conv_taps(geo), 0.0)
            if op.kind == "CONV_2D":
                k = d.groups(op, g)
                fc, go = geo.in_c // k, geo.out_c // k
                y = np.concatenate([taps[:, :, j * fc:(j + 1) * fc].reshape(len(taps), -1) @ w[op.index][j * go:(j + 1) * go].T
                                    for j in range(k)], axis=1)
            else:
                y = np.einsum("pto,ot->po", taps[:, :, np.arange(geo.out_c) // (geo.out_c // geo.in_c)], w[op.index])
            y = y + b[op.index]
        elif op.kind == "FULLY_CONNECTED":
            y = x.reshape(-1, w[op.index].shape[1]) @ w[op.index].T + b[op.index]
        elif op.kind == "ADD":
            y = v[op.inputs[0]] + v[op.inputs[1]]
        elif op.kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
            p = d.params(op, g)
            idx = pool_taps(p)
            taps = gather(x.reshape(-1, p["channels"]), idx, -np.inf if op.kind == "MAX_POOL_2D" else 0.0)
            y = taps.max(axis=1) if op.kind == "MAX_POOL_2D" else taps.sum(axis=1) / (idx >= 0).sum(axis=1)[:, None]
        elif op.kind == "MEAN":
            y = x.mean(axis=tuple(d.axes(op, g)))
        elif op.kind == "PAD":
            s, z = out.quant.scalar()
            y = np.pad(x, list(zip(*d.paddings(op, g))), constant_values=s * (d.pad_value(op, g) - z))
        else:  # RELU, RELU6, RESHAPE
            y = x
        y = y.reshape(out.shape)
        if op.index in view.tg.masks:
            y = np.clip(y, *view.bounds(op))
        v[op.outputs[0]] = y
    return v


def float_loss(view, x_real, w, b, label) -> float:
    v = float_forward(view, x_real, w, b)
    z = v[view.tg.path.logits.outputs[0]].reshape(-1)
    return float(np.log(np.exp(z - z.max()).sum()) - (z[label] - z.max()))


@pytest.mark.parametrize("kind", ["CONV_2D", "CONV_2D_GROUPS", "DEPTHWISE_CONV_2D", "DEPTHWISE_DILATED", "ADD", "MEAN",
                                  "AVERAGE_POOL_2D", "MAX_POOL_2D", "PAD", "RELU", "RELU6", "FULLY_CONNECTED"])
def test_gradients_match_finite_differences(kind, rng):
    """backward() on the float relaxation vs central differences of its float64 loss, for the
    first conv (the gradient crossed `kind` to get there) and the logits FC."""
    model, scheme = tiny_model(rng, kind)
    g = parse_tflite(model)
    tr = Trainer(g, Scheme.from_dict(scheme))
    x = rng.integers(-128, 128, g.t(g.inputs[0]).shape).astype(np.int8)
    s, z = g.t(g.inputs[0]).quant.scalar()
    x_real = s * (x.astype(np.float64) - z)
    w, b = real_params(tr)
    label = int(rng.integers(0, 5))
    view = FloatView(tr.tg, {}, w)
    view.values = float_forward(view, x_real, w, b)
    grads = backward(view, label)
    assert abs(grads.loss - float_loss(view, x_real, w, b, label)) < 1e-4 * max(1.0, abs(grads.loss))
    checked = 0
    for i in (0, len(g.ops) - 2):
        for what, params, analytic in (("weights", w, grads.weights[i]), ("bias", b, grads.biases[i])):
            flat = params[i].reshape(-1)
            picks = rng.choice(flat.size, size=min(flat.size, 12), replace=False)
            scale = np.abs(analytic).max()
            assert scale > 0, f"op {i} {what}: all-zero gradient, the test would check nothing"
            for k in picks:
                eps = 1e-4 * max(1.0, abs(flat[k]))
                old = flat[k]
                flat[k] = old + eps
                up = float_loss(view, x_real, w, b, label)
                flat[k] = old - eps
                down = float_loss(view, x_real, w, b, label)
                flat[k] = old
                fd = (up - down) / (2 * eps)
                got = analytic.reshape(-1)[k]
                assert abs(got - fd) <= 2e-3 * abs(fd) + 2e-4 * scale, f"op {i} {what}[{k}]: {got} vs FD {fd}"
                checked += 1
    assert checked >= 24


# --- the update -----------------------------------------------------------------------------------------


def fc_conv_trainer(rng, qas: bool) -> tuple[Trainer, np.ndarray]:
    model, scheme = tiny_model(np.random.default_rng(7), "MEAN")
    g = parse_tflite(model)
    return Trainer(g, Scheme.from_dict({**scheme, "qas": qas})), rng.integers(-128, 128, g.t(g.inputs[0]).shape).astype(np.int8)


def test_qas_update_is_float_sgd_on_real_weights(rng):
    """With QAS the real master s_w * M moves by exactly -lr * gW (and s_b * B by -lr * gb)."""
    tr, x = fc_conv_trainer(rng, qas=True)
    grads, _ = tr.gradients(x, 2)
    before = tr.state()
    lr = 0.01
    tr.apply(grads, lr)
    after = tr.state()
    for i, spec in tr.tg.layers.items():
        dm = after[i]["w_master"].astype(np.float64) - before[i]["w_master"]
        sgd = -lr * grads.weights[i].astype(np.float64)  # float SGD on the real weights
        ulp = np.spacing(np.abs(after[i]["w_master"])).astype(np.float64)
        assert np.all(np.abs(spec.w_scale[:, None] * dm - sgd) <= spec.w_scale[:, None] * 2 * ulp + 1e-5 * np.abs(sgd))
        db = after[i]["b_master"].astype(np.float64) - before[i]["b_master"]
        s_b = spec.in_scale * spec.w_scale.astype(np.float64)
        ulp_b = np.spacing(np.abs(after[i]["b_master"])).astype(np.float64)
        assert np.all(np.abs(s_b * db + lr * grads.biases[i]) <= s_b * 2 * ulp_b + 1e-5 * np.abs(lr * grads.biases[i]))
        assert np.abs(dm).max() > 0.01, "the step is too small to show anything"


def test_without_qas_the_step_is_scaled_by_s_squared(rng):
    """Same gradients; without QAS the master moves s^2 times as far per unit of lr (so far less:
    the run without QAS takes a learning rate large enough for float32 masters to show it)."""
    steps = {}
    for qas, lr in ((True, 0.01), (False, 100.0)):
        tr, x = fc_conv_trainer(np.random.default_rng(3), qas=qas)
        grads, _ = tr.gradients(x, 1)
        before = tr.state()
        tr.apply(grads, lr)
        steps[qas] = {i: ((tr.state()[i]["w_master"].astype(np.float64) - before[i]["w_master"]) / lr,
                          tr.tg.layers[i].w_scale) for i in tr.tg.layers}
    for i, (dq, s) in steps[True].items():
        dn = steps[False][i][0]
        big = np.abs(dn * 100.0) > 1e3 * np.spacing(np.float32(128))  # far above the master's rounding
        assert big.sum() > 5
        want = np.broadcast_to((s.astype(np.float64) ** 2)[:, None], dq.shape)[big]
        np.testing.assert_allclose(dn[big] / dq[big], want, rtol=2e-3)


def test_int8_params_follow_their_masters(rng):
    tr, x = fc_conv_trainer(rng, qas=True)
    for label in range(4):
        tr.step(x, label, lr=0.05)
    for i, spec in tr.tg.layers.items():
        st = tr.state()[i]
        rows = channel_rows(spec.op.kind, st["weights"])
        np.testing.assert_array_equal(rows[:spec.n_w], np.clip(np.floor(st["w_master"] + F32(0.5)), -127, 127))
        np.testing.assert_array_equal(st["bias"], np.floor(st["b_master"] + F32(0.5)).astype(np.int64))
        w0, b0 = layer_params(tr.g, spec.op)
        np.testing.assert_array_equal(rows[spec.n_w:], channel_rows(spec.op.kind, w0)[spec.n_w:])  # frozen channels
        assert np.any(rows[:spec.n_w] != channel_rows(spec.op.kind, w0)[:spec.n_w])
        sums = rows.astype(np.int64).sum(axis=1)
        np.testing.assert_array_equal(st["folded_bias"], st["bias"].astype(np.int64) - spec.in_zp * sums)
    tr.reset()
    for i, spec in tr.tg.layers.items():
        np.testing.assert_array_equal(tr.params()[i]["weights"], layer_params(tr.g, spec.op)[0])


def test_training_reduces_the_loss(rng):
    c = Chain(rng, [1, 5, 5, 2])
    c.conv(8, 3, act="RELU")
    c.mean()
    c.fc(4, logit_std=2.0)
    g = parse_tflite(c.build())
    tr = Trainer(g, Scheme(bias_ops=[0, 2], weight_ratios={0: 0.5, 2: 1.0}, lr=0.1))
    xs, ys = class_samples(rng, [1, 5, 5, 2], 4, 16)
    before = tr.evaluate(xs, ys)
    epochs = [np.mean([tr.step(x, y)[0] for x, y in zip(xs, ys)]) for _ in range(6)]
    assert epochs[-1] < 0.7 * epochs[0], epochs
    assert tr.evaluate(xs, ys) >= max(0.6, before + 0.2)


def test_bad_input_is_one_line_error(rng):
    model, scheme = tiny_model(rng, "MEAN")
    g = parse_tflite(model)
    tr = Trainer(g, Scheme.from_dict(scheme))
    with pytest.raises(TinymemError, match="label 9 is out of range for 5 classes"):
        tr.step(np.zeros(g.t(g.inputs[0]).shape, np.int8), 9)
    with pytest.raises(UnsupportedError, match="cannot back-propagate through HARD_SWISH"):
        Trainer(parse_tflite((MODELS / "awkward.tflite").read_bytes()), Scheme(bias_ops=[0]))
    # ADD broadcasting a path tensor: its gradient would need a reduction the kernels do not do.
    c = Chain(rng, [1, 4, 4, 3])
    c.conv(3, 1)
    full = c.t
    axis = c.m.tensor([2], "int32", data=np.array([1, 2], np.int32))
    small = c.m.act([1, 1, 1, 3], c.scale, 0)
    c.m.op("MEAN", [full, axis], [small], options("ReducerOptions", keepDims=True))
    c.m.op("ADD", [full, small], [c._out(c.shape, 2 * c.scale)], options("AddOptions"))
    c.mean()
    c.fc(3)
    with pytest.raises(UnsupportedError, match="broadcasting ADD"):
        Trainer(parse_tflite(c.build()), Scheme(bias_ops=[0]))


def test_add_with_a_constant_first_operand(rng):
    """A constant operand needs no gradient, in either position, broadcast or not."""
    c = Chain(rng, [1, 4, 4, 3])
    c.conv(3, 1)
    const = c.m.tensor([1, 1, 1, 3], "int8", 0.1, 0, np.array([5, -7, 9]))
    c.m.op("ADD", [const, c.t], [c._out(c.shape, 0.2)], options("AddOptions"))
    c.mean()
    c.fc(3, logit_std=2.0)
    model = c.build()
    g = parse_tflite(model)
    tr = Trainer(g, Scheme(bias_ops=[0], weight_ratios={0: 1.0}))
    x = rng.integers(-128, 128, g.t(g.inputs[0]).shape).astype(np.int8)
    np.testing.assert_array_equal(tr.forward(x)[g.ops[1].outputs[0]], all_tensors(model, x).get_tensor(g.ops[1].outputs[0]))
    before = tr.params()[0]["bias"]
    tr.step(x, 1, lr=0.5)
    assert np.any(tr.params()[0]["bias"] != before)
