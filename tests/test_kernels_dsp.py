"""The Armv7E-M DSP kernels (firmware/kernels/armv7em) bit for bit against LiteRT BUILTIN_REF and
the portable kernels.

On the host the same kernel source builds with the C versions of the DSP instructions
(tm_dsp.h), so random shapes run here in seconds, under ASan/UBSan too; the native instructions
run on the emulated Cortex-M4 (mps2_an386) for one random network through every DSP kernel and
for the four models of issue #8, whose instruction counts must stay within 0.7x TFLite Micro
with CMSIS-NN (measured on the same board: benchmarks/tflm_m4_measured.json).
"""
import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness import assert_bit_exact, assert_bit_exact_at_margin, random_inputs
from modelgen import ACT, PADDING, ModelBuilder, options, rand_int8, rand_scale
from reference import litert_run
from test_op_conv import conv_model
from test_op_elementwise import PATTERNS, binary_model, random_shapes
from test_op_fully_connected import fc_model
from test_op_pool import pool_model
from tinymem.model.tflite import parse_tflite
from tinymem.ops import opdef
from tinymem.ops.isa import ARMV7EM, PORTABLE, core_isa, kernel_isa
from tinymem.plan import make_plan
from tinymem.sim import build_host
from tinymem.sim.host import WARN_FLAGS, host_cc

ROOT = Path(__file__).resolve().parent.parent
DSP_DIR = ROOT / "firmware" / "kernels" / "armv7em"
PORTABLE_DIR = ROOT / "firmware" / "kernels" / "portable"
MODELS = ROOT / "models"
ACTS = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]


def kernels_of(model: bytes) -> list[str]:
    g = parse_tflite(model, "m")
    with kernel_isa(ARMV7EM):
        return [opdef(op).kernel(op, g, f"op{op.index}").function for op in g.ops]


def assert_dsp_exact(model: bytes, rng, tmp_path, expect: str | None, n=2, **kw):
    """Under the armv7em kernel set: the kernel codegen picks is `expect` (None: a portable one),
    and the host build equals LiteRT and the portable build, bit for bit."""
    fns = kernels_of(model)
    assert all(f.startswith("tm_dsp_") for f in fns) if expect else not any(f.startswith("tm_dsp_") for f in fns), fns
    if expect:
        assert expect in fns
    g = parse_tflite(model, "m")
    inputs = random_inputs(g, rng, n)
    with kernel_isa(ARMV7EM):
        plan, ours = assert_bit_exact(model, rng, inputs=inputs, tmp_path=tmp_path / "dsp", **kw)
    assert plan.isa == ARMV7EM
    portable = build_host(g, make_plan(g, isa=PORTABLE), tmp_path / "portable").run(inputs)
    for a, b in zip(ours, portable):
        np.testing.assert_array_equal(a, b)
    return plan


# ---- host: C versions of the instructions -------------------------------------------------

