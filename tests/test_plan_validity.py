"""Arena plans are valid, checked independently of the planner, and close to optimal.

The reference here shares no code with tinymem.plan: a byte painter (every live buffer's bytes,
step by step, in a numpy array) decides validity, and an exhaustive search over every aligned
placement gives the optimum on small instances.
"""
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from modelgen import ModelBuilder, options, rand_int8
from tinymem.errors import TinymemError, UnsupportedError
from tinymem.model.tflite import load_tflite, parse_tflite
from tinymem.ops import validate_graph
from tinymem.plan import make_plan
from tinymem.plan.arena import GreedyBySize, OverlapAware, Placement, check_placement, lower_bound
from tinymem.plan.lifetimes import Buffer, Lifetimes, Permit, compute_lifetimes


def aligned(x, a):
    return -(-x // a) * a


# ----------------------------------------------------------------------------------------------
# instances


def random_lifetimes(rng, n_ops=8, max_size=200, permit_prob=0.7, scratch_prob=0.2) -> Lifetimes:
    """A random graph-shaped instance: op s reads 1-2 earlier buffers and writes one new buffer
    (maybe plus scratch); an input whose last reader is s may be permitted to overlap s's output
    with a random min_delta, negative ones included."""
    bufs = [Buffer(0, int(rng.integers(1, max_size)), 0, 0, tensors=[0])]
    reads, outs = [], []
    for s in range(n_ops):
        # Mostly the previous op's output, sometimes an older one (residuals, concats).
        ins = {len(bufs) - 1 if bufs[-1].scratch_of is None else len(bufs) - 2}
        if rng.random() < 0.4:
            ins.add(int(rng.integers(0, len(bufs))))
        ins = {i for i in ins if bufs[i].scratch_of is None}
        for i in ins:
            bufs[i].last = s
        reads.append(ins)
        out = Buffer(len(bufs), int(rng.integers(1, max_size)), s, s, tensors=[len(bufs)])
        bufs.append(out)
        outs.append(out.id)
        if rng.random() < scratch_prob:
            bufs.append(Buffer(len(bufs), int(rng.integers(1, max_size)), s, s, scratch_of=s))
    permits = []
    for s, (ins, o) in enumerate(zip(reads, outs)):
        for i in sorted(ins):
            if bufs[i].last == s and rng.random() < permit_prob:
                si, so = bufs[i].size, bufs[o].size
                permits.append(Permit(s, i, o, int(rng.integers(-si - 2, so + 3))))
    return Lifetimes(bufs, {b.id: b.id for b in bufs if b.scratch_of is None}, permits)


def fc_chain(rng, widths, batches=1, outputs=None) -> bytes:
    """x -> FC -> FC -> ... with the given feature widths; returns the .tflite bytes."""
    m = ModelBuilder()
    acts = [m.act([batches, widths[0]], 0.05, 0)]
    for i, o in zip(widths, widths[1:]):
        w = m.tensor([o, i], "int8", 0.01, [0], rand_int8(rng, (o, i)))
        acts.append(m.act([batches, o], 0.05, 3))
        m.op("FULLY_CONNECTED", [acts[-2], w, -1], [acts[-1]], options("FullyConnectedOptions"))
    return m.build([acts[0]], [acts[-1]] if outputs is None else [acts[k] for k in outputs])


# ----------------------------------------------------------------------------------------------
# the independent references


def painted_violations(lt: Lifetimes, offsets: dict, arena: int) -> set:
    """Pairs of buffers that illegally share a byte, found by painting bytes step by step."""
    permits = {frozenset((p.inp, p.out)): p for p in lt.permits}
    bad = set()
    for s in range(min(b.first for b in lt.buffers), max(b.last for b in lt.buffers) + 1):
        live = [b for b in lt.buffers if b.first <= s <= b.last]
        paint = np.zeros((len(live), arena), bool)
        for k, b in enumerate(live):
            if offsets[b.id] < 0 or offsets[b.id] + b.size > arena:
                bad.add(("outside", b.id))
                continue
            paint[k, offsets[b.id]:offsets[b.id] + b.size] = True
        for k, m in combinations(range(len(live)), 2):
            if (paint[k] & paint[m]).any():
                a, b = live[k].id, live[m].id
                p = permits.get(frozenset((a, b)))
                if p is None or p.op != s or offsets[p.inp] - offsets[p.out] < p.min_delta:
                    bad.add(frozenset((a, b)))
    return bad


def checker_accepts(lt, offsets, arena) -> bool:
    try:
        check_placement(lt, Placement(offsets, arena))
        return True
    except TinymemError:
        return False


def pair_ok(lt, a: Buffer, oa: int, b: Buffer, ob: int) -> bool:
    if not (a.first <= b.last and b.first <= a.last) or oa + a.size <= ob or ob + b.size <= oa:
        return True
    for p in lt.permits:
        if {p.inp, p.out} == {a.id, b.id}:
            return (oa if p.inp == a.id else ob) - (ob if p.inp == a.id else oa) >= p.min_delta
    return False


def optimum(lt: Lifetimes, align: int, upper: int) -> int:
    """Smallest arena over every placement at multiples of `align` (exhaustive, pruned only by the
    bound found so far): the true optimum, with no assumption about what optimal plans look like."""
    bufs = sorted(lt.buffers, key=lambda b: -b.size)
    best = upper
    offs: list[int] = []

    def dfs(k: int, top: int) -> None:
        nonlocal best
        if k == len(bufs):
            best = min(best, aligned(top, align))
            return
        b = bufs[k]
        for o in range(0, best - align - b.size + 1, align):  # only strictly smaller arenas
            if all(pair_ok(lt, b, o, bufs[j], offs[j]) for j in range(k)):
                offs.append(o)
                dfs(k + 1, max(top, o + b.size))
                offs.pop()

    dfs(0, 0)
    return best


# ----------------------------------------------------------------------------------------------
# validity


@pytest.mark.parametrize("seed", range(40))
def test_planners_valid_per_painted_bytes(seed):
    rng = np.random.default_rng(seed)
    lt = random_lifetimes(rng, n_ops=int(rng.integers(1, 14)))
    for planner in (GreedyBySize(), GreedyBySize(4), OverlapAware(), OverlapAware(16), OverlapAware(1)):
        p = planner.place(lt)
        assert painted_violations(lt, p.offsets, p.arena_bytes) == set(), planner
        assert all(o % planner.align == 0 for o in p.offsets.values())
        check_placement(lt, p)


@pytest.mark.parametrize("seed", range(30))
def test_checker_agrees_with_painter_on_random_placements(seed):
    # Random offsets in a tight arena: a mix of valid and invalid placements, both checkers agree.
    rng = np.random.default_rng(1000 + seed)
    lt = random_lifetimes(rng, n_ops=int(rng.integers(2, 7)), max_size=24)
    arena = max(b.size for b in lt.buffers) * 3
    verdicts = set()
    for _ in range(40):
        offsets = {b.id: int(rng.integers(-1, arena - b.size + 2)) for b in lt.buffers}
        painted_ok = not painted_violations(lt, offsets, arena)
        assert checker_accepts(lt, offsets, arena) == painted_ok, offsets
        verdicts.add(painted_ok)
    assert False in verdicts  # the sample really exercised rejection


def test_checker_rejects_an_offset_moved_onto_a_live_neighbour():
    rng = np.random.default_rng(7)
    moved = 0
    for _ in range(20):
        lt = random_lifetimes(rng, n_ops=8)
        p = OverlapAware().place(lt)
        for a, b in combinations(lt.buffers, 2):
            if a.overlaps_in_time(b) and lt.permit(a.id, b.id) is None:
                offsets = {**p.offsets, a.id: p.offsets[b.id]}  # now they share byte offsets[b.id]
                arena = max(p.arena_bytes, offsets[a.id] + a.size)  # overlap, not overflow, is the fault
                with pytest.raises(TinymemError, match="overlap") as err:
                    check_placement(lt, Placement(offsets, arena))
                assert f"{a.label} [{offsets[a.id]}," in str(err.value)  # it may hit a third buffer first
                assert painted_violations(lt, offsets, arena)
                moved += 1
                break
    assert moved >= 15


def test_checker_rejects_buffer_outside_arena():
    lt = random_lifetimes(np.random.default_rng(3))
    p = GreedyBySize().place(lt)
    with pytest.raises(TinymemError, match="outside"):
        check_placement(lt, Placement(p.offsets, p.arena_bytes - 16))
    with pytest.raises(TinymemError, match="outside"):
        check_placement(lt, Placement({**p.offsets, 0: -4}, p.arena_bytes))


@pytest.mark.parametrize("sizes", [(10, 10), (4, 13), (13, 4)])
@pytest.mark.parametrize("min_delta", [-5, 0, 3, 9])
def test_permit_boundary_is_exact(sizes, min_delta):
    # One op: input 0 dies, output 1 is born. Every relative placement: both checkers accept an
    # overlap exactly when in_off - out_off >= min_delta, and any disjoint placement.
    si, so = sizes
    lt = Lifetimes([Buffer(0, si, 0, 0, [0]), Buffer(1, so, 0, 0, [1])], {0: 0, 1: 1}, [Permit(0, 0, 1, min_delta)])
    for delta in range(-si - 3, so + 4):
        offsets = {0: max(delta, 0), 1: max(-delta, 0)}
        arena = max(offsets[0] + si, offsets[1] + so)
        disjoint = delta >= so or delta <= -si
        want = disjoint or delta >= min_delta
        assert checker_accepts(lt, offsets, arena) == want == (not painted_violations(lt, offsets, arena)), delta


def test_checker_rejects_malformed_permit():
    # An input that is still read after the op may not be overwritten, whatever the delta.
    lt = Lifetimes([Buffer(0, 8, 0, 1, [0]), Buffer(1, 8, 0, 1, [1])], {0: 0, 1: 1}, [Permit(0, 0, 1, 0)])
    with pytest.raises(TinymemError, match="invalid permit"):
        check_placement(lt, Placement({0: 0, 1: 0}, 8))


# ----------------------------------------------------------------------------------------------
# real models


@pytest.mark.parametrize("planner", ["greedy", "tinymem"])
def test_fc_chain_plans_valid(planner):
    rng = np.random.default_rng(5)
    for _ in range(6):
        widths = [int(w) for w in rng.integers(1, 80, int(rng.integers(2, 7)))]
        g = parse_tflite(fc_chain(rng, widths, batches=int(rng.integers(1, 4))))
        plan = make_plan(g, planner)
        assert painted_violations(plan.lifetimes, plan.offsets, plan.arena_bytes) == set()
        assert plan.arena_bytes >= lower_bound(plan.lifetimes)


def test_layer_account_matches_painted_bytes():
    # live_bytes is the union of live buffers' bytes at each op; in_place is a permitted pair
    # really sharing bytes; RESHAPE aliases its input (one buffer, so it is also "in place").
    rng = np.random.default_rng(8)
    m = ModelBuilder()
    x = m.act([2, 24], 0.05, 0)
    w1 = m.tensor([30, 24], "int8", 0.01, [0], rand_int8(rng, (30, 24)))
    y = m.act([2, 30], 0.05, 3)
    m.op("FULLY_CONNECTED", [x, w1, -1], [y], options("FullyConnectedOptions"))
    shape = m.tensor([2], "int32", data=np.array([1, 60]))
    r = m.act([1, 60], 0.05, 3)
    m.op("RESHAPE", [y, shape], [r], options("ReshapeOptions", newShape=[1, 60]))
    w2 = m.tensor([9, 60], "int8", 0.01, [0], rand_int8(rng, (9, 60)))
    z = m.act([1, 9], 0.05, 3)
    m.op("FULLY_CONNECTED", [r, w2, -1], [z], options("FullyConnectedOptions"))
    for planner in ("greedy", "tinymem"):
        plan = make_plan(parse_tflite(m.build([x], [z])), planner, align=1)
        lt, off = plan.lifetimes, plan.offsets
        assert len(lt.buffers) == 3  # y and its reshape share one buffer
        for layer in plan.layers:
            painted = np.zeros(plan.arena_bytes, bool)
            for b in lt.buffers:
                if b.live_at(layer.index):
                    painted[off[b.id]:off[b.id] + b.size] = True
            assert layer.live_bytes == painted.sum()
            shares = any(p.op == layer.index and len({*range(off[p.inp], off[p.inp] + lt.buffers[p.inp].size)}
                                                     & {*range(off[p.out], off[p.out] + lt.buffers[p.out].size)})
                         for p in lt.permits)
            assert layer.in_place == (shares or layer.op == "RESHAPE")
        assert [layer.macs for layer in plan.layers] == [2 * 24 * 30, 0, 60 * 9] and plan.macs == 2 * 24 * 30 + 60 * 9
    # The first FC sets the arena: its output row 1 (bytes 30..59) reads input bytes 24..47 and
    # byte 58 is written while byte 24 is still unread, so the input may start 35 above the output:
    # 35 + 48 = 83 bytes instead of 48 + 60 = 108.
    assert plan.layers[0].in_place and plan.arena_bytes == 83


ZOO = sorted((Path(__file__).resolve().parents[1] / "models").glob("*.tflite"))


@pytest.mark.parametrize("path", ZOO, ids=[p.stem for p in ZOO])
def test_zoo_plans_valid_and_fast(path):
    g = load_tflite(path)
    try:
        validate_graph(g)
    except UnsupportedError as exc:  # ops still landing
        pytest.skip(str(exc))
    greedy = make_plan(g, "greedy")
    start = time.perf_counter()
    ours = make_plan(g, "tinymem")
    assert time.perf_counter() - start < 1.0
    for plan in (greedy, ours):
        assert painted_violations(plan.lifetimes, plan.offsets, plan.arena_bytes) == set()
    assert lower_bound(ours.lifetimes, 4) <= ours.arena_bytes <= greedy.arena_bytes


def test_graph_output_read_by_last_op_is_never_overwritten(tmp_path):
    # y is a model output and also the last op's input: overlapping z onto it would corrupt y
    # after the run. This exact model once did (z's last byte landed on y's first).
    rng = np.random.default_rng(1)
    model = fc_chain(rng, [5, 17, 25], outputs=[1, 2])
    lt = compute_lifetimes(parse_tflite(model))
    assert [(p.inp, p.out) for p in lt.permits] == [(0, 1)]
    from harness import assert_bit_exact
    assert_bit_exact(model, rng, n=2, tmp_path=tmp_path)


# ----------------------------------------------------------------------------------------------
# quality against the optimum


def small_instances(count, permit_prob, max_size=48):
    rng = np.random.default_rng([int(permit_prob * 10), max_size])
    return [random_lifetimes(rng, n_ops=int(rng.integers(2, 5)), max_size=max_size, permit_prob=permit_prob,
                             scratch_prob=0.3) for _ in range(count)]


def test_greedy_by_size_gap_to_optimum():
    # TFLite Micro's planner on small instances, against the exhaustive optimum at 16 bytes.
    ratios = []
    for lt in small_instances(30, permit_prob=0):
        greedy = GreedyBySize().place(lt).arena_bytes
        best = optimum(lt, 16, greedy)
        assert lower_bound(lt, 16) <= best <= greedy
        ratios.append(greedy / best)
    # Measured: worst 1.25x, mean 1.01x. Some instance must be non-optimal, or the search proves nothing.
    assert 1 < max(ratios) <= 1.5 and np.mean(ratios) <= 1.05, ratios


@pytest.mark.parametrize("align, max_size", [(1, 16), (4, 40)])
def test_overlap_aware_meets_optimum_on_small_instances(align, max_size):
    # With permits, ours against the exhaustive optimum; the lower bound is sound.
    gaps, permits_pay = [], 0
    for lt in small_instances(30, permit_prob=0.9, max_size=max_size):
        ours = OverlapAware(align).place(lt).arena_bytes
        best = optimum(lt, align, ours)
        assert lower_bound(lt, align) <= best <= ours
        gaps.append(ours - best)
        permits_pay += best < GreedyBySize(align).place(lt).arena_bytes
    # Measured: optimal on all 60; the orders-only planner it replaced missed 5 of them.
    assert sum(g == 0 for g in gaps) >= 29 and max(gaps) <= 2 * align, gaps
    assert permits_pay >= 10  # the instances really reward overlapping


@pytest.mark.parametrize("align", [1, 4, 16])
def test_one_op_pair_is_exact(align):
    # An input dying into an output: the exhaustive optimum and our planner agree on every
    # size/delta combination, negative deltas included; so does the lower bound, where alignment
    # does not pad disjoint buffers apart (it counts bytes, not aligned slots).
    for si in (1, 5, 12):
        for so in (1, 7, 12):
            for d in range(-si - 1, so + 2):
                lt = Lifetimes([Buffer(0, si, 0, 0, [0]), Buffer(1, so, 0, 0, [1])], {0: 0, 1: 1},
                               [Permit(0, 0, 1, d)])
                ours = OverlapAware(align).place(lt).arena_bytes
                best = optimum(lt, align, aligned(si, align) + aligned(so, align) + align)
                assert best == ours, (si, so, d)
                assert lower_bound(lt, align) == best if align == 1 else lower_bound(lt, align) <= best


@pytest.mark.parametrize("align", [1, 4, 16])
def test_overlap_aware_never_worse_than_greedy(align):
    # Greedy placement with permits can land worse than without (here once in 300 at align 1: 632
    # vs 587 bytes), so even without its local search ours must keep the baseline's placement.
    rng = np.random.default_rng(align)
    for k in range(300):
        lt = random_lifetimes(rng, n_ops=int(rng.integers(1, 20)), permit_prob=float(rng.random()))
        greedy = GreedyBySize(align).place(lt).arena_bytes
        assert OverlapAware(align, iterations=0).place(lt).arena_bytes <= greedy
        if k % 10 == 0:
            assert OverlapAware(align).place(lt).arena_bytes <= greedy
            # and never worse than TFLite Micro as shipped (16 bytes) at our default alignment
            assert OverlapAware().place(lt).arena_bytes <= GreedyBySize().place(lt).arena_bytes


def test_overlap_aware_is_deterministic():
    lt = random_lifetimes(np.random.default_rng(11), n_ops=30)
    assert OverlapAware().place(lt) == OverlapAware().place(lt)
