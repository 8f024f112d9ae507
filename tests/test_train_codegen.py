"""The generated training firmware (tinymem/train/codegen.py) against the numpy reference,
step by step, per docs/training.md section 5; and its forward against LiteRT BUILTIN_REF.

Each step is compared from the same starting state: the reference adopts the C's state (int8,
int32 and float32 masters, dumped by the probe driver) before it takes the step, so a ±1 at a .5
boundary is counted where it happens instead of spreading through later steps."""
import subprocess
from pathlib import Path

import numpy as np
import pytest

from trainmodels import Chain, all_tensors, class_samples, state_differences
from tinymem.model.tflite import parse_tflite
from tinymem.train.codegen import build_host_training
from tinymem.train.host import control, parse_status
from tinymem.train.memory import plan_training
from tinymem.sim.host import WARN_FLAGS, host_cc
from tinymem.train.reference import Trainer
from tinymem.train.scheme import Scheme

MODELS = Path(__file__).resolve().parent.parent / "models"


def block_model(rng) -> bytes:
    """An inverted-residual block: conv s2 (op 0) -> depthwise (1) -> 1x1 conv (2) -> ADD with
    op 0's output (3) -> MEAN (4) -> FC logits (5) -> SOFTMAX."""
    c = Chain(rng, [1, 10, 10, 3])
    c.conv(8, 3, stride=2, act="RELU6")
    c.conv(8, 3, depthwise=True, act="RELU6")
    c.conv(8, 1)
    c.add(back=2)
    c.mean()
    c.fc(5, logit_std=2.0)
    return c.build()


def pool_model(rng) -> bytes:
    """conv (op 0) -> MAX_POOL (1) -> PAD (2) -> conv (3) -> AVERAGE_POOL (4) -> RESHAPE (5) -> FC (6)."""
    c = Chain(rng, [1, 9, 9, 2])
    c.conv(6, 3, act="RELU")
    c.pool("MAX_POOL_2D", k=2, stride=2, padding="SAME")
    c.pad([[0, 0], [1, 0], [0, 1], [0, 0]])
    c.conv(8, 3, padding="VALID", groups=2)
    c.pool("AVERAGE_POOL_2D", k=2, stride=1)
    c.flatten()
    c.fc(4, logit_std=2.0)
    return c.build()


CASES = {
    "biases_only": (block_model, {"bias_ops": [0, 1, 2, 5]}),
    "weights_quarter": (block_model, {"bias_ops": [2, 5], "weight_ratios": {"0": 0.25, "1": 0.25, "2": 0.25, "5": 0.25}}),
    "weights_all_no_qas": (block_model, {"bias_ops": [0, 1, 2, 5], "weight_ratios": {"0": 1, "1": 1, "2": 1, "5": 1},
                                         "qas": False, "lr": 2e6}),
    "maxpool_frozen_prefix": (pool_model, {"bias_ops": [3], "weight_ratios": {"3": 1.0, "6": 0.25}}),
    "through_maxpool": (pool_model, {"bias_ops": [0, 6], "weight_ratios": {"0": 1.0, "6": 1.0}}),
}


def build_case(tmp_path, rng, case, sanitize=False):
    make, scheme = CASES[case]
    model = make(rng)
    g = parse_tflite(model, case)
    scheme = Scheme.from_dict({"lr": 0.05, **scheme})
    plan = plan_training(g, scheme)
    host = build_host_training(g, plan, tmp_path / "probe", sanitize=sanitize, probe=True)
    return model, g, scheme, host


