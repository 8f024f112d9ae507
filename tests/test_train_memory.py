"""The training memory model (tinymem/train/memory.py, docs/training.md "Memory model").

Validity is decided by an independent byte painter: every buffer paints its bytes at its birth
step, and at every step each live buffer must still own all of its bytes (an in-place output may
only take an input's bytes at the op the input dies, by the kernel's margin). Per-op byte counts are
worked out by hand on a tiny model built here from the flatbuffer schema.
"""
import numpy as np
import pytest

from modelgen import ACT, PADDING, ModelBuilder, options, rand_int8
from tinymem.errors import TinymemError
from tinymem.model.tflite import load_tflite, parse_tflite
from tinymem.plan import make_plan
from tinymem.plan.lifetimes import compute_lifetimes
from tinymem.train.memory import (
    backward_scratch_bytes, full_backprop_scheme, full_backprop_sram_bytes, param_sram_bytes, plan_training,
    updatable_ops,
)
from tinymem.train.scheme import RATIOS, Scheme, trainable_ops

# ----------------------------------------------------------------------------------------------
# the tiny model


def _conv(m, rng, x, s_in, f_shape, out_shape, kind, act, axis):
    out_c = f_shape[axis]
    w_scale = rng.uniform(0.005, 0.02, out_c)
    f = m.tensor(f_shape, "int8", w_scale, np.zeros(out_c, int), rand_int8(rng, f_shape), axis=axis)
    b = m.tensor([out_c], "int32", w_scale * s_in, np.zeros(out_c, int), rng.integers(-500, 500, out_c).astype(np.int32))
    y = m.act(out_shape, 0.05, -20)
    common = dict(padding=PADDING["SAME"], strideH=1, strideW=1, fusedActivationFunction=ACT[act])
    if kind == "CONV_2D":
        m.op(kind, [x, f, b], [y], options("Conv2DOptions", **common))
    else:
        m.op(kind, [x, f, b], [y], options("DepthwiseConv2DOptions", depthMultiplier=1, **common))
    return y


def tiny_net(rng) -> bytes:
    """x[1,6,6,2] -> op0 CONV 3x3 (4, RELU6) -> op1 DEPTHWISE 3x3 (RELU) -> op2 ADD(op0, op1) ->
    op3 CONV 1x1 (5) -> op4 MAX_POOL 2x2/2 -> op5 RESHAPE [1,45] -> op6 FC (3) -> op7 SOFTMAX.
    Trainable: 0, 1, 3, 6; MAX_POOL, RESHAPE and a residual ADD on the backward path."""
    m = ModelBuilder()
    x = m.act([1, 6, 6, 2], 0.05, 3)
    a = _conv(m, rng, x, 0.05, [4, 3, 3, 2], [1, 6, 6, 4], "CONV_2D", "RELU6", 0)
    b = _conv(m, rng, a, 0.05, [1, 3, 3, 4], [1, 6, 6, 4], "DEPTHWISE_CONV_2D", "RELU", 3)
    c = m.act([1, 6, 6, 4], 0.08, 0)
    m.op("ADD", [a, b], [c], options("AddOptions", fusedActivationFunction=0))
    d = _conv(m, rng, c, 0.08, [5, 1, 1, 4], [1, 6, 6, 5], "CONV_2D", "NONE", 0)
    e = m.act([1, 3, 3, 5], 0.05, -20)
    m.op("MAX_POOL_2D", [d], [e], options("Pool2DOptions", padding=PADDING["VALID"], strideH=2, strideW=2,
                                             filterHeight=2, filterWidth=2, fusedActivationFunction=0))
    shape = m.tensor([2], "int32", data=np.array([1, 45], np.int32))
    f = m.act([1, 45], 0.05, -20)
    m.op("RESHAPE", [e, shape], [f], options("ReshapeOptions", newShape=[1, 45]))
    w = m.tensor([3, 45], "int8", 0.01, [0], rand_int8(rng, (3, 45)))
    bias = m.tensor([3], "int32", 0.0005, [0], np.array([10, -10, 5], np.int32))
    z = m.act([1, 3], 0.1, 4)
    m.op("FULLY_CONNECTED", [f, w, bias], [z], options("FullyConnectedOptions"))
    p = m.act([1, 3], 1 / 256, -128)
    m.op("SOFTMAX", [z], [p], options("SoftmaxOptions", beta=1.0))
    return m.build([x], [p])


@pytest.fixture
def net(rng):
    return parse_tflite(tiny_net(rng), "tiny")


