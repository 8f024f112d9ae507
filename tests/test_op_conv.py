"""CONV_2D and DEPTHWISE_CONV_2D vs LiteRT BUILTIN_REF: random geometry, quantization, activations.

The overlap-aware planner places each one-op model's output over its input whenever the kernel's
read/write order permits, so every bit-exact run here also checks the overlap rule."""
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness import assert_bit_exact, assert_bit_exact_at_margin, random_inputs
from modelgen import ACT, PADDING, ModelBuilder, options, rand_int8, rand_scale
from reference import litert_run
from tinymem.errors import UnsupportedError
from tinymem.model.tflite import parse_tflite
from tinymem.ops.conv import CONV_PIXELS, DEPTHWISE_BLOCK, DOT_CHUNK, out_size_and_pad
from tinymem.plan import make_plan
from tinymem.sim import build_host
from tinymem.sim.host import WARN_FLAGS, host_cc

ACTS = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]


def conv_model(rng, kind, in_hwc, k_hw, out_c, stride=(1, 1), dil=(1, 1), padding="SAME", act="NONE",
               bias=True, per_channel=True, batches=1, groups=1, out_shape=None, filter_zp=0, axis=None):
    """One CONV_2D (filter [out_c, kh, kw, in_c/groups]) or DEPTHWISE_CONV_2D (filter [1, kh, kw, out_c])."""
    depthwise = kind == "DEPTHWISE_CONV_2D"
    (h, w, c), (kh, kw) = in_hwc, k_hw
    m = ModelBuilder()
    in_scale = rand_scale(rng, 0.01, 0.1)
    x = m.act([batches, h, w, c], in_scale, int(rng.integers(-128, 128)))
    f_shape = [1, kh, kw, out_c] if depthwise else [out_c, kh, kw, c // groups]
    w_scale = np.array([rand_scale(rng, 1e-3, 2e-2) for _ in range(out_c if per_channel else 1)])
    f_axis = (3 if depthwise else 0) if axis is None else axis
    f = m.tensor(f_shape, "int8", w_scale, np.full(w_scale.size, filter_zp), rand_int8(rng, f_shape), axis=f_axis)
    ins = [x, f]
    b_data = rng.integers(-20000, 20000, out_c).astype(np.int32)  # drawn always: same rng stream either way
    if bias:
        b_scale = w_scale * in_scale
        ins.append(m.tensor([out_c], "int32", b_scale, np.zeros(b_scale.size, int), b_data * (bias != "zero")))
    oh, _ = out_size_and_pad(PADDING[padding], h, kh, stride[0], dil[0])
    ow, _ = out_size_and_pad(PADDING[padding], w, kw, stride[1], dil[1])
    # Output scale sized to the accumulator's spread (~74 per int8 factor, sqrt(taps) terms), so
    # outputs span the int8 range instead of saturating or collapsing: any wrong input byte shows.
    taps = kh * kw * (1 if depthwise else c // groups)
    out_scale = in_scale * float(w_scale.mean()) * 74 * 74 * np.sqrt(taps) / 50 * rand_scale(rng, 0.5, 2)
    y = m.act(out_shape or [batches, oh, ow, out_c], out_scale, int(rng.integers(-128, 128)))
    common = dict(padding=PADDING[padding], strideH=stride[0], strideW=stride[1], dilationHFactor=dil[0],
                  dilationWFactor=dil[1], fusedActivationFunction=ACT[act])
    if depthwise:
        m.op(kind, ins, [y], options("DepthwiseConv2DOptions", depthMultiplier=out_c // c, **common))
    else:
        m.op(kind, ins, [y], options("Conv2DOptions", **common))
    return m.build([x], [y])


def random_case(rng, case, kind):
    """Varied geometry: kernel sizes 1..7 (also non-square), strides 1..3, dilation 1..3."""
    kernels = [(1, 1), (3, 3), (5, 5), (7, 7), (1, 3), (3, 2), (2, 5)]
    kh, kw = kernels[case % len(kernels)]
    stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    dil = (1, 1) if case % 3 == 0 else (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    if case % 4 == 1:
        stride = (1, 1)  # dilation > 1 is commonly used with stride 1
    padding = "SAME" if case % 2 == 0 else "VALID"
    h = int(rng.integers((kh - 1) * dil[0] + 1, (kh - 1) * dil[0] + 9))
    w = int(rng.integers((kw - 1) * dil[1] + 1, (kw - 1) * dil[1] + 9))
    if kind == "DEPTHWISE_CONV_2D":
        groups, c = 1, int(rng.integers(1, 12))
        out_c = c * (1 + case % 3)
    else:
        groups = [1, 1, 2, 3][case % 4]
        c, out_c = groups * int(rng.integers(1, 6)), groups * int(rng.integers(1, 8))
    return dict(in_hwc=(h, w, c), k_hw=(kh, kw), out_c=out_c, stride=stride, dil=dil, padding=padding,
                act=ACTS[case % 4], bias=kind == "CONV_2D" or case % 5 != 4, per_channel=case % 6 != 5,
                batches=2 if case == 5 else 1, groups=groups)


@pytest.mark.parametrize("case", range(10))
def test_conv_random(case, rng, tmp_path):
    model = conv_model(rng, "CONV_2D", **random_case(rng, case, "CONV_2D"))
    assert_bit_exact(model, rng, n=2, tmp_path=tmp_path)


@pytest.mark.parametrize("case", range(10))
def test_depthwise_random(case, rng, tmp_path):
    model = conv_model(rng, "DEPTHWISE_CONV_2D", **random_case(rng, case, "DEPTHWISE_CONV_2D"))
    assert_bit_exact(model, rng, n=2, tmp_path=tmp_path)


@pytest.mark.parametrize("kind,geo", [
    # even input, stride 2, 3x3 SAME: total pad 1, all of it at the bottom/right
    ("CONV_2D", dict(in_hwc=(8, 6, 5), k_hw=(3, 3), out_c=4, stride=(2, 2))),
    ("DEPTHWISE_CONV_2D", dict(in_hwc=(10, 7, 3), k_hw=(4, 2), out_c=6, stride=(3, 2))),
    # dilation so large that some output pixels have no tap inside the image (bias only)
    ("CONV_2D", dict(in_hwc=(2, 3, 3), k_hw=(2, 2), out_c=3, dil=(5, 4))),
    ("DEPTHWISE_CONV_2D", dict(in_hwc=(2, 3, 3), k_hw=(2, 3), out_c=3, dil=(5, 3))),
    # long dot products (32- and 16-element pieces, a zero-padded last piece), 1x1 and gathered
    ("CONV_2D", dict(in_hwc=(5, 4, 37), k_hw=(1, 1), out_c=20)),
    ("CONV_2D", dict(in_hwc=(5, 6, 19), k_hw=(3, 3), out_c=9, act="RELU")),
    ("CONV_2D", dict(in_hwc=(3, 3, 96), k_hw=(1, 1), out_c=7)),  # odd pixel count: the last one alone
    # more channels than one depthwise block, multiplier > 1 across block boundaries
    ("DEPTHWISE_CONV_2D", dict(in_hwc=(5, 5, 23), k_hw=(3, 3), out_c=69)),
    ("DEPTHWISE_CONV_2D", dict(in_hwc=(4, 5, 1), k_hw=(3, 3), out_c=40)),
    ("DEPTHWISE_CONV_2D", dict(in_hwc=(5, 6, 40), k_hw=(3, 3), out_c=40, stride=(2, 2))),  # partial last block
])
def test_padding_edge_cases(kind, geo, rng, tmp_path):
    assert_bit_exact(conv_model(rng, kind, **geo), rng, n=2, tmp_path=tmp_path)


@pytest.mark.parametrize("kind,geo", [
    ("DEPTHWISE_CONV_2D", dict(in_hwc=(9, 9, 8), k_hw=(3, 3), out_c=8, stride=(2, 2))),  # over its own input
    ("DEPTHWISE_CONV_2D", dict(in_hwc=(6, 7, 40), k_hw=(3, 3), out_c=40)),
    ("CONV_2D", dict(in_hwc=(7, 6, 4), k_hw=(1, 1), out_c=12)),  # 1x1 expansion over pixels already read
    ("CONV_2D", dict(in_hwc=(8, 8, 6), k_hw=(3, 3), out_c=6, stride=(2, 2), groups=2)),
])
def test_overlap_at_minimum_margin(kind, geo, rng, tmp_path):
    """align=1: the output sits exactly min_delta below the input; the plan must really overlap."""
    plan, _ = assert_bit_exact(conv_model(rng, kind, **geo), rng, n=2, tmp_path=tmp_path, align=1)
    assert plan.layers[0].in_place


@pytest.mark.parametrize("kind,geo", [
    ("CONV_2D", dict(in_hwc=(7, 6, 4), k_hw=(1, 1), out_c=12)),  # expansion: pixel pairs read ahead
    ("CONV_2D", dict(in_hwc=(5, 5, 24), k_hw=(1, 1), out_c=8)),  # reduction, odd pixel count
    ("CONV_2D", dict(in_hwc=(5, 7, 3), k_hw=(3, 3), out_c=5, padding="SAME")),  # pairs across rows
    ("CONV_2D", dict(in_hwc=(3, 3, 4), k_hw=(1, 1), out_c=6, batches=2)),  # pairs across batches
    ("CONV_2D", dict(in_hwc=(6, 5, 6), k_hw=(3, 3), out_c=4, groups=2)),  # every group's windows first
    ("DEPTHWISE_CONV_2D", dict(in_hwc=(6, 7, 24), k_hw=(3, 3), out_c=24)),  # partial block reads ahead
    ("DEPTHWISE_CONV_2D", dict(in_hwc=(5, 6, 10), k_hw=(3, 3), out_c=20)),  # multiplier 2
    ("DEPTHWISE_CONV_2D", dict(in_hwc=(9, 9, 16), k_hw=(3, 3), out_c=16, stride=(2, 2))),
])
def test_overlap_exact_margin(kind, geo, rng, tmp_path):
    """The output placed exactly at the overlap rule's min_delta from the input (even a negative
    one): a rule one byte too generous for the kernel's read/write order fails here."""
    # A clobbered input byte may feed a single output, which can come out right by chance: 8 samples.
    assert assert_bit_exact_at_margin(conv_model(rng, kind, **geo), rng, n=8, tmp_path=tmp_path) == 1


def test_conv_without_bias(rng, tmp_path):
    """LiteRT's CONV_2D insists on a bias tensor; without one the result must equal a zero bias."""
    geo = dict(in_hwc=(6, 5, 3), k_hw=(3, 3), out_c=5, stride=(1, 2), act="RELU")
    seed = int(rng.integers(1 << 30))
    g = parse_tflite(conv_model(np.random.default_rng(seed), "CONV_2D", bias=False, **geo), "no bias")
    reference = conv_model(np.random.default_rng(seed), "CONV_2D", bias="zero", **geo)
    inputs = random_inputs(g, rng, 2)
    ours = build_host(g, make_plan(g), tmp_path).run(inputs)[0]
    assert np.array_equal(ours, litert_run(reference, inputs)[0])


@pytest.mark.parametrize("kind,geo", [
    # (with today's planner, align=1 puts this one's scratch at an odd offset)
    ("CONV_2D", dict(in_hwc=(7, 5, 5), k_hw=(3, 3), out_c=3, stride=(2, 1), dil=(1, 2), act="RELU6")),
    ("CONV_2D", dict(in_hwc=(5, 4, 18), k_hw=(1, 1), out_c=6, groups=2)),
    ("CONV_2D", dict(in_hwc=(3, 5, 5), k_hw=(2, 2), out_c=5, padding="VALID")),  # odd pixel count
    ("DEPTHWISE_CONV_2D", dict(in_hwc=(7, 6, 20), k_hw=(3, 3), out_c=40, stride=(2, 1), dil=(1, 2), act="RELU6")),
    # a partial last block reads whole blocks in place, except where that would leave the input
    ("DEPTHWISE_CONV_2D", dict(in_hwc=(5, 4, 24), k_hw=(3, 3), out_c=24)),
])
def test_sanitized(kind, geo, rng, tmp_path):
    """ASan/UBSan: no read outside the input, the gathered windows or the (padded) weights, no
    signed overflow, and (align=1: the scratch may start at an odd offset) no misaligned window."""
    assert_bit_exact(conv_model(rng, kind, **geo), rng, n=2, sanitize=True, tmp_path=tmp_path, align=1)


@pytest.mark.parametrize("kind,bad,needle", [
    ("CONV_2D", dict(out_shape=[1, 5, 5, 4]), "should be"),
    ("CONV_2D", dict(filter_zp=3), "zero point 0"),
    ("CONV_2D", dict(axis=3), "axis"),
    ("CONV_2D", dict(groups=2, out_c=5), "groups"),
    ("DEPTHWISE_CONV_2D", dict(out_c=6), "not a multiple"),
    ("DEPTHWISE_CONV_2D", dict(axis=0), "axis"),
    ("CONV_2D", dict(padding="VALID", k_hw=(9, 3), out_shape=[1, 1, 4, 4]), "larger than"),
    ("CONV_2D", dict(in_hwc=(1, 1, 65537), k_hw=(1, 1), out_c=1), "overflow"),
])
def test_unsupported_variants(kind, bad, needle, rng):
    geo = dict(in_hwc=(6, 6, 4), k_hw=(3, 3), out_c=4 if kind == "CONV_2D" else 8)
    model = conv_model(rng, kind, **{**geo, **bad})
    with pytest.raises(UnsupportedError, match=needle) as err:
        make_plan(parse_tflite(model, "bad"))
    assert "op 0" in str(err.value)


REQUANT_CHECK = r"""
#include <stdio.h>
#include "tm_conv.c"
#include "tm_quant.h"
static uint64_t s = 88172645463325252u;
static uint32_t rnd(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return (uint32_t)s; }
int main(void)
{
    static const int32_t edge[] = {0, 1, -1, 2, -2, 1 << 30, -(1 << 30), INT32_MAX, INT32_MIN, INT32_MIN + 1};
    long bad = 0;
    for (long i = 0; i < 3000000; ++i) {
        const int32_t x = i % 5 == 0 ? edge[rnd() % 10] : (int32_t)rnd() >> (rnd() % 32);
        /* multipliers as quantize_multiplier makes them ([2^30, 2^31)), edges, and any in [0, 2^31) */
        const int32_t m = i % 7 == 0 ? edge[rnd() % 8] & INT32_MAX
                        : i % 11 == 0 ? (int32_t)(rnd() >> (1 + rnd() % 31)) : (int32_t)((1u << 30) | (rnd() >> 2));
        const int32_t shift = (int32_t)(rnd() % 39) - 31; /* [-31, 7] */
        bad += tm_conv_requantize(x, m, shift) != tm_requantize_double_rounding(x, m, shift);
    }
    printf("%ld\n", bad);
    return 0;
}
"""


def test_fast_requantize_matches_double_rounding(tmp_path):
    """The kernels' cheaper requantization equals tm_quant.h's double rounding, edges included."""
    kernels = Path(__file__).resolve().parents[1] / "firmware/kernels/portable"
    (tmp_path / "check.c").write_text(REQUANT_CHECK)
    exe = tmp_path / "check"
    subprocess.run([host_cc(), *WARN_FLAGS, "-O2", "-I", str(kernels), str(tmp_path / "check.c"), "-o", str(exe)],
                   check=True)
    assert subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.strip() == "0"


@pytest.mark.parametrize("name,value", [("TM_DEPTHWISE_BLOCK", DEPTHWISE_BLOCK), ("TM_CONV_DOT_CHUNK", DOT_CHUNK),
                                        ("TM_CONV_PIXELS", CONV_PIXELS)])
def test_kernel_constants_match(name, value):
    """The overlap rules, scratch sizes and weight padding in tinymem/ops/conv.py assume these."""
    header = (Path(__file__).resolve().parents[1] / "firmware/kernels/portable/tm_conv.h").read_text()
    assert int(re.search(rf"#define {name} (\d+)", header).group(1)) == value
