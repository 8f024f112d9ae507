"""FULLY_CONNECTED vs LiteRT BUILTIN_REF over random shapes, quantization and activations."""
import numpy as np
import pytest

from harness import assert_bit_exact
from modelgen import ACT, ModelBuilder, options, rand_int8, rand_scale


def fc_model(rng, batches, in_f, out_f, act="NONE", bias=True, per_channel=False, keep_dims=False):
    m = ModelBuilder()
    x = m.act([batches, in_f], rand_scale(rng, 0.01, 0.1), int(rng.integers(-128, 128)))
    w_scale = [rand_scale(rng, 1e-3, 2e-2) for _ in range(out_f)] if per_channel else rand_scale(rng, 1e-3, 2e-2)
    w = m.tensor([out_f, in_f], "int8", w_scale, np.zeros(out_f if per_channel else 1, int), rand_int8(rng, (out_f, in_f)))
    ins = [x, w]
    if bias:
        in_scale = m.tensors[x].quantization.scale[0]
        b_scale = np.atleast_1d(w_scale) * in_scale
        ins.append(m.tensor([out_f], "int32", b_scale, np.zeros(b_scale.size, int),
                            rng.integers(-5000, 5000, out_f).astype(np.int32)))
    else:
        ins.append(-1)
    y = m.act([batches, out_f], rand_scale(rng, 0.02, 0.3), int(rng.integers(-128, 128)))
    m.op("FULLY_CONNECTED", ins, [y], options("FullyConnectedOptions", fusedActivationFunction=ACT[act], keepNumDims=keep_dims))
    return m.build([x], [y])


@pytest.mark.parametrize("case", range(24))
def test_fully_connected_random(case, rng, tmp_path):
    batches = int(rng.integers(1, 4))
    in_f, out_f = int(rng.integers(1, 70)), int(rng.integers(1, 40))
    act = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"][case % 4]
    model = fc_model(rng, batches, in_f, out_f, act=act, bias=case % 3 != 0, per_channel=case % 2 == 1)
    assert_bit_exact(model, rng, n=2, tmp_path=tmp_path)


def test_fully_connected_sanitized(rng, tmp_path):
    assert_bit_exact(fc_model(rng, 2, 33, 17, act="RELU"), rng, n=2, sanitize=True, tmp_path=tmp_path)
