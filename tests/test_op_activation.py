"""Activations and int8 requantization vs LiteRT BUILTIN_REF.

Element-wise ops are checked on every int8 input value: each model holds several independent
one-op branches (own input, own output, own random quantization), so one compile covers many
quantizations, and the planner still overlays every branch's output on its input.
"""
import numpy as np
import pytest

from harness import assert_bit_exact
from modelgen import ModelBuilder, options, rand_scale
from reference import litert_run
from tinymem.errors import UnsupportedError
from tinymem.model.tflite import parse_tflite
from tinymem.ops import opdef, validate_graph
from tinymem.plan import make_plan
from tinymem.sim import build_host

ALL_INT8 = np.arange(-128, 128, dtype=np.int8)
REQUANT = ["RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "LEAKY_RELU", "QUANTIZE"]
TABLES = ["LOGISTIC", "TANH", "HARD_SWISH"]


def rand_zp(rng):
    return int(rng.integers(-128, 128))


def out_quant(kind, rng, in_scale):
    """A random output quantization LiteRT accepts for `kind`."""
    if kind == "LOGISTIC":  # scale must be exactly 1/256; the zero point is free
        return 1 / 256, rand_zp(rng) if rng.random() < 0.3 else -128
    if kind == "TANH":
        return (1 / 128, 0) if rng.random() < 0.3 else (rand_scale(rng, 1e-3, 0.1), rand_zp(rng))
    if kind == "HARD_SWISH":  # the output multiplier in_scale / 128 / out_scale must stay below 1
        return rand_scale(rng, in_scale / 100, in_scale * 2), rand_zp(rng)
    return rand_scale(rng, in_scale / 30, in_scale * 30), rand_zp(rng)


def op_options(kind, rng, beta=None):
    if kind == "LEAKY_RELU":
        return options("LeakyReluOptions", alpha=float(rng.choice([0.2, 0.01, 0.0, 1.5, -0.3, rng.uniform(-2, 2)])))
    if kind == "SOFTMAX":
        return options("SoftmaxOptions", beta=float(beta if beta is not None else rng.uniform(0.1, 3)))
    return None


def branches_model(rng, kinds, shapes=None, in_scales=None, betas=None):
    """One independent op per entry of `kinds`, each with its own input and output tensors."""
    m = ModelBuilder()
    ins, outs = [], []
    for i, kind in enumerate(kinds):
        shape = list(shapes[i]) if shapes else [1, 256]
        in_scale = in_scales[i] if in_scales else rand_scale(rng, 1e-3, 1.0)
        x = m.act(shape, in_scale, rand_zp(rng))
        yq = (1 / 256, -128) if kind == "SOFTMAX" else out_quant(kind, rng, in_scale)
        y = m.act(shape, *yq)
        m.op(kind, [x], [y], op_options(kind, rng, betas[i] if betas else None))
        ins.append(x)
        outs.append(y)
    return m.build(ins, outs)


def every_value(rng, count):
    """Two samples per input: every int8 value in order, then shuffled."""
    return [np.stack([ALL_INT8, rng.permutation(ALL_INT8)]) for _ in range(count)]


def assert_in_place(plan):
    assert all(layer.in_place for layer in plan.layers), [layer.in_place for layer in plan.layers]


@pytest.mark.parametrize("kind", REQUANT + TABLES)
def test_elementwise_every_input(kind, rng, tmp_path):
    model = branches_model(rng, [kind] * 6)
    plan, _ = assert_bit_exact(model, rng, inputs=every_value(rng, 6), tmp_path=tmp_path)
    assert_in_place(plan)


def test_leaky_relu_negative_alpha_ties(rng, tmp_path):
    """Power-of-two scales and alphas put the products on rounding ties, where the sign of alpha
    must be applied after rounding, as LiteRT does."""
    m = ModelBuilder()
    ins, outs = [], []
    for alpha, zp in ((-0.5, 5), (-0.25, -7), (-1.5, 0), (-0.375, 100), (0.5, -3)):
        x, y = m.act([1, 256], 0.0625, zp), m.act([1, 256], 0.0625, -zp)
        m.op("LEAKY_RELU", [x], [y], options("LeakyReluOptions", alpha=alpha))
        ins.append(x)
        outs.append(y)
    assert_bit_exact(m.build(ins, outs), rng, inputs=every_value(rng, len(ins)), tmp_path=tmp_path)


@pytest.mark.parametrize("kind", TABLES)
def test_tables_match_litert(kind, rng):
    """The codegen-time tables alone, against LiteRT, over many quantizations (no C compile); half
    the input scales are small multiples of powers of two, whose products land on rounding ties."""
    scales = [rand_scale(rng, 1e-3, 1.0) if i % 2 else float(rng.choice([1, 1.25, 1.5, 3])) / 2 ** int(rng.integers(0, 10))
              for i in range(300)]
    model = branches_model(rng, [kind] * 300, in_scales=scales)
    g = parse_tflite(model, "tables")
    ref = litert_run(model, [ALL_INT8[None]] * len(g.ops))
    for op, r in zip(g.ops, ref):
        table = opdef(op).table(op, g)
        assert np.array_equal(table, r[0]), (g.t(op.inputs[0]).quant.scalar(), g.t(op.outputs[0]).quant.scalar())


def test_quantize_identical_params_is_an_alias(rng, tmp_path):
    m = ModelBuilder()
    x, y, z = m.act([1, 256], 0.05, 3), m.act([1, 256], 0.05, 3), m.act([1, 256], 0.05, -9)
    m.op("QUANTIZE", [x], [y])
    m.op("QUANTIZE", [y], [z])  # same scale, other zero point: a shift, computed
    plan, _ = assert_bit_exact(m.build([x], [z]), rng, inputs=every_value(rng, 1), tmp_path=tmp_path)
    assert plan.tensor_offset(x) == plan.tensor_offset(y)


def softmax_inputs(rng, shapes, n=3):
    """Random rows, plus rows of equal values and rows with one dominant value."""
    arrays = []
    for shape in shapes:
        a = rng.integers(-128, 128, size=(n,) + tuple(shape[1:] if shape[0] == 1 else shape)).astype(np.int8)
        rows = a.reshape(n, -1, shape[-1])
        rows[0, 0] = rng.integers(-128, 128)
        rows[1, -1] = -128
        rows[1, -1, rng.integers(shape[-1])] = 127
        arrays.append(a)
    return arrays


@pytest.mark.parametrize("case", range(4))
def test_softmax_random(case, rng, tmp_path):
    shapes = []
    for _ in range(4):
        rank = int(rng.integers(1, 5))
        depth = int(rng.integers(1, 300))
        shapes.append(tuple(int(d) for d in rng.integers(1, 4, size=rank - 1)) + (depth,))
    model = branches_model(rng, ["SOFTMAX"] * 4, shapes)
    plan, _ = assert_bit_exact(model, rng, inputs=softmax_inputs(rng, shapes), tmp_path=tmp_path)
    assert_in_place(plan)


def test_softmax_every_difference(rng, tmp_path):
    """Rows holding all 256 values: every input difference, over random scales and betas,
    including beta * scale >= 16, where the input multiplier's shift reaches 31."""
    betas = [1.0, 1.0, float(rng.uniform(0.05, 3)), float(rng.uniform(0.05, 3)), 40.0, 16.0]
    scales = [rand_scale(rng, 1e-3, 0.5) for _ in range(4)] + [0.5, 1.0]
    model = branches_model(rng, ["SOFTMAX"] * 6, in_scales=scales, betas=betas)
    assert_bit_exact(model, rng, inputs=every_value(rng, 6), tmp_path=tmp_path)


def test_softmax_long_rows_sanitized(rng, tmp_path):
    """1000-class rows whose exp-sum stays below 512 (LiteRT aborts above), under ASan/UBSan."""
    model = branches_model(rng, ["SOFTMAX"], [(1, 1000)], in_scales=[0.1], betas=[1.0])
    x = rng.integers(-128, 60, size=(2, 1000)).astype(np.int8)
    x[:, rng.integers(1000, size=5)] = 127
    assert_bit_exact(model, rng, inputs=[x], sanitize=True, tmp_path=tmp_path)


def test_softmax_exp_sum_over_512(rng, tmp_path):
    """LiteRT's reference aborts when a row's exp-sum reaches 512; tinymem returns what the same
    arithmetic gives with a wider shift: every probability rounds to 0."""
    model = branches_model(rng, ["SOFTMAX"], [(1, 600)], in_scales=[0.1], betas=[1.0])
    g = parse_tflite(model, "long softmax")
    host = build_host(g, make_plan(g), tmp_path, sanitize=True)
    (out,) = host.run([np.zeros((1, 600), np.int8)])
    assert np.all(out == -128)


def test_every_op_sanitized_align1(rng, tmp_path):
    """One of each op on odd-sized tensors, unaligned arena, under ASan/UBSan."""
    kinds = REQUANT + TABLES + ["SOFTMAX"]
    shapes = [(1, 3, 5, 7)] * len(kinds)
    model = branches_model(rng, kinds, shapes)
    plan, _ = assert_bit_exact(model, rng, n=3, sanitize=True, align=1, tmp_path=tmp_path)
    assert_in_place(plan)


def one_op(kind, in_q=(0.05, 0), out_q=(0.05, 0), opts=None, out_shape=(1, 8), in_dtype="int8", const=False):
    m = ModelBuilder()
    data = np.zeros((1, 8), np.int8) if const else None
    x = m.tensor([1, 8], in_dtype, *(in_q if in_dtype != "float32" else (None, None)), data=data)
    y = m.act(list(out_shape), *out_q)
    m.op(kind, [x], [y], opts)
    return m.build([] if const else [x], [y])


def float_quantize_inside():
    """A float tensor quantized twice: not a peelable model boundary (tinymem/model/boundary.py),
    so the float QUANTIZE reaches validation as an op of the graph."""
    m = ModelBuilder()
    x = m.tensor([1, 8], "float32")
    y, z = m.act([1, 8], 0.05, 0), m.act([1, 8], 0.1, 3)
    m.op("QUANTIZE", [x], [y])
    m.op("QUANTIZE", [x], [z])
    return m.build([x], [y, z])


UNSUPPORTED = {
    "logistic output scale": (one_op("LOGISTIC", out_q=(1 / 128, 0)), "1/256"),
    "softmax output zero point": (one_op("SOFTMAX", out_q=(1 / 256, 0), opts=options("SoftmaxOptions", beta=1.0)), "zero point"),
    "softmax output scale": (one_op("SOFTMAX", out_q=(1 / 128, -128), opts=options("SoftmaxOptions", beta=1.0)), "1/256"),
    "softmax tiny beta": (one_op("SOFTMAX", out_q=(1 / 256, -128), opts=options("SoftmaxOptions", beta=1e-7)), "beta"),
    "hard swish multiplier": (one_op("HARD_SWISH", in_q=(1.0, 0), out_q=(1e-3, 0)), "below 1"),
    "relu ratio": (one_op("RELU", in_q=(1e3, 0), out_q=(1e-7, 0)), "too large"),
    "relu6 shape": (one_op("RELU6", out_shape=(1, 9)), "does not match"),
    "tanh const input": (one_op("TANH", const=True), "constant"),
    "quantize float input": (float_quantize_inside(), "float32"),
}


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_unsupported(name):
    model, message = UNSUPPORTED[name]
    with pytest.raises(UnsupportedError, match=message) as e:
        validate_graph(parse_tflite(model, name))
    assert "op 0 (" in str(e.value)
