"""AVERAGE_POOL_2D, MAX_POOL_2D and MEAN vs LiteRT BUILTIN_REF: random sizes, filters, strides,
SAME/VALID padding, fused activations; MEAN over spatial and other axes, keep_dims true/false,
equal and different input/output quantization; overlapped (in-place) plans."""
import numpy as np
import pytest

from harness import assert_bit_exact, assert_bit_exact_at_margin
from modelgen import ACT, PADDING, ModelBuilder, options, rand_scale
from tinymem.errors import UnsupportedError
from tinymem.model.tflite import parse_tflite
from tinymem.plan import make_plan

ACTS = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]
POOLS = ["AVERAGE_POOL_2D", "MAX_POOL_2D"]


def pool_model(rng, kind, shape, filt, stride, padding, act="NONE", out_quant=None):
    n, h, w, c = shape
    # Output size written out independently of tinymem: SAME = ceil(in / stride), VALID = floor((in - k) / s) + 1.
    oh, ow = ((-(-h // stride[0]), -(-w // stride[1])) if padding == "SAME"
              else ((h - filt[0]) // stride[0] + 1, (w - filt[1]) // stride[1] + 1))
    scale, zp = rand_scale(rng, 0.01, 0.1), int(rng.integers(-128, 128))
    m = ModelBuilder()
    x = m.act(list(shape), scale, zp)
    y = m.act([n, oh, ow, c], *(out_quant or (scale, zp)))
    m.op(kind, [x], [y], options("Pool2DOptions", padding=PADDING[padding], strideH=stride[0], strideW=stride[1],
                                 filterHeight=filt[0], filterWidth=filt[1], fusedActivationFunction=ACT[act]))
    return m.build([x], [y])


def random_pool(rng, kind, case):
    padding = ["SAME", "VALID"][case % 2]
    shape = (int(rng.choice([1, 1, 2])), int(rng.integers(1, 12)), int(rng.integers(1, 12)), int(rng.integers(1, 10)))
    filt = (int(rng.integers(1, min(shape[1], 4) + 1)), int(rng.integers(1, min(shape[2], 4) + 1)))
    if padding == "SAME" and rng.random() < 0.3:  # SAME allows windows larger than the image
        filt = (shape[1] + 1, filt[1])
    stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    return pool_model(rng, kind, shape, filt, stride, padding, act=ACTS[(case // 2) % 4])


@pytest.mark.parametrize("kind", POOLS)
@pytest.mark.parametrize("case", range(7))
def test_pool_random(kind, case, rng, tmp_path):
    assert_bit_exact(random_pool(rng, kind, case), rng, n=3, tmp_path=tmp_path)


@pytest.mark.parametrize("kind,padding", [("AVERAGE_POOL_2D", "SAME"), ("MAX_POOL_2D", "VALID")])
def test_pool_overlaps_at_exact_margin(kind, padding, rng, tmp_path):
    # The output (smaller than the input) sits inside the input's bytes, by the least margin.
    model = pool_model(rng, kind, (1, 9, 10, 6), (3, 3), (2, 2), padding, act="RELU")
    plan, _ = assert_bit_exact(model, rng, n=3, tmp_path=tmp_path, align=1)
    assert plan.layers[0].in_place
    assert plan.arena_bytes < 9 * 10 * 6 + plan.graph.t(1).nbytes
    assert assert_bit_exact_at_margin(model, rng, tmp_path=tmp_path) == 1


@pytest.mark.parametrize("kind", POOLS)
def test_pool_sanitized(kind, rng, tmp_path):
    assert_bit_exact(pool_model(rng, kind, (2, 7, 6, 5), (3, 2), (2, 1), "SAME", act="RELU6"), rng, n=2,
                     sanitize=True, tmp_path=tmp_path)


def test_pool_rejects_requantizing(rng):
    model = pool_model(rng, "AVERAGE_POOL_2D", (1, 4, 4, 2), (2, 2), (2, 2), "VALID", out_quant=(0.5, 3))
    with pytest.raises(UnsupportedError, match=r"op 0 \(AVERAGE_POOL_2D\): input tensor 0 .* quantization differ"):
        make_plan(parse_tflite(model, "m"))


# --- MEAN -------------------------------------------------------------------------------------


def mean_model(rng, shape, axes, keep, same_quant):
    rank = len(shape)
    resolved = {a % rank for a in axes}
    out = [1 if d in resolved else n for d, n in enumerate(shape) if keep or d not in resolved]
    scale, zp = rand_scale(rng, 0.005, 0.1), int(rng.integers(-128, 128))
    m = ModelBuilder()
    x = m.act(list(shape), scale, zp)
    ax = m.tensor([len(axes)], "int32", data=np.array(axes, np.int32))
    # A different output scale on either side of the input's (shift > 0 and < 0 after folding 1/count).
    y = m.act(out, scale, zp) if same_quant else m.act(out, scale * rand_scale(rng, 0.05, 4), int(rng.integers(-128, 128)))
    m.op("MEAN", [x, ax], [y], options("ReducerOptions", keepDims=keep))
    return m.build([x], [y])


MEAN_CASES = [
    # (shape, axes): Keras GlobalAveragePooling2D first, then other axis sets BUILTIN_REF also
    # sends through QuantizedMeanOrSum
    ((1, 7, 5, 9), [1, 2]),
    ((2, 4, 6, 3), [2, 1]),
    ((1, 3, 11, 4), [-3, -2]),
    ((1, 6, 6, 8), [3]),
    ((2, 5, 4, 3), [0, 3]),
    ((1, 9, 13), [1]),
    ((3, 17), [-1]),
    ((1, 4, 5, 6), [0, 1, 2, 3]),
    ((2, 3, 4, 5, 2), [1, 3]),
    ((1, 1, 12, 5), [1, 2, 1]),
    ((2, 1, 5, 3), [1]),  # only an axis of extent 1: no reduced dimension left, one element a sum
]


@pytest.mark.parametrize("case", range(len(MEAN_CASES)))
def test_mean(case, rng, tmp_path):
    shape, axes = MEAN_CASES[case]
    keep, same_quant = case % 2 == 0, case % 4 < 2  # all four combinations, spread over the cases
    assert_bit_exact(mean_model(rng, shape, axes, keep, same_quant), rng, n=3, tmp_path=tmp_path)


def test_mean_large_count(rng, tmp_path):
    # 40 x 40 = 1600 values per output: the 1/count folding shifts by floor(log2(1600)) = 10.
    assert_bit_exact(mean_model(rng, (1, 40, 40, 3), [1, 2], False, False), rng, n=2, tmp_path=tmp_path)


def test_mean_overlaps_at_exact_margin(rng, tmp_path):
    plan, _ = assert_bit_exact(mean_model(rng, (1, 6, 7, 10), [1, 2], True, False), rng, n=2, tmp_path=tmp_path, align=1)
    assert plan.layers[0].in_place
    assert plan.arena_bytes == 6 * 7 * 10
    # Reducing the leading axis: later outputs read low input bytes, a positive margin.
    assert assert_bit_exact_at_margin(mean_model(rng, (3, 4, 5), [0], False, False), rng, tmp_path=tmp_path) == 1


def test_mean_sanitized(rng, tmp_path):
    assert_bit_exact(mean_model(rng, (2, 5, 3, 7), [1, 2], False, False), rng, n=2, sanitize=True, tmp_path=tmp_path)


def test_mean_rejects_dynamic_axis(rng):
    m = ModelBuilder()
    x, ax, y = m.act([1, 4, 4, 2], 0.1, 0), m.tensor([2], "int32"), m.act([1, 2], 0.1, 0)
    m.op("MEAN", [x, ax], [y], options("ReducerOptions", keepDims=False))
    with pytest.raises(UnsupportedError, match=r"op 0 \(MEAN\): axis tensor 1 .* must be a constant"):
        make_plan(parse_tflite(m.build([x, ax], [y]), "m"))