def random_scheme(rng, g, max_ops=None) -> Scheme:
    ops = [op.index for op in updatable_ops(g)][-(max_ops or 10**6):]
    while True:
        bias = [i for i in ops if rng.random() < 0.4]
        ratios = {i: float(rng.choice(RATIOS)) for i in ops if rng.random() < 0.5}
        s = Scheme(bias_ops=bias, weight_ratios={i: r for i, r in ratios.items() if r > 0})
        if s.updated_ops():
            return s


# ----------------------------------------------------------------------------------------------
# the independent reference: paint the timeline


def painted_errors(plan) -> list[str]:
    """Walk the timeline: at each step the buffers born there paint their bytes (their id); then
    every buffer live at the step must still own every byte, except an input a permit lets the
    op's output overwrite at exactly the step it dies, by at least the kernel's margin."""
    lt, off, arena = plan.lifetimes, plan.offsets, plan.arena_bytes
    owner = np.full(arena, -1)
    errors = []
    steps = len(plan.graph.ops) + len(plan.path.ops)
    for s in range(steps):
        for b in lt.buffers:
            if b.first == s:
                if off[b.id] < 0 or off[b.id] + b.size > arena:
                    errors.append(f"{b.label} outside the arena")
                owner[off[b.id]:off[b.id] + b.size] = b.id
        for b in lt.buffers:
            if not b.first <= s <= b.last:
                continue
            lost = set(owner[off[b.id]:off[b.id] + b.size].tolist()) - {b.id}
            for other in lost:
                p = next((p for p in lt.permits if p.inp == b.id and p.out == other), None)
                ok = p is not None and p.op == s == b.last and off[b.id] - off[other] >= p.min_delta
                if not ok:
                    errors.append(f"step {s}: {b.label} overwritten by {lt.buffers[other].label}")
    return errors


def check_saved(plan) -> None:
    """Every activation the backward pass reads lives (and, painted, stays intact) to its step."""
    n = len(plan.graph.ops)
    for t, k in plan.path.saved_tensors.items():
        assert plan.lifetimes.buffers[plan.tensor_buffer[t]].last >= n + k


# ----------------------------------------------------------------------------------------------
# validity


@pytest.mark.parametrize("planner", ["tinymem", "greedy"])
@pytest.mark.parametrize("reorder", [True, False])
def test_random_schemes_are_valid(net, rng, planner, reorder):
    for _ in range(8):
        plan = plan_training(net, random_scheme(rng, net), reorder=reorder, planner=planner)
        assert painted_errors(plan) == []
        check_saved(plan)


@pytest.mark.parametrize("model", ["mobilenetv2_035_96", "digits_cnn", "dscnn_kws"])
def test_zoo_schemes_are_valid(model, rng):
    g = load_tflite(f"models/{model}.tflite")
    for scheme in (random_scheme(rng, g, max_ops=8), full_backprop_scheme(g)):
        plan = plan_training(g, scheme, reorder=bool(rng.integers(2)))
        assert painted_errors(plan) == []
        check_saved(plan)


def test_saved_input_loses_its_in_place_permit(net):
    # Inference runs the 1x1 conv (op 3) over its dying input; updating its weights keeps that
    # input for the weight gradient, so training may not overwrite it.
    fwd = compute_lifetimes(net)
    c = fwd.tensor_buffer[net.ops[3].inputs[0]]
    assert [p.op for p in fwd.permits if p.inp == c] == [3]
    plan = plan_training(net, Scheme(weight_ratios={3: 1.0}))
    assert plan.tensor_buffer[net.ops[3].inputs[0]] == c
    assert all(p.inp != c for p in plan.lifetimes.permits)
    assert painted_errors(plan) == []
    # Only the bias: the input is not saved and the permit stays.
    plan = plan_training(net, Scheme(bias_ops=[3]))
    assert [p.op for p in plan.lifetimes.permits if p.inp == c] == [3]


def test_in_place_permit_kept_where_the_input_dies():
    # FC -> FC -> FC, only the last bias trained: the first FC's input dies at op 0 in training
    # too, so the permit inference uses survives (and the plan is as small as inference's there).
    rng = np.random.default_rng(0)
    m = ModelBuilder()
    acts = [m.act([1, 40], 0.05, 0)]
    for i, o in ((40, 40), (40, 40), (40, 4)):
        w = m.tensor([o, i], "int8", 0.01, [0], rand_int8(rng, (o, i)))
        acts.append(m.act([1, o], 0.05, 3))
        m.op("FULLY_CONNECTED", [acts[-2], w, -1], [acts[-1]], options("FullyConnectedOptions"))
    g = parse_tflite(m.build([acts[0]], [acts[-1]]), "fc")
    fwd = compute_lifetimes(g)
    plan = plan_training(g, Scheme(bias_ops=[2]))
    kept = [p for p in fwd.permits if p.op == 0]
    assert kept and all(p in plan.lifetimes.permits for p in kept)
    assert painted_errors(plan) == []