def check_steps(host, tr: Trainer, xs, ys, lr: float) -> tuple[int, int]:
    """Train on xs in the C build; redo each step in the reference from the C's state before it.
    Returns (parameters off by one at a .5 boundary, parameters compared)."""
    out = host.steps(xs, ys, "train", lr)
    assert not out.status.any()
    states = host.states()
    flips = compared = 0
    for k, (x, y) in enumerate(zip(xs, ys)):
        if k:
            tr.load_state(states[k - 1])
        np.testing.assert_array_equal(out.logits[k].reshape(-1), tr.logits(x).reshape(-1), err_msg=f"logits, step {k}")
        loss, pred = tr.step(x, y, lr)
        assert abs(out.loss[k] - loss) <= 1e-4 * max(1.0, abs(loss)), f"step {k}: loss {out.loss[k]} vs {loss}"
        assert out.pred[k] == pred
        flips += state_differences(states[k], tr.state(), tr.tg.layers)
        compared += sum(s.n_w * (tr.weights[i].size // s.channels) + s.channels for i, s in tr.tg.layers.items())
    return flips, compared


@pytest.mark.parametrize("case", list(CASES))
def test_training_steps_agree_with_reference(tmp_path, rng, case):
    model, g, scheme, host = build_case(tmp_path, rng, case)
    shape = g.t(g.inputs[0]).shape
    n_classes = g.t(host.plan.path.logits.outputs[0]).size
    xs, ys = class_samples(rng, shape, n_classes, 32)
    order = rng.permutation(len(xs))
    xs, ys = xs[order], ys[order]

    # The forward with the model's parameters is LiteRT's (mode 0 changes nothing).
    first = host.steps(xs[:3], ys[:3], "eval")
    logits_t = host.plan.path.logits.outputs[0]
    for x, got in zip(xs[:3], first.logits):
        np.testing.assert_array_equal(got.reshape(-1), all_tensors(model, x).get_tensor(logits_t).reshape(-1))

    tr = Trainer(g, scheme)
    flips, compared = check_steps(host, tr, xs, ys, scheme.lr)
    assert flips <= max(2, compared // 2000), f"{flips} of {compared} parameter updates off by one"
    # The steps were real: int8 weights and int32 biases moved.
    last, first = host.states()[-1], Trainer(g, scheme).params()
    moved = {key: sum(int(np.sum(last[i][key] != first[i][key])) for i in tr.tg.layers) for key in ("weights", "bias")}
    assert moved["bias"] > 0 and (moved["weights"] > 0 or not scheme.weight_ratios), moved
    print(f"{case}: {flips} of {compared} parameter updates off by one at a .5 boundary; moved {moved}")


def test_training_reduces_loss_in_c(tmp_path, rng):
    """Five epochs in one firmware run (the state lives in its SRAM), then an evaluation pass."""
    _, g, scheme, host = build_case(tmp_path, rng, "weights_quarter")
    xs, ys = class_samples(rng, g.t(g.inputs[0]).shape, 5, 20)
    before = host.steps(xs, ys, "eval").loss.mean()
    ctl = [control("train", int(y), 0.2) for y in np.tile(ys, 5)] + [control("eval", int(y)) for y in ys]
    _, status = host.run([np.concatenate([xs] * 6), np.stack(ctl)])
    after = parse_status(status)[0][-len(xs):].mean()
    assert after < 0.7 * before, (before, after)


def test_sanitized_build_agrees(tmp_path, rng):
    _, g, scheme, host = build_case(tmp_path, rng, "weights_quarter", sanitize=True)
    xs, ys = class_samples(rng, g.t(g.inputs[0]).shape, 5, 6)
    flips, compared = check_steps(host, Trainer(g, scheme), xs, ys, scheme.lr)
    assert flips <= 2


def test_host_main_modes_and_errors(tmp_path, rng):
    """The stock host driver serves the training firmware: train, reset, bad label, bad mode."""
    model, g, scheme, probe = build_case(tmp_path, rng, "through_maxpool")
    host = build_host_training(g, probe.plan, tmp_path / "host")
    xs, ys = class_samples(rng, g.t(g.inputs[0]).shape, 4, 8)
    n = len(xs)
    y0 = int(ys[0])
    ctl = np.stack([control("eval", y0)] + [control("train", int(y), 0.05) for y in ys] +
                   [control("eval", y0), control("reset", y0), control("eval", 200), control(7, y0)])
    samples = np.concatenate([xs[:1], xs] + [xs[:1]] * 4)
    logits, status = host.run([samples, ctl])
    # Byte for byte what the probe driver gets from the same firmware.
    for a, b in zip((logits, status), probe.run([samples, ctl])):
        np.testing.assert_array_equal(a, b)
    loss, pred, flags = parse_status(status)
    assert list(flags) == [0] * (n + 3) + [2, 1]
    assert not np.array_equal(logits[n + 1], logits[0]), "training changed nothing"
    np.testing.assert_array_equal(logits[n + 2], logits[0])  # reset: the model's parameters again
    assert loss[n + 2] == loss[0] and loss[n + 3] == 0  # label 200 of 4 classes: no loss
    np.testing.assert_array_equal(logits[n + 4], logits[0])  # unknown mode: evaluated only
    assert list(pred) == [int(np.argmax(v)) for v in logits.reshape(len(logits), -1)]


ZOO_SCHEMES = {
    # frozen convs and max pool in C before the path; a 512-input FC with a quarter of its channels
    "digits_cnn": {"bias_ops": [4, 5], "weight_ratios": {"4": 0.25, "5": 1.0}},
    # the last inverted residual block: conv, ADD, conv, depthwise, conv, MEAN, FC
    "mcunet_like": {"bias_ops": [40, 42, 43, 44, 46], "weight_ratios": {"43": 0.25, "44": 0.25, "46": 0.5}, "lr": 0.01},
    "dscnn_kws": {"bias_ops": [8, 10], "weight_ratios": {"7": 0.125, "10": 1.0}, "lr": 0.01},  # + AVERAGE_POOL
}


@pytest.mark.parametrize("name", list(ZOO_SCHEMES))
def test_zoo_models_train_like_the_reference(tmp_path, rng, name):
    model = (MODELS / f"{name}.tflite").read_bytes()
    g = parse_tflite(model, name)
    scheme = Scheme.from_dict(ZOO_SCHEMES[name])
    host = build_host_training(g, plan_training(g, scheme), tmp_path, probe=True)
    xs = np.load(MODELS / f"{name}.inputs.npy")
    xs = np.concatenate([xs, rng.integers(-128, 128, xs.shape).astype(np.int8)])
    logits_t = host.plan.path.logits.outputs[0]
    for x, got in zip(xs[:2], host.steps(xs[:2], 0, "eval").logits):
        np.testing.assert_array_equal(got.reshape(-1), all_tensors(model, x).get_tensor(logits_t).reshape(-1))
    ys = rng.integers(0, g.t(logits_t).size, len(xs))
    flips, compared = check_steps(host, Trainer(g, scheme), xs, ys, scheme.lr)
    assert flips <= max(2, compared // 2000), f"{flips} of {compared}"


def test_sram_is_what_the_plan_counts(tmp_path, rng):
    """Every byte of RAM the generated firmware declares (.bss symbols of its object file: it has
    no initialised RAM; its const structs hold pointers, which a PIE host build puts in
    .data.rel.ro, a board build in flash) is the plan's arena + static parameters, plus the I/O
    buffers and one flag."""
    _, g, scheme, host = build_case(tmp_path, rng, "weights_quarter")
    obj = tmp_path / "model.o"
    subprocess.run([host_cc(), *WARN_FLAGS, "-O2", "-c", "-I", str(host.workdir), str(host.workdir / "tinymem_model.c"),
                    "-o", str(obj)], check=True)
    nm = subprocess.run(["nm", "-S", str(obj)], capture_output=True, text=True, check=True).stdout
    ram = sum(int(size, 16) for _, size, kind, _ in (line.split() for line in nm.splitlines() if len(line.split()) == 4)
              if kind in "bB")
    logits = g.t(host.plan.path.logits.outputs[0]).nbytes
    assert host.plan.static_bytes > 0
    assert ram == host.plan.arena_bytes + host.plan.static_bytes + 8 + 8 + logits + 4  # control, status, flag