REQUANT_CHECK = r"""
#include <stdio.h>
#include <stdlib.h>
#include "tm_dsp.h"
#include "tm_quant.h"

static uint64_t state = 88172645463325252ull;
static uint32_t next(void) { state ^= state << 13; state ^= state >> 7; state ^= state << 17; return (uint32_t)state; }

int main(void)
{
    const int32_t edges[] = {0, 1, -1, 2, -2, (1 << 30) - 1, -(1 << 30) + 1, 1 << 20, -(1 << 20), 12345, -12345};
    for (long i = 0; i < 3000000; ++i) {
        const int32_t m = (int32_t)(0x40000000u + (next() & 0x3FFFFFFFu));
        const int32_t shift = -1 - (int32_t)(next() % 31u);
        const int32_t zp = (int32_t)(next() % 256u) - 128;
        int32_t acc = (int32_t)(next() % (1u << 31)) - (1 << 30);
        if (i % 4 == 1) acc >>= next() % 30u;               /* small accumulators round more often */
        if (i % 97 == 0) acc = edges[(i / 97) % 11];
        const int32_t want = tm_clamp_s8(tm_requantize_double_rounding(acc, m, shift) + zp, -128, 127);
        const int32_t got = tm_dsp_requant(acc, m, -shift - 1, 1 + 2 * zp);
        if (got != want) {
            printf("acc %d m %d shift %d zp %d: %d != %d\n", acc, m, shift, zp, got, want);
            return 1;
        }
        /* the ADD rescale: any x below 2^30 (inputs are multiples of 2^20, sums are not), shift <= 0 */
        const int32_t sh = -(int32_t)(next() % 32u);
        int32_t v = (int32_t)(next() % (1u << 31)) - (1 << 30);
        if (i % 3 == 1) v = ((int32_t)(next() % 511u) - 255) * (1 << 20);
        if (i % 3 == 2) v >>= next() % 30u;
        const int32_t r_want = tm_requantize_double_rounding(v, m, sh);
        const int32_t r_got = tm_dsp_rescale(2 * v, tm_dsp_rescale_of(m, sh));
        if (r_got != r_want) {
            printf("rescale x %d m %d shift %d: %d != %d\n", v, m, sh, r_got, r_want);
            return 1;
        }
        const int32_t a = (int32_t)next(), b = (int32_t)next();
        int32_t max = 0;
        for (int lane = 0; lane < 4; ++lane) {
            const int8_t x = (int8_t)(a >> (8 * lane)), y = (int8_t)(b >> (8 * lane));
            max |= (int32_t)((uint32_t)(uint8_t)(x > y ? x : y) << (8 * lane));
        }
        if (tm_max_s8x4(a, b) != max) {
            printf("max %08x %08x\n", (unsigned)a, (unsigned)b);
            return 1;
        }
    }
    puts("ok");
    return 0;
}
"""