# ----------------------------------------------------------------------------------------------
# orderings


def test_reorder_never_costs_more_and_full_backprop_is_the_most(net, rng):
    full = full_backprop_sram_bytes(net)
    for _ in range(12):
        s = random_scheme(rng, net)
        ours = plan_training(net, s, reorder=True).train_peak_sram_bytes
        assert ours <= plan_training(net, s, reorder=False).train_peak_sram_bytes <= full


def test_mobilenet_sparse_vs_full():
    g = load_tflite("models/mobilenetv2_035_96.tflite")
    ops = [op.index for op in updatable_ops(g)]
    s = Scheme(bias_ops=ops[-8:], weight_ratios={ops[-1]: 1.0, ops[-3]: 0.25})
    ours = plan_training(g, s).train_peak_sram_bytes
    assert ours <= plan_training(g, s, reorder=False).train_peak_sram_bytes
    assert 10 * ours < full_backprop_sram_bytes(g)


# ----------------------------------------------------------------------------------------------
# per-op numbers, by hand


def test_param_bytes_by_hand(net):
    s = Scheme(bias_ops=[0, 6], weight_ratios={0: 0.5, 1: 0.25, 6: 1.0})
    got = param_sram_bytes(net, s)
    # op0 CONV [4,3,3,2]: K = 18; int8 copy 72 B + padding of the last row's 16-byte chunk (32 - 18
    # = 14) = 86; masters 2 channels x 18 x 4 = 144; folded bias 16; bias masters 16.
    # op1 DEPTHWISE [1,3,3,4]: K = 9; the copy is padded to a whole 16-channel block per tap
    # (36 + 12 = 48); 1 channel x 9 x 4 = 36 B of masters; folded bias 16.
    # op6 FC [3,45]: 135 + 3 x 45 x 4 = 540 + folded 12 + masters 12.
    assert got == {0: 86 + 144 + 16 + 16, 1: 48 + 36 + 16, 6: 135 + 540 + 12 + 12}
    plan = plan_training(net, s)
    assert plan.static_bytes == sum(got.values())
    # + the firmware's I/O: control 8 + status 8 + a copy of the 3 int8 logits + the ready flag 4.
    assert plan.io_bytes == 8 + 8 + 3 + 4
    assert plan.train_peak_sram_bytes == plan.arena_bytes + plan.static_bytes + plan.io_bytes


def test_backward_scratch_by_hand(net):
    s = Scheme(bias_ops=[3], weight_ratios={0: 0.5, 1: 1.0, 6: 1.0})
    ops = net.ops
    # Reordered: one output channel of weight gradient (conv K=18, depthwise K=9), none for FC.
    assert [backward_scratch_bytes(net, ops[i], s, True) for i in (0, 1, 3, 6)] == [72, 36, 0, 0]
    # Not reordered: the updated channels' gradients (+ bias gradients) wait for the end.
    assert [backward_scratch_bytes(net, ops[i], s, False) for i in (0, 1, 3, 6)] == [2 * 72, 4 * 36, 20, 540]
    plan = plan_training(net, s, reorder=False)
    end = len(ops) + len(plan.path.ops) - 1
    for i, size in ((0, 144), (1, 144), (3, 20), (6, 540)):
        b = plan.lifetimes.buffers[plan.bwd_scratch_buffer[i]]
        assert (b.size, b.first, b.last) == (size, plan.backward_step[i], end)
    plan = plan_training(net, s, reorder=True)
    assert sorted(plan.bwd_scratch_buffer) == [0, 1] and plan.bwd_scratch_offset(6) is None
    b = plan.lifetimes.buffers[plan.bwd_scratch_buffer[0]]
    assert (b.size, b.first, b.last) == (72, plan.backward_step[0], plan.backward_step[0])


