"""PAD, PADV2 and CONCATENATION (and the RESHAPE alias) vs LiteRT BUILTIN_REF: random ranks 1-5,
zero/asymmetric pad amounts, int32/int64 paddings, any concat axis (negative too), 2-4 inputs,
constant inputs, overlapped (in-place) plans."""
import numpy as np
import pytest

from harness import assert_bit_exact, assert_bit_exact_at_margin
from modelgen import ModelBuilder, options, rand_int8, rand_scale
from tinymem.errors import UnsupportedError
from tinymem.model.tflite import parse_tflite
from tinymem.plan import make_plan


def quant(rng):
    return rand_scale(rng, 0.01, 0.1), int(rng.integers(-128, 128))


def pad_model(rng, shape, pads, kind="PAD", pad_dtype="int32", value_quant=None):
    m = ModelBuilder()
    q = quant(rng)
    x = m.act(list(shape), *q)
    ins = [x, m.tensor([len(shape), 2], pad_dtype, data=np.array(pads, pad_dtype))]
    if kind == "PADV2":
        ins.append(m.tensor([1], "int8", *(value_quant or q), data=rand_int8(rng, (1,))))
    y = m.act([n + a + b for n, (a, b) in zip(shape, pads)], *q)
    m.op(kind, ins, [y], options("PadOptions" if kind == "PAD" else "PadV2Options"))
    return m.build([x], [y])


def random_pads(rng, case):
    rank = 1 + case % 5
    shape = [int(rng.integers(1, 6)) for _ in range(rank)]
    # About half the sides unpadded, so rows merge and zero padding is covered.
    pads = [[int(rng.integers(0, 4)) if rng.random() < 0.5 else 0 for _ in range(2)] for _ in range(rank)]
    return shape, pads


@pytest.mark.parametrize("kind", ["PAD", "PADV2"])
@pytest.mark.parametrize("case", range(6))
def test_pad_random(kind, case, rng, tmp_path):
    shape, pads = random_pads(rng, case)
    model = pad_model(rng, shape, pads, kind, pad_dtype=["int32", "int64"][case % 2])
    assert_bit_exact(model, rng, n=2, tmp_path=tmp_path)


def test_pad_image_style(rng, tmp_path):
    # The usual pre-conv padding: asymmetric H and W, N and C untouched.
    assert_bit_exact(pad_model(rng, (1, 5, 6, 3), [[0, 0], [0, 1], [2, 1], [0, 0]]), rng, n=2, tmp_path=tmp_path)


def test_pad_overlaps_at_exact_margin(rng, tmp_path):
    model = pad_model(rng, (1, 6, 5, 4), [[0, 0], [1, 2], [1, 0], [0, 0]])
    plan, _ = assert_bit_exact(model, rng, n=2, tmp_path=tmp_path, align=1)
    assert plan.layers[0].in_place
    assert plan.arena_bytes < 6 * 5 * 4 + 9 * 6 * 4
    assert assert_bit_exact_at_margin(model, rng, tmp_path=tmp_path) == 1


@pytest.mark.parametrize("kind", ["PAD", "PADV2"])
def test_pad_sanitized(kind, rng, tmp_path):
    model = pad_model(rng, (2, 3, 4), [[1, 0], [0, 2], [1, 1]], kind)
    assert_bit_exact(model, rng, n=2, sanitize=True, tmp_path=tmp_path)


def test_padv2_rejects_requantized_constant(rng):
    model = pad_model(rng, (1, 3, 3, 2), [[0, 0], [1, 1], [1, 1], [0, 0]], "PADV2", value_quant=(0.5, 0))
    with pytest.raises(UnsupportedError, match=r"op 0 \(PADV2\): constant_values tensor 2 .* scale and zero point"):
        make_plan(parse_tflite(model, "m"))


# --- CONCATENATION ----------------------------------------------------------------------------


def concat_model(rng, base, axis, extents, const=(), in_quant=None):
    """Inputs equal to `base` except along `axis`, where input k has extents[k]; positions in
    `const` are constant tensors."""
    m = ModelBuilder()
    q = quant(rng)
    rank = len(base)
    ins = []
    for k, e in enumerate(extents):
        shape = [e if d == axis % rank else n for d, n in enumerate(base)]
        iq = in_quant if (in_quant and k == 1) else q
        ins.append(m.tensor(shape, "int8", *iq, data=rand_int8(rng, shape)) if k in const else m.act(shape, *iq))
    y = m.act([sum(extents) if d == axis % rank else n for d, n in enumerate(base)], *q)
    m.op("CONCATENATION", ins, [y], options("ConcatenationOptions", axis=axis, fusedActivationFunction=0))
    return m.build([t for k, t in enumerate(ins) if k not in const], [y])


@pytest.mark.parametrize("case", range(9))
def test_concat_random(case, rng, tmp_path):
    rank = 1 + case % 4
    base = [int(rng.integers(1, 5)) for _ in range(rank)]
    axis = int(rng.integers(-rank, rank))
    extents = [int(rng.integers(1, 5)) for _ in range(2 + case % 3)]
    assert_bit_exact(concat_model(rng, base, axis, extents), rng, n=2, tmp_path=tmp_path)


def test_concat_constant_input(rng, tmp_path):
    assert_bit_exact(concat_model(rng, [1, 4, 3, 5], 3, [2, 3, 4], const=(1,)), rng, n=2, tmp_path=tmp_path)


@pytest.mark.parametrize("axis", [0, 3])
def test_concat_overlaps_at_exact_margin(axis, rng, tmp_path):
    # Along axis 0 every input can sit exactly in its own slot of the output: no extra bytes.
    model = concat_model(rng, [2, 3, 4, 5], axis, [2, 1, 3])
    plan, _ = assert_bit_exact(model, rng, n=2, tmp_path=tmp_path, align=1)
    assert plan.layers[0].in_place
    out_bytes = plan.graph.t(plan.graph.outputs[0]).nbytes
    assert plan.arena_bytes == out_bytes if axis == 0 else plan.arena_bytes < 2 * out_bytes
    assert assert_bit_exact_at_margin(model, rng, tmp_path=tmp_path) == 3


def test_concat_sanitized(rng, tmp_path):
    assert_bit_exact(concat_model(rng, [1, 3, 2, 4], -2, [1, 3, 2, 2], const=(2,)), rng, n=2, sanitize=True,
                     tmp_path=tmp_path)


def test_concat_rejects_mixed_quantization(rng):
    model = concat_model(rng, [1, 2, 2, 3], 3, [3, 3], in_quant=(0.5, 1))
    with pytest.raises(UnsupportedError, match=r"op 0 \(CONCATENATION\): input 1 .* quantization differs"):
        make_plan(parse_tflite(model, "m"))


def test_reshape_alias(rng, tmp_path):
    m = ModelBuilder()
    q = quant(rng)
    x, shape, y = m.act([1, 4, 6], *q), m.tensor([2], "int32", data=np.array([1, 24], np.int32)), m.act([1, 24], *q)
    m.op("RESHAPE", [x, shape], [y], options("ReshapeOptions", newShape=[1, 24]))
    plan, _ = assert_bit_exact(m.build([x], [y]), rng, n=2, tmp_path=tmp_path)
    assert plan.arena_bytes == 24
