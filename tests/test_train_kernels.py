"""The training kernels (firmware/kernels/train) against the numpy reference, on random shapes.

tests/c/train_kernels.c runs one kernel per record with the parameters codegen computes
(tinymem/train/codegen.py); the expected values come from tinymem/train/reference.py. Built with
-Wall -Wextra -Werror, once optimised and once under ASan/UBSan."""
import struct
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from trainmodels import Chain, state_differences
from tinymem.model.tflite import parse_tflite
from tinymem.train.forward import layer_params
from tinymem.train.codegen import backward_ints, update_layout, weight_scales
from tinymem.train.reference import Grads, Trainer, View, op_backward, softmax_loss
from tinymem.train.scheme import Scheme
from tinymem.sim.host import SANITIZE_FLAGS, WARN_FLAGS, host_cc

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "firmware" / "kernels"
LOSS, MASK, COPY, CONV, DEPTHWISE, FC, AVG_POOL, MAX_POOL, MEAN, PAD = range(10)
F32 = np.float32


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    out = tmp_path_factory.mktemp("train_kernels")
    exes = {}
    for name, flags in (("opt", ["-O2"]), ("san", SANITIZE_FLAGS)):
        exe = out / name
        cmd = [host_cc(), *WARN_FLAGS, *flags, "-I", str(KERNELS / "train"), "-I", str(KERNELS / "portable"),
               str(ROOT / "tests" / "c" / "train_kernels.c"), *map(str, sorted((KERNELS / "train").glob("*.c"))),
               "-o", str(exe), "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        exes[name] = exe
    return exes


def ints(*values) -> bytes:
    return struct.pack(f"<{len(values)}i", *[int(v) for v in values])


def floats(*values) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def arr(a, dtype) -> bytes:
    a = np.ascontiguousarray(np.asarray(a if a is not None else [], dtype)).reshape(-1)
    return ints(a.size) + a.tobytes()


def run(exe, records: list[bytes], layout: list[list]) -> list[list[np.ndarray]]:
    """Send the records; layout[r] lists the dtypes of record r's output arrays."""
    proc = subprocess.run([str(exe)], input=b"".join(records), capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    raw, at, out = proc.stdout, 0, []
    for dtypes in layout:
        got = []
        for dt in dtypes:
            n = struct.unpack_from("<i", raw, at)[0]
            size = np.dtype(dt).itemsize * n
            got.append(np.frombuffer(raw, dt, n, at + 4).copy())
            at += 4 + size
        out.append(got)
    assert at == len(raw)
    return out


def random_grad(rng, shape, zeros=0.3) -> np.ndarray:
    g = rng.standard_normal(shape).astype(F32)
    g[rng.random(shape) < zeros] = 0  # masked entries: the kernels skip them
    return g


# --- layers: input gradient, then the update ------------------------------------------------------


def layer_case(rng, case: int):
    """A one-op model (conv with groups/stride/dilation, depthwise with multiplier, FC over several
    rows) and a random scheme for it."""
    kind = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")[case % 3]
    h, w = int(rng.integers(3, 8)), int(rng.integers(3, 8))
    if kind == "FULLY_CONNECTED":
        c = Chain(rng, [1, int(rng.integers(1, 4)), int(rng.integers(2, 12))] if case % 2 else [1, int(rng.integers(2, 40))])
        c.fc(int(rng.integers(2, 9)), act=["NONE", "RELU"][case % 2], per_channel=case % 4 == 1)
    elif kind == "CONV_2D":
        groups = [1, 2, 1, 3][case % 4]
        c = Chain(rng, [1 + (case == 3), h, w, groups * int(rng.integers(1, 4))])
        c.conv(groups * int(rng.integers(1, 5)), (int(rng.integers(1, 4)), int(rng.integers(1, 4))),
               stride=int(rng.integers(1, 3)), padding=["SAME", "VALID"][case % 2], groups=groups,
               dil=1 + (case % 5 == 2), bias=case % 7 != 4)
    else:
        ch = int(rng.integers(1, 6))
        c = Chain(rng, [1, h + 2, w + 2, ch])
        c.conv(ch * int(rng.integers(1, 4)), 3, stride=int(rng.integers(1, 3)), padding=["SAME", "VALID"][case % 2],
               dil=1 + (case % 4 == 1), depthwise=True)
    g = parse_tflite(c.build(softmax=False))
    ratio = [0.0, 0.25, 0.5, 1.0][case % 4]
    return g, Scheme(bias_ops=[0] if ratio == 0 or case % 3 else [], weight_ratios={0: ratio}, qas=case % 5 != 3)


def layer_record(g, tr: Trainer, x, gy, grad_in, accumulate: int, lr: float) -> bytes:
    op = g.ops[0]
    spec = tr.tg.layers[0]
    lay = update_layout(g, spec)
    b = backward_ints(g, op)
    s_x = g.t(op.inputs[0]).quant.scalar()[0]
    if op.kind == "FULLY_CONNECTED":
        head = ints(FC, b["batches"], b["in_features"], b["out_features"], b["input_zp"], accumulate, 1)
    else:
        geo = b["geo"]
        head = ints(CONV if op.kind == "CONV_2D" else DEPTHWISE, *vars(geo).values(), b["groups"], b["depth_mult"],
                    b["input_zp"], accumulate, 1)
    update = ints(1, *lay.ints.values()) + arr(lay.folded0, np.int32) + arr(lay.bias0, np.int32) + \
        arr(spec.coef_w, F32) + arr(spec.coef_b if spec.bias else None, F32)
    return head + floats(s_x, lr) + arr(lay.weights0, np.int8) + arr(weight_scales(g, op), F32) + \
        arr(gy, F32) + arr(grad_in, F32) + arr(x, np.int8) + update


def c_layer_state(g, spec, lay, out) -> dict:
    """The C's SRAM state as Trainer.state() has it (model layouts, bias = folded + zp * sum)."""
    from tinymem.train.host import probe_state

    names = ["weights", "folded", "w_master", "b_master"]
    return probe_state(g, {0: spec}, {0: {k: v for k, v in zip(names, out) if v.size}})[0]


@pytest.mark.parametrize("sanitize", [False, True], ids=["O2", "asan"])
def test_layer_kernels(harness, rng, sanitize):
    cases = range(3) if sanitize else range(24)
    records, expected, layout = [], [], []
    for case in cases:
        g, scheme = layer_case(rng, case)
        tr = Trainer(g, scheme)
        op, spec = g.ops[0], tr.tg.layers[0]
        x = rng.integers(-128, 128, g.t(op.inputs[0]).shape).astype(np.int8)
        gy = random_grad(rng, g.t(op.outputs[0]).shape)
        grad_in = random_grad(rng, g.t(op.inputs[0]).shape, zeros=0)
        accumulate = case % 2
        lr = float(rng.uniform(0.01, 0.2))
        records.append(layer_record(g, tr, x, gy, grad_in, accumulate, lr))
        gx, gw, gb = op_backward(View(tr.tg, {op.inputs[0]: x}, tr.weights), op, gy, True, spec.n_w)
        tr.apply(Grads(0.0, None, {}, {0: gw} if spec.n_w else {}, {0: gb}), lr)
        expected.append((g, spec, update_layout(g, spec), gx + grad_in if accumulate else gx, tr.state()))
        layout.append([F32, np.int8, np.int32, F32, F32])
    flips = total = changed = 0
    for (g, spec, lay, gx, state), out in zip(expected, run(harness["san" if sanitize else "opt"], records, layout)):
        np.testing.assert_allclose(out[0].reshape(gx.shape), gx, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(gx).max()))
        ours = c_layer_state(g, spec, lay, out[1:])
        flips += state_differences({0: ours}, state, {0: spec})
        total += spec.n_w * lay.taps + spec.channels
        changed += int(np.sum(ours["weights"] != layer_params(g, spec.op)[0])) + int(np.sum(ours["bias"] != lay.bias0))
    assert flips <= max(1, total // 1000), f"{flips} of {total} parameters off by one at a .5 boundary"
    assert changed > total // 10, "the updates barely changed anything: the test would not see a wrong one"


# --- ops without parameters ----------------------------------------------------------------------


def shape_case(rng, case: int):
    kind = ("AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN", "PAD")[case % 4]
    c = Chain(rng, [1 + (case == 5), int(rng.integers(2, 9)), int(rng.integers(2, 9)), int(rng.integers(1, 6))])
    if kind == "MEAN":
        c.mean()
    elif kind == "PAD":
        c.pad([[0, 0], [int(rng.integers(0, 3)), int(rng.integers(0, 3))], [int(rng.integers(0, 3)), 1],
               [0, int(rng.integers(0, 2))]])
    else:
        k = int(rng.integers(1, 4))
        c.pool(kind, k=k, stride=int(rng.integers(1, 3)), padding=["SAME", "VALID"][case % 2])
    return parse_tflite(c.build(softmax=False))


def shape_record(g, x, gy, grad_in, accumulate) -> bytes:
    op = g.ops[0]
    b = backward_ints(g, op)
    if op.kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        p = b["pool"]
        names = ("batches", "in_h", "in_w", "channels", "out_h", "out_w", "filter_h", "filter_w", "stride_h",
                 "stride_w", "pad_h", "pad_w", "act_min", "act_max")
        head = ints(AVG_POOL if op.kind == "AVERAGE_POOL_2D" else MAX_POOL, *(p[n] for n in names), accumulate)
    elif op.kind == "MEAN":
        def box(pairs):
            shape, stride = [n for n, _ in pairs], [s for _, s in pairs]
            return ints(len(pairs), *(shape + [0] * (6 - len(shape))), *(stride + [0] * (6 - len(stride))))
        head = ints(MEAN) + box(b["out"]) + box(b["red"]) + ints(b["in_size"], accumulate) + floats(b["count"])
    else:
        pad6 = [v + [0] * (6 - len(v)) for v in (b["in_shape"], b["before"], b["after"])]
        head = ints(PAD, b["dims"], *pad6[0], *pad6[1], *pad6[2], b["pad_value"], accumulate)
    return head + arr(x, np.int8) + arr(gy, F32) + arr(grad_in, F32)


@pytest.mark.parametrize("sanitize", [False, True], ids=["O2", "asan"])
def test_shape_kernels(harness, rng, sanitize):
    records, expected = [], []
    for case in range(4 if sanitize else 24):
        g = shape_case(rng, case)
        op = g.ops[0]
        x = rng.integers(-128, 128, g.t(op.inputs[0]).shape).astype(np.int8)
        x[..., 0] = x.reshape(-1)[0]  # ties: max pool takes the first
        gy = random_grad(rng, g.t(op.outputs[0]).shape, zeros=0.1)
        grad_in = random_grad(rng, x.shape, zeros=0)
        accumulate = case % 3 == 1
        gx = op_backward(View(SimpleNamespace(g=g), {op.inputs[0]: x}, {}), op, gy, True, 0)[0]
        records.append(shape_record(g, x, gy, grad_in, accumulate))
        expected.append(gx + grad_in if accumulate else gx)
    outs = run(harness["san" if sanitize else "opt"], records, [[F32]] * len(records))
    for k, (gx, out) in enumerate(zip(expected, outs)):
        np.testing.assert_allclose(out[0].reshape(gx.shape), gx, rtol=1e-6, atol=1e-7, err_msg=f"case {k}")


# --- loss, mask, copy --------------------------------------------------------------------------------


def test_loss_mask_copy(harness, rng):
    records, expected, layout = [], [], []
    for case in range(20):
        n = int(rng.integers(2, 40))
        logits = rng.integers(-128, 128, n).astype(np.int8)
        if case % 4 == 0:
            logits[n // 2] = logits.max()  # a tie: the first largest is the prediction
        scale, zp, label = float(rng.uniform(0.01, 0.5)), int(rng.integers(-50, 50)), int(rng.integers(0, n))
        records.append(ints(LOSS, n) + floats(scale) + ints(zp, label) + arr(logits, np.int8))
        z = F32(scale) * (logits.astype(np.int32) - zp).astype(F32)
        loss, _, grad = softmax_loss(z, label)
        expected.append(("loss", grad, loss, int(np.argmax(logits))))
        layout.append([F32, F32, np.int32])
        out = rng.integers(-128, 128, n).astype(np.int8)
        lo, hi = sorted(rng.integers(-128, 128, 2))
        g = random_grad(rng, n, zeros=0)
        records.append(ints(MASK, n, lo, hi) + arr(out, np.int8) + arr(g, F32))
        expected.append(("mask", np.where((out > lo) & (out < hi), g, F32(0))))
        layout.append([F32])
        dst = random_grad(rng, n, zeros=0)
        records.append(ints(COPY, n, case % 2) + arr(g, F32) + arr(dst, F32))
        expected.append(("copy", dst + g if case % 2 else g))
        layout.append([F32])
    for want, got in zip(expected, run(harness["opt"], records, layout)):
        if want[0] == "loss":
            np.testing.assert_allclose(got[0], want[1], rtol=1e-5, atol=1e-6)
            assert abs(got[1][0] - want[2]) <= 1e-5 * max(1.0, abs(want[2]))
            assert got[2][0] == want[3]
        else:
            np.testing.assert_array_equal(got[0], want[1])
