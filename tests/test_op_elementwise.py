"""ADD and MUL vs LiteRT BUILTIN_REF: random shapes and quantization, every fused activation,
broadcasting (same shape, per channel, scalar, general N-D), constant operands, in-place plans."""
import numpy as np
import pytest

from harness import assert_bit_exact, assert_bit_exact_at_margin
from modelgen import ACT, ModelBuilder, options, rand_int8, rand_scale
from tinymem.errors import UnsupportedError
from tinymem.model.tflite import parse_tflite
from tinymem.plan import make_plan

ACTS = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]
PATTERNS = ["same", "channel", "scalar", "general"]


def binary_model(rng, kind, a_shape, b_shape, act="NONE", const=None, out_scale=None):
    """A one-op ADD/MUL model; `const` (0 or 1) makes that operand a constant."""
    m = ModelBuilder()
    ids, scales = [], []
    for pos, shape in enumerate((a_shape, b_shape)):
        scale, zp = rand_scale(rng, 0.005, 0.1), int(rng.integers(-128, 128))
        scales.append(scale)
        ids.append(m.tensor(shape, "int8", scale, zp, rand_int8(rng, shape)) if pos == const else m.act(shape, scale, zp))
    if out_scale is None:  # roughly the range of the result, so outputs neither all clamp nor all vanish
        out_scale = rand_scale(rng, 0.01, 0.2) if kind == "ADD" else scales[0] * scales[1] * rand_scale(rng, 10, 300)
    y = m.act(list(np.broadcast_shapes(a_shape, b_shape)), out_scale, int(rng.integers(-128, 128)))
    m.op(kind, ids, [y], options(kind.title() + "Options", fusedActivationFunction=ACT[act]))
    return m.build([t for pos, t in enumerate(ids) if pos != const], [y])


def random_shapes(rng, pattern):
    rank = int(rng.integers(2, 6))
    full = [int(rng.choice([1, 2]))] + [int(rng.integers(1, 8)) for _ in range(rank - 1)]
    if pattern == "same":
        return full, full
    if pattern == "channel":
        return full, ([full[-1]] if rng.random() < 0.5 else [1] * (rank - 1) + [full[-1]])
    if pattern == "scalar":
        return full, ([] if rng.random() < 0.5 else [1])
    # general: each dim of the full shape lives in a, in b, or in both; b may drop leading dims
    a, b = [], []
    for n in full:
        where = rng.integers(3)
        a.append(n if where != 1 else 1)
        b.append(n if where != 0 else 1)
    drop = int(rng.integers(0, 2))
    b = b[drop:] if all(v == 1 for v in b[:drop]) else b
    return (a, b) if rng.random() < 0.5 else (b, a)


@pytest.mark.parametrize("kind", ["ADD", "MUL"])
@pytest.mark.parametrize("case", range(12))
def test_binary_random(kind, case, rng, tmp_path):
    a_shape, b_shape = random_shapes(rng, PATTERNS[case % 4])
    model = binary_model(rng, kind, a_shape, b_shape, act=ACTS[(case // 4 + case) % 4])
    assert_bit_exact(model, rng, n=2, tmp_path=tmp_path)


@pytest.mark.parametrize("kind", ["ADD", "MUL"])
@pytest.mark.parametrize("const", [0, 1])
def test_binary_constant_operand(kind, const, rng, tmp_path):
    # The constant goes first or second in the model; the kernel always takes it as operand b.
    shapes = [[1, 5, 6, 7], [7]] if const else [[1, 1, 6, 1], [1, 5, 6, 7]]
    model = binary_model(rng, kind, *shapes, act="RELU", const=const)
    assert_bit_exact(model, rng, n=2, tmp_path=tmp_path)


@pytest.mark.parametrize("kind", ["ADD", "MUL"])
def test_binary_in_place_at_exact_margin(kind, rng, tmp_path):
    model = binary_model(rng, kind, [1, 9, 7, 5], [1, 9, 7, 5], act="RELU6")
    plan, _ = assert_bit_exact(model, rng, n=2, tmp_path=tmp_path, align=1)
    assert plan.layers[0].in_place
    assert plan.arena_bytes == 2 * 9 * 7 * 5  # the output reuses one input's bytes exactly


@pytest.mark.parametrize("kind", ["ADD", "MUL"])
def test_binary_broadcast_overlap_rules(kind, rng, tmp_path):
    # Each operand's rule at its exact margin, the broadcast (smaller) one included.
    model = binary_model(rng, kind, [1, 4, 5, 6], [1, 4, 1, 6], act="RELU")
    assert assert_bit_exact_at_margin(model, rng, tmp_path=tmp_path) == 2


@pytest.mark.parametrize("kind", ["ADD", "MUL"])
def test_binary_same_tensor_twice(kind, rng, tmp_path):
    # x + x and x * x: one buffer feeds both operands, and the output may still take its place.
    m = ModelBuilder()
    x = m.act([1, 6, 5, 3], 0.03, -7)
    y = m.act([1, 6, 5, 3], 0.05 if kind == "ADD" else 0.04, 11)
    m.op(kind, [x, x], [y], options(kind.title() + "Options", fusedActivationFunction=0))
    plan, _ = assert_bit_exact(m.build([x], [y]), rng, n=2, tmp_path=tmp_path, align=1)
    assert plan.layers[0].in_place


def test_mul_double_rounding(rng, tmp_path):
    # LiteRT's int8 MUL requantizes with gemmlowp's double rounding; single rounding differs by one
    # on about 1% of products, so a few thousand values pin the choice down.
    assert_bit_exact(binary_model(rng, "MUL", [1, 16, 16, 16], [1, 16, 16, 16]), rng, n=2, tmp_path=tmp_path)


def test_add_extreme_scales(rng, tmp_path):
    # Very different input scales: one input's multiplier is tiny, the other's is 0.5.
    m = ModelBuilder()
    a, b = m.act([1, 4, 4, 6], 0.5, -3), m.act([1, 4, 4, 6], 2e-4, 17)
    y = m.act([1, 4, 4, 6], 0.9, 0)
    m.op("ADD", [a, b], [y], options("AddOptions", fusedActivationFunction=0))
    assert_bit_exact(m.build([a, b], [y]), rng, n=2, tmp_path=tmp_path)


@pytest.mark.parametrize("kind", ["ADD", "MUL"])
def test_binary_sanitized(kind, rng, tmp_path):
    model = binary_model(rng, kind, [1, 3, 1, 5], [1, 1, 4, 5], act="RELU")
    assert_bit_exact(model, rng, n=2, sanitize=True, tmp_path=tmp_path)


def test_add_rejects_tiny_output_scale(rng):
    model = binary_model(rng, "ADD", [1, 4, 4, 3], [1, 4, 4, 3], out_scale=1e-9)
    with pytest.raises(UnsupportedError, match=r"op 0 \(ADD\).*output scale"):
        make_plan(parse_tflite(model, "m"))


def test_binary_rejects_wrong_output_shape(rng):
    m = ModelBuilder()
    a, b, y = m.act([1, 4, 3], 0.1, 0), m.act([3], 0.1, 0), m.act([1, 4, 4], 0.1, 0)
    m.op("MUL", [a, b], [y], options("MulOptions"))
    with pytest.raises(UnsupportedError, match=r"op 0 \(MUL\): output tensor 2 .* should have shape \[1, 4, 3\]"):
        make_plan(parse_tflite(m.build([a, b], [y]), "m"))