def test_timeline_by_hand(net):
    # Train op 3's weights and op 6's bias: the path is 3, 4, 5, 6 -> backward steps 8 (op 6),
    # 9 (op 5), 10 (op 4), 11 (op 3).
    plan = plan_training(net, Scheme(bias_ops=[6], weight_ratios={3: 0.5}))
    assert [op.index for op in plan.path.ops] == [3, 4, 5, 6]
    assert plan.backward_step == {6: 8, 5: 9, 4: 10, 3: 11}
    lt = plan.lifetimes
    t = {name: net.ops[i].outputs[0] for name, i in (("c", 2), ("d", 3), ("e", 4), ("f", 5), ("z", 6))}

    def span(buf):
        b = lt.buffers[buf]
        return b.size, b.first, b.last

    # Saved: op 3's input c (weight gradient, step 11), its output d (mask; and MAX_POOL's input),
    # the logits z (loss and FC mask, step 8). e/f (one buffer, RESHAPE aliases) die in the forward.
    assert span(plan.tensor_buffer[t["c"]]) == (144, 2, 11)
    assert span(plan.tensor_buffer[t["d"]]) == (180, 3, 11)
    assert span(plan.tensor_buffer[t["z"]]) == (3, 6, 8)
    assert span(plan.tensor_buffer[t["e"]]) == (45, 4, 6)
    # Gradients, 4 B/element, from their first consumer's backward step to their producer's.
    assert span(plan.grad_buffer[t["z"]]) == (12, 8, 8)
    assert span(plan.grad_buffer[t["f"]]) == (180, 8, 9)
    assert span(plan.grad_buffer[t["e"]]) == (180, 9, 10)
    assert span(plan.grad_buffer[t["d"]]) == (720, 10, 11)
    assert t["c"] not in plan.grad_buffer  # op 3 is the earliest: no input gradient
    assert span(plan.bwd_scratch_buffer[3]) == (16, 11, 11)  # K = 4 floats
    # At op 3's backward step: c, d, d's gradient and the scratch are live, nothing may overlap.
    assert plan.live_bytes(11) == 144 + 180 + 720 + 16
    assert plan.arena_bytes >= 144 + 180 + 720 + 16
    row = plan.layers[3]
    assert row["saved_bytes"] == 180 and row["backward_live_bytes"] == 144 + 180 + 720 + 16
    assert row["param_bytes"] == param_sram_bytes(net, plan.scheme)[3]
    # Offsets are the placement's.
    assert plan.grad_offset(t["d"]) == plan.offsets[plan.grad_buffer[t["d"]]]
    assert plan.tensor_offset(t["f"]) == plan.tensor_offset(t["e"])


def test_full_backprop_scheme(net):
    s = full_backprop_scheme(net)
    assert s.bias_ops == [0, 1, 3, 6] and s.weight_ratios == {0: 1.0, 1: 1.0, 3: 1.0, 6: 1.0}
    plan = plan_training(net, s, reorder=False)
    assert full_backprop_sram_bytes(net) == plan.train_peak_sram_bytes
    assert plan.train_peak_sram_bytes > make_plan(net).peak_sram_bytes


# ----------------------------------------------------------------------------------------------
# errors


def test_scheme_updating_a_frozen_op(net):
    with pytest.raises(TinymemError, match=r"updates op 2 \(ADD\); trainable ops are 0, 1, 3, 6"):
        plan_training(net, Scheme(bias_ops=[2]))
    with pytest.raises(TinymemError, match=r"op 40 \(no such op\)"):
        plan_training(net, Scheme(weight_ratios={40: 0.5}))
    with pytest.raises(TinymemError, match="updates nothing"):
        plan_training(net, Scheme())


def test_unknown_planner(net):
    with pytest.raises(TinymemError, match="unknown planner 'best'"):
        plan_training(net, Scheme(bias_ops=[6]), planner="best")


def test_trainable_ops_of_tiny_net(net):
    assert [op.index for op in trainable_ops(net)] == [0, 1, 3, 6]


def test_memory_by_kind_adds_up_to_live_bytes(net, rng):
    # The plot's stacks: each step's kinds sum to exactly the arena bytes in use (in-place sharing
    # counted once), saved bytes appear only past a tensor's inference lifetime.
    from tinymem.train.plot import memory_by_kind

    for _ in range(4):
        plan = plan_training(net, random_scheme(rng, net), reorder=bool(rng.integers(2)))
        stacks = memory_by_kind(plan)
        n = len(net.ops)
        for s in range(plan.steps):
            arena_kinds = [stacks[k][s] for k in stacks if k != "static parameters"]
            assert sum(arena_kinds) == plan.live_bytes(s)
            assert stacks["static parameters"][s] == plan.static_bytes
            if s < n:
                assert stacks["gradients"][s] == 0
        assert max(stacks["saved for backward"][n:]) > 0 and stacks["saved for backward"][0] == 0