def test_requantization_identity_on_host(tmp_path):
    """tm_dsp_requant (SMMULR form) equals TFLite's double rounding wherever codegen uses it
    (|acc| < 2^30, shift < 0), and so does ADD's tm_dsp_rescale (|x| < 2^30, shift <= 0), on
    millions of draws and the edges. (A one-off in ADD's input rescale rarely reaches its int8
    output, so whole-model tests alone would not catch one.)"""
    src = tmp_path / "check.c"
    src.write_text(REQUANT_CHECK)
    exe = tmp_path / "check"
    cmd = [host_cc(), *WARN_FLAGS, "-O2", "-fsanitize=undefined", "-fno-sanitize-recover=all",
           "-I", str(DSP_DIR), "-I", str(PORTABLE_DIR), str(src), "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


@pytest.mark.parametrize("case", range(6))
def test_conv_1x1_random(case, rng, tmp_path):
    """1x1 convs (the GEMM over pixel pairs): odd channel and pixel counts, strides, batches."""
    c, out_c = int(rng.integers(1, 41)), int(rng.integers(1, 21))
    h, w = int(rng.integers(1, 8)), int(rng.integers(1, 8))
    stride = (1, 1) if case % 3 else (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    model = conv_model(rng, "CONV_2D", (h, w, c), (1, 1), out_c, stride=stride, act=ACTS[case % 4],
                       padding=["SAME", "VALID"][case % 2], batches=2 if case == 5 else 1, per_channel=case != 6)
    assert_dsp_exact(model, rng, tmp_path, "tm_dsp_conv_1x1_s8")


@pytest.mark.parametrize("case", range(8))
def test_conv_gathered_random(case, rng, tmp_path):
    """Other filters: 1-3 input channels through the staged window (first layers), multiples of 4
    widened tap by tap; strides, dilation, SAME/VALID padding."""
    c = [1, 2, 3, 4, 8, 12, 3, 1][case]
    kh, kw = [(3, 3), (5, 5), (3, 3), (3, 3), (2, 3), (3, 1), (7, 2), (10, 4)][case]
    dil = (1, 1) if case % 3 else (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    h = int(rng.integers((kh - 1) * dil[0] + 1, (kh - 1) * dil[0] + 8))
    w = int(rng.integers((kw - 1) * dil[1] + 1, (kw - 1) * dil[1] + 8))
    model = conv_model(rng, "CONV_2D", (h, w, c), (kh, kw), int(rng.integers(1, 12)), stride=stride, dil=dil,
                       padding=["SAME", "VALID"][case % 2], act=ACTS[case % 4], batches=2 if case == 4 else 1)
    assert_dsp_exact(model, rng, tmp_path, "tm_dsp_conv_s8")


@pytest.mark.parametrize("case", range(6))
def test_depthwise_3x3_random(case, rng, tmp_path):
    """3x3 depthwise, channels a multiple of 4: strides 1-3, borders on every side, both clamps."""
    c = 4 * int(rng.integers(1, 9))
    stride = [(1, 1), (2, 2), (1, 2), (3, 1)][case % 4]
    h, w = int(rng.integers(1, 10)), int(rng.integers(1, 10))
    padding = "VALID" if case % 4 == 3 and h >= 3 and w >= 3 else "SAME"
    model = conv_model(rng, "DEPTHWISE_CONV_2D", (h, w, c), (3, 3), c, stride=stride, padding=padding,
                       act=ACTS[case % 4], batches=2 if case == 6 else 1, bias=case != 7)
    assert_dsp_exact(model, rng, tmp_path, "tm_dsp_depthwise_3x3_s8")


@pytest.mark.parametrize("case", range(4))
def test_fully_connected_random(case, rng, tmp_path):
    """Four outputs per pass and the ones left over; rows not a multiple of 4; batches."""
    model = fc_model(rng, int(rng.integers(1, 4)), int(rng.integers(1, 70)), int(rng.integers(1, 40)),
                     act=ACTS[case % 4], bias=case % 3 != 0, per_channel=case % 2 == 1)
    assert_dsp_exact(model, rng, tmp_path, "tm_dsp_fully_connected_s8")


@pytest.mark.parametrize("case", range(3))
def test_max_pool_random(case, rng, tmp_path):
    c = 4 * int(rng.integers(1, 5))
    shape = (int(rng.integers(1, 3)), int(rng.integers(2, 10)), int(rng.integers(2, 10)), c)
    filt = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    filt = (min(filt[0], shape[1]), min(filt[1], shape[2]))
    model = pool_model(rng, "MAX_POOL_2D", shape, filt, stride, ["SAME", "VALID"][case % 2], act=ACTS[case % 4])
    assert_dsp_exact(model, rng, tmp_path, "tm_dsp_max_pool_s8", n=3)


@pytest.mark.parametrize("case", range(8))
def test_add_random(case, rng, tmp_path):
    """Every broadcast pattern, constant operands, every activation; thousands of elements a case
    so the rounding halves of all three rescales come up."""
    a_shape, b_shape = random_shapes(rng, PATTERNS[case % 4])
    a_shape = [*a_shape[:-1], a_shape[-1] * 16]  # more elements (the pattern is kept)
    b_shape = [*b_shape[:-1], b_shape[-1] * 16] if b_shape and b_shape[-1] > 1 else b_shape
    const = (None, 1, None, 0)[case % 4] if case >= 4 else None
    model = binary_model(rng, "ADD", a_shape, b_shape, act=ACTS[case % 4], const=const)
    assert_dsp_exact(model, rng, tmp_path, "tm_dsp_add_const_s8" if const is not None else "tm_dsp_add_s8", n=3)


def test_add_extreme_scales_dsp(rng, tmp_path):
    """One input's multiplier tiny (a long right shift), the other's 0.5 (no shift at all)."""
    for i, (sa, sb, sy) in enumerate([(0.5, 2e-4, 0.9), (1e-3, 0.2, 0.0004), (0.05, 0.05, 0.05)]):
        m = ModelBuilder()
        a, b = m.act([1, 8, 8, 16], sa, -3), m.act([1, 8, 8, 16], sb, 17)
        y = m.act([1, 8, 8, 16], sy, -1)
        m.op("ADD", [a, b], [y], options("AddOptions", fusedActivationFunction=0))
        assert_dsp_exact(m.build([a, b], [y]), rng, tmp_path / str(i), "tm_dsp_add_s8")


@pytest.mark.parametrize("kind,geo", [
    ("CONV_2D", dict(in_hwc=(5, 6, 3), k_hw=(3, 3), out_c=7, stride=(2, 2), act="RELU6")),
    ("CONV_2D", dict(in_hwc=(4, 5, 13), k_hw=(1, 1), out_c=9)),
    ("CONV_2D", dict(in_hwc=(6, 5, 8), k_hw=(3, 3), out_c=5, dil=(2, 1), padding="SAME")),
    ("DEPTHWISE_CONV_2D", dict(in_hwc=(7, 6, 12), k_hw=(3, 3), out_c=12, stride=(2, 1), act="RELU_N1_TO_1")),
])
def test_sanitized(kind, geo, rng, tmp_path):
    """ASan/UBSan over the DSP sources (C versions), at an odd arena alignment."""
    model = conv_model(rng, kind, **geo)
    with kernel_isa(ARMV7EM):
        assert_bit_exact(model, rng, n=2, sanitize=True, tmp_path=tmp_path, align=1)
    assert all(f.startswith("tm_dsp_") for f in kernels_of(model))


def test_fc_pool_add_sanitized(rng, tmp_path):
    with kernel_isa(ARMV7EM):
        assert_bit_exact(fc_model(rng, 2, 37, 11, act="RELU"), rng, n=2, sanitize=True, tmp_path=tmp_path / "fc")
        model = pool_model(rng, "MAX_POOL_2D", (1, 7, 6, 8), (3, 2), (2, 1), "SAME", act="RELU6")
        assert_bit_exact(model, rng, n=2, sanitize=True, tmp_path=tmp_path / "pool", align=1)
        model = binary_model(rng, "ADD", [1, 3, 1, 5], [1, 1, 4, 5], act="RELU")
        assert_bit_exact(model, rng, n=2, sanitize=True, tmp_path=tmp_path / "add", align=1)


@pytest.mark.parametrize("kind,geo", [
    ("CONV_2D", dict(in_hwc=(7, 6, 4), k_hw=(1, 1), out_c=12)),  # 1x1 expansion over pixels already read
    ("CONV_2D", dict(in_hwc=(5, 5, 24), k_hw=(1, 1), out_c=8)),  # reduction, odd pixel count
    ("CONV_2D", dict(in_hwc=(5, 7, 3), k_hw=(3, 3), out_c=5)),  # staged windows, pairs across rows
    ("CONV_2D", dict(in_hwc=(6, 5, 8), k_hw=(3, 3), out_c=6)),  # whole-quad taps
    ("DEPTHWISE_CONV_2D", dict(in_hwc=(6, 7, 24), k_hw=(3, 3), out_c=24)),  # four channels a pass
    ("DEPTHWISE_CONV_2D", dict(in_hwc=(9, 9, 16), k_hw=(3, 3), out_c=16, stride=(2, 2))),
])
def test_overlap_exact_margin(kind, geo, rng, tmp_path):
    """Output placed exactly at the DSP kernel's overlap rule (the rule ops report for it)."""
    model = conv_model(rng, kind, **geo)
    assert all(f.startswith("tm_dsp_") for f in kernels_of(model))
    with kernel_isa(ARMV7EM):
        assert assert_bit_exact_at_margin(model, rng, n=8, tmp_path=tmp_path) == 1


def big_scale_conv(rng, kind):
    """A conv whose output scale is so small that the multiplier's shift is >= 0."""
    m = ModelBuilder()
    x = m.act([1, 5, 5, 8], 0.5, 3)
    w_shape = [1, 3, 3, 8] if kind == "DEPTHWISE_CONV_2D" else [4, 3, 3, 8]
    out_c = w_shape[3] if kind == "DEPTHWISE_CONV_2D" else 4
    f = m.tensor(w_shape, "int8", np.full(out_c, 0.05), np.zeros(out_c, int), rand_int8(rng, w_shape),
                 axis=3 if kind == "DEPTHWISE_CONV_2D" else 0)
    b = m.tensor([out_c], "int32", np.full(out_c, 0.025), np.zeros(out_c, int), np.zeros(out_c, np.int32))
    y = m.act([1, 5, 5, out_c], 0.01, 0)
    name = "DepthwiseConv2DOptions" if kind == "DEPTHWISE_CONV_2D" else "Conv2DOptions"
    extra = {"depthMultiplier": 1} if kind == "DEPTHWISE_CONV_2D" else {}
    m.op(kind, [x, f, b], [y], options(name, padding=PADDING["SAME"], strideH=1, strideW=1, **extra))
    return m.build([x], [y])


@pytest.mark.parametrize("name,model", [
    ("grouped conv", lambda rng: conv_model(rng, "CONV_2D", (5, 5, 8), (3, 3), 6, groups=2)),
    ("depthwise, channels not a multiple of 4", lambda rng: conv_model(rng, "DEPTHWISE_CONV_2D", (5, 5, 6), (3, 3), 6)),
    ("depthwise multiplier 2", lambda rng: conv_model(rng, "DEPTHWISE_CONV_2D", (5, 5, 4), (3, 3), 8)),
    ("depthwise 5x5", lambda rng: conv_model(rng, "DEPTHWISE_CONV_2D", (6, 6, 8), (5, 5), 8)),
    ("depthwise dilated", lambda rng: conv_model(rng, "DEPTHWISE_CONV_2D", (7, 7, 8), (3, 3), 8, dil=(2, 2))),
    ("large window, 3 channels", lambda rng: conv_model(rng, "CONV_2D", (9, 9, 3), (5, 5), 4)),
    ("conv, shift >= 0", lambda rng: big_scale_conv(rng, "CONV_2D")),
    ("depthwise, shift >= 0", lambda rng: big_scale_conv(rng, "DEPTHWISE_CONV_2D")),
    ("max pool, 6 channels", lambda rng: pool_model(rng, "MAX_POOL_2D", (1, 6, 6, 6), (2, 2), (2, 2), "VALID")),
])
def test_outside_the_dsp_conditions_the_portable_kernel_runs(name, model, rng, tmp_path):
    assert_dsp_exact(model(rng), rng, tmp_path, None)


def test_kernel_set_follows_the_board_core():
    assert [core_isa(c) for c in ("cortex-m4", "cortex-m7", "cortex-m3", "cortex-m0plus", "host")] == \
        [ARMV7EM, ARMV7EM, PORTABLE, PORTABLE, PORTABLE]


@pytest.mark.parametrize("name", ["mobilenetv2_035_96", "mobilenetv2_050_144", "dscnn_kws", "digits_cnn",
                                  "mcunet_like"])
def test_dsp_plan_is_no_larger(name):
    """The DSP kernels' scratch and overlap rules never cost arena over the portable plan."""
    g = parse_tflite((MODELS / f"{name}.tflite").read_bytes(), name)
    dsp, portable = make_plan(g, isa=ARMV7EM), make_plan(g, isa=PORTABLE)
    assert dsp.isa == ARMV7EM and portable.isa == PORTABLE
    assert dsp.peak_sram_bytes <= portable.peak_sram_bytes


@pytest.mark.skipif(not shutil.which("arm-none-eabi-gcc"), reason="arm-none-eabi-gcc missing")
@pytest.mark.parametrize("cpu", ["cortex-m4", "cortex-m7", "cortex-m3", "cortex-m0plus"])
def test_sources_build_for_every_core(cpu, tmp_path):
    """-Wall -Wextra -Werror: DSP instructions on M4/M7, their C versions on M3/M0+."""
    fpu = {"cortex-m4": ["-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"],
           "cortex-m7": ["-mfpu=fpv5-sp-d16", "-mfloat-abi=hard"]}
    for src in sorted(DSP_DIR.glob("*.c")):
        cmd = ["arm-none-eabi-gcc", f"-mcpu={cpu}", "-mthumb", *fpu.get(cpu, []), *WARN_FLAGS, "-O2",
               "-I", str(PORTABLE_DIR), "-c", str(src), "-o", str(tmp_path / (src.stem + ".o"))]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


# ---- the emulated Cortex-M4: the instructions themselves --------------------------------------

needs_board = pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                                 reason="arm-none-eabi-gcc or qemu-system-arm missing")


def add_conv(m, rng, x, shape, scale, kind, k, out_c, stride, padding="SAME", act="RELU6"):
    """Append a conv to a ModelBuilder network; returns (output tensor, its shape, its scale)."""
    n, h, w, c = shape
    oh = -(-h // stride) if padding == "SAME" else (h - k) // stride + 1
    ow = -(-w // stride) if padding == "SAME" else (w - k) // stride + 1
    dw = kind == "DEPTHWISE_CONV_2D"
    f_shape = [1, k, k, out_c] if dw else [out_c, k, k, c]
    w_scale = np.array([rand_scale(rng, 2e-3, 2e-2) for _ in range(out_c)])
    f = m.tensor(f_shape, "int8", w_scale, np.zeros(out_c, int), rand_int8(rng, f_shape), axis=3 if dw else 0)
    b = m.tensor([out_c], "int32", w_scale * scale, np.zeros(out_c, int),
                 rng.integers(-3000, 3000, out_c).astype(np.int32))
    taps = k * k * (1 if dw else c)
    out_scale = scale * float(w_scale.mean()) * 74 * 74 * np.sqrt(taps) / 50
    y = m.act([n, oh, ow, out_c], out_scale, int(rng.integers(-128, 0)))
    common = dict(padding=PADDING[padding], strideH=stride, strideW=stride, fusedActivationFunction=ACT[act])
    opts = options("DepthwiseConv2DOptions", depthMultiplier=1, **common) if dw else options("Conv2DOptions", **common)
    m.op(kind, [x, f, b], [y], opts)
    return y, [n, oh, ow, out_c], out_scale


def dsp_network(rng, size=(13, 11)) -> bytes:
    """Every DSP kernel once, with borders, odd pixel counts and clamps: staged first layer,
    1x1 expansion, depthwise stride 1 (and a residual ADD around it) and 2, whole-quad 3x3 conv,
    max pool, fully connected."""
    m = ModelBuilder()
    shape, scale = [1, *size, 3], 0.02
    x0 = x = m.act(shape, scale, -5)
    for kind, k, out_c, stride, act in [("CONV_2D", 3, 8, 2, "RELU6"), ("CONV_2D", 1, 20, 1, "NONE"),
                                        ("DEPTHWISE_CONV_2D", 3, 20, 1, "RELU"),
                                        ("DEPTHWISE_CONV_2D", 3, 20, 2, "RELU6"), ("CONV_2D", 3, 12, 1, "NONE")]:
        before, before_scale = x, scale
        x, shape, scale = add_conv(m, rng, x, shape, scale, kind, k, out_c, stride, act=act)
        if kind == "DEPTHWISE_CONV_2D" and stride == 1:
            total = m.act(shape, scale + before_scale, int(rng.integers(-20, 20)))
            m.op("ADD", [x, before], [total], options("AddOptions", fusedActivationFunction=ACT["RELU6"]))
            x, scale = total, scale + before_scale
    pooled = m.act([1, shape[1] // 2, shape[2] // 2, shape[3]], scale, m.tensors[x].quantization.zeroPoint[0])
    m.op("MAX_POOL_2D", [x], [pooled], options("Pool2DOptions", padding=PADDING["VALID"], strideH=2, strideW=2,
                                                filterHeight=2, filterWidth=2))
    flat = shape[1] // 2 * (shape[2] // 2) * shape[3]
    reshaped = m.act([1, flat], scale, m.tensors[x].quantization.zeroPoint[0])
    m.op("RESHAPE", [pooled, m.tensor([2], "int32", data=np.array([1, flat]))], [reshaped])
    w = m.tensor([10, flat], "int8", 0.01, 0, rand_int8(rng, (10, flat)))
    bias = m.tensor([10], "int32", 0.01 * scale, 0, rng.integers(-500, 500, 10).astype(np.int32))
    y = m.act([1, 10], 0.1, 3)
    m.op("FULLY_CONNECTED", [reshaped, w, bias], [y], options("FullyConnectedOptions"))
    return m.build([x0], [y])


@needs_board
def test_every_dsp_kernel_on_the_m4(rng, tmp_path):
    from tinymem.build.boards import load_board
    from tinymem.link.run import run_on_board

    model = dsp_network(rng)
    fns = kernels_of(model)
    assert {"tm_dsp_conv_s8", "tm_dsp_conv_1x1_s8", "tm_dsp_depthwise_3x3_s8", "tm_dsp_max_pool_s8",
            "tm_dsp_fully_connected_s8", "tm_dsp_add_s8"} <= set(fns), fns
    g = parse_tflite(model, "dsp network")
    x = random_inputs(g, rng, 3)
    run = run_on_board(g, make_plan(g, isa=ARMV7EM), load_board("mps2_an386"), x, project_dir=tmp_path / "proj")
    np.testing.assert_array_equal(run.outputs[0], litert_run(model, x)[0])


def tflm_peer(name: str) -> dict:
    """TFLM's measured figures for a zoo model, as benchmarks/bench_kernels.py reads them."""
    spec = importlib.util.spec_from_file_location("bench_kernels", ROOT / "benchmarks" / "bench_kernels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.tflm_peer(name)


@needs_board
@pytest.mark.parametrize("name", ["digits_cnn", "dscnn_kws", "mobilenetv2_035_96", "mobilenetv2_050_144"])
def test_issue_models_on_the_m4(name, tmp_path):
    """Issue #8 on mps2_an386: bit-exact, and at most 0.7x TFLM + CMSIS-NN's instructions."""
    from tinymem.build.boards import load_board
    from tinymem.link.run import run_on_board

    model = (MODELS / f"{name}.tflite").read_bytes()
    g = parse_tflite(model, name)
    x = np.load(MODELS / f"{name}.inputs.npy")[:1]
    plan = make_plan(g, isa=ARMV7EM)
    assert plan.peak_sram_bytes <= make_plan(g, isa=PORTABLE).peak_sram_bytes
    run = run_on_board(g, plan, load_board("mps2_an386"), [x], project_dir=tmp_path / "proj", profile=False)
    np.testing.assert_array_equal(run.outputs[0], litert_run(model, [x])[0])
    cmsis = tflm_peer(name)["cmsis_nn"]["instructions"]
    assert run.profile["total_instructions"] <= 0.7 * cmsis, (run.profile["total_instructions"], cmsis)


def test_patch_schedule_with_dsp_kernels(tmp_path):
    """Patch-based inference sets geo.* of the DSP kernels' parameters per patch (pads of any
    sign, windows smaller than the tensor): still bit-exact, under ASan/UBSan."""
    from tinymem.plan.patch_search import parse_patch, search

    rng = np.random.default_rng(8)
    model = dsp_network(rng, size=(30, 26))
    g = parse_tflite(model, "patched")
    with kernel_isa(ARMV7EM):
        choice = search(g, parse_patch("auto"), max_overhead=1.0)
    assert choice.plan.isa == ARMV7EM and choice.schedule is not None
    inputs = random_inputs(g, rng, 2)
    ours = build_host(g, choice.plan, tmp_path, sanitize=True).run(inputs)
    np.testing.assert_array_equal(ours[0], litert_run(model, inputs)[0])
