"""Patch-based inference, planning side: receptive fields, buffer sizes, MACs, peaks and the
schedule search, each against an independent computation.

Receptive fields are checked against boolean masks pushed backwards through a numpy model of
each op (every output pixel of the patch marks the input pixels its taps read); peaks against a
re-derivation of each step's live bytes from first principles; the search against planning every
schedule of small models."""
import json
import time
from pathlib import Path

import numpy as np
import pytest

from test_patch_models import random_cnn
from tinymem.cli import main
from tinymem.errors import TinymemError
from tinymem.model.tflite import parse_tflite
from tinymem.plan import make_plan
from tinymem.plan.arena import max_overlap
from tinymem.plan.patch import Analysis, Schedule, bounds, make_patch_plan, stage_estimate, stage_plan, stage_points
from tinymem.plan.patch_search import enumerate_schedules, parse_patch, parse_size, search

MODELS = Path(__file__).resolve().parent.parent / "models"


def load(name):
    return parse_tflite((MODELS / f"{name}.tflite").read_bytes(), name)


# --- the independent model: masks ----------------------------------------------------------------

def _same_pad(size, k, stride, dil, padding):
    """(output size, pad before) written out from TFLite's rule, not from tinymem."""
    eff = (k - 1) * dil + 1
    out = -(-size // stride) if padding == 0 else (size - eff) // stride + 1
    return out, max((out - 1) * stride + eff - size, 0) // 2


def mask_back(g, op, out_mask):
    """Per activation input of `op`, the pixels (H x W booleans) computing `out_mask` reads."""
    o = op.options
    x = g.t(op.inputs[0])
    if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D"):
        if op.kind.endswith("POOL_2D"):
            kh, kw, dh, dw = int(o["FilterHeight"]), int(o["FilterWidth"]), 1, 1
        else:
            w = g.t(op.inputs[1]).shape
            kh, kw = int(w[1]), int(w[2])
            dh, dw = int(o.get("DilationHFactor", 1)), int(o.get("DilationWFactor", 1))
        sh, sw = int(o["StrideH"]), int(o["StrideW"])
        h, wd = x.shape[1], x.shape[2]
        _, pt = _same_pad(h, kh, sh, dh, int(o.get("Padding", 0)))
        _, pl = _same_pad(wd, kw, sw, dw, int(o.get("Padding", 0)))
        m = np.zeros((h, wd), bool)
        for oy, ox in zip(*np.nonzero(out_mask)):
            for ky in range(kh):
                for kx in range(kw):
                    iy, ix = oy * sh - pt + ky * dh, ox * sw - pl + kx * dw
                    if 0 <= iy < h and 0 <= ix < wd:
                        m[iy, ix] = True
        return {op.inputs[0]: m}
    if op.kind in ("PAD", "PADV2"):
        p = g.t(op.inputs[1]).data
        h, wd = x.shape[1], x.shape[2]
        return {op.inputs[0]: out_mask[p[1][0]:p[1][0] + h, p[2][0]:p[2][0] + wd].copy()}
    # element-wise: each non-constant operand (same shape as the output here) at the same pixels
    out = {}
    for i in op.inputs:
        if not g.t(i).is_const:
            assert g.t(i).shape == g.t(op.outputs[0]).shape
            out[i] = out_mask.copy()
    return out


def bbox(m):
    ys, xs = np.nonzero(m)
    return (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) if ys.size else None


def mask_need(g, stage, patch_mask):
    """Stage tensor -> the union of what its consumers read, pushed back from the patch."""
    need = {stage.split: patch_mask}
    for s in reversed(stage.ops):
        op = g.ops[s]
        for i, m in mask_back(g, op, need[op.outputs[0]]).items():
            need[i] = need[i] | m if i in need else m
    return need


def random_schedules(rng, g, n):
    an = Analysis(g)
    scheds = list(enumerate_schedules(an, 5))
    picks = [scheds[int(k)] for k in rng.choice(len(scheds), size=min(n, len(scheds)), replace=False)]
    return an, picks


def check_windows(g, an, sched):
    sp = stage_plan(an, sched)
    if sp is None:
        return False
    st = sp.stage
    t = g.t(st.split)
    for i in range(sched.rows):
        for j in range(sched.cols):
            pw = sp.patch_window(i, j)
            mask = np.zeros(t.shape[1:3], bool)
            mask[pw.y0:pw.y1, pw.x0:pw.x1] = True
            need = mask_need(g, st, mask)
            for tensor, m in need.items():
                box = bbox(m)
                got = sp.need(i, j, tensor)
                assert box == (got.y0, got.y1, got.x0, got.x1), f"{sched.label} patch ({i},{j}) tensor {tensor}"
                stored = sp.stored(i, j, tensor)
                assert stored.contains(got), f"{sched.label}: tensor {tensor} stores {stored}, needs {got}"
                full = g.t(tensor).shape
                assert 0 <= stored.y0 and stored.y1 <= full[1] and 0 <= stored.x0 and stored.x1 <= full[2]
    # per-patch buffer sizes: the largest stored window of each stage tensor, from the windows
    for tensor, size in sp.local_size.items():
        hs = [sp.stored(i, 0, tensor).h for i in range(sched.rows)]
        ws = [sp.stored(0, j, tensor).w for j in range(sched.cols)]
        assert size == max(hs) * max(ws) * g.t(tensor).shape[3]
    return True


# --- receptive fields ----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(10))
def test_windows_match_masks_random(seed):
    rng = np.random.default_rng(100 + seed)
    g = parse_tflite(random_cnn(rng, n_ops=int(rng.integers(4, 9))), "random")
    an, picks = random_schedules(rng, g, 4)
    assert sum(check_windows(g, an, s) for s in picks) >= 1 or not picks


@pytest.mark.parametrize("name,scheds", [
    ("mobilenetv2_035_96", [Schedule(5, 4, 4), Schedule(12, 3, 5), Schedule(9, 7, 2), Schedule(2, 1, 3)]),
    ("mcunet_like", [Schedule(12, 3, 4), Schedule(5, 2, 3)]),
    ("dscnn_kws", [Schedule(3, 3, 2)]),
])
def test_windows_match_masks_zoo(name, scheds):
    g = load(name)
    an = Analysis(g)
    for s in scheds:
        assert check_windows(g, an, s)


def test_windows_border_padding():
    """Asymmetric SAME padding at stride 2 on an even map: the extra pad row/column is at the
    bottom/right, so a bottom patch reads one row fewer than an interior one, and a top patch
    reads none above the image."""
    g = load("mobilenetv2_035_96")  # op 0: 3x3 stride-2 SAME conv on 96x96: pad 0 top, 1 bottom
    an = Analysis(g)
    sp = stage_plan(an, Schedule(0, 4, 4))
    h = [sp.stored(i, 0, g.ops[0].inputs[0]) for i in range(4)]
    assert all(w == sp.stored(0, 0, g.ops[0].inputs[0]) for w in h)  # the input is stored whole
    need = [sp.need(i, 0, g.ops[0].inputs[0]) for i in range(4)]
    assert (need[0].y0, need[0].y1) == (0, 25) and (need[3].y0, need[3].y1) == (72, 96)
    assert (need[1].y0, need[1].y1) == (24, 49)


def test_non_dividing_grid_bounds():
    assert bounds(24, 5) == [0, 4, 9, 14, 19, 24] and bounds(7, 7) == list(range(8))


# --- buffers, MACs, peaks -----------------------------------------------------------------------

def test_one_patch_is_layer_by_layer():
    """A 1x1 grid recomputes nothing: MACs equal the layer-wise plan's, buffers are whole tensors."""
    g = load("mobilenetv2_035_96")
    plan = make_patch_plan(g, Schedule(12, 1, 1))
    assert plan.macs == make_plan(g).macs
    for t, size in plan.patch.local_size.items():
        assert size == g.t(t).nbytes


def test_macs_from_the_emitted_calls():
    """Stage MACs = sum over patches of what each emitted conv call computes (its own fields)."""
    g = load("mobilenetv2_035_96")
    plan = make_patch_plan(g, Schedule(12, 3, 5))
    sp = plan.patch
    from tinymem.ops import opdef
    for s in sp.stage.ops:
        op = g.ops[s]
        if op.kind not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        w = g.t(op.inputs[1]).shape
        per_pixel = (w[0] * w[1] * w[2] * w[3]) if op.kind == "CONV_2D" else w[1] * w[2] * w[3]
        total = 0
        for i in range(3):
            for j in range(5):
                stored = [sp.stored(i, j, t) if not g.t(t).is_const else None for t in op.inputs]
                f = opdef(op).patch_call(op, g, None, sp.stored(i, j, op.outputs[0]), stored).fields
                total += f["geo.out_h"] * f["geo.out_w"] * per_pixel
        assert total == sp.macs[s], op.describe()
    assert plan.macs > make_plan(g).macs  # the halo is recomputed


def independent_live(g, plan):
    """Per step, bytes live in the arena from first principles: the graph input through the
    stage, the split tensor from step 0, each stage tensor's per-patch buffer (its largest
    window) from its producer to its last stage reader, every later tensor layer by layer."""
    sp = plan.patch
    st = sp.stage
    k = st.split_op
    producer = {op.outputs[0]: op.index for op in g.ops}
    spans = []  # (first, last, offset, size)
    consumers = {}
    for op in g.ops:
        for i in op.inputs:
            if i >= 0 and not g.t(i).is_const:
                consumers.setdefault(i, []).append(op.index)
    off = plan.offsets
    tb = plan.lifetimes.tensor_buffer
    for t in {i for op in g.ops for i in op.inputs + op.outputs if i >= 0 and not g.t(i).is_const}:
        last = max(consumers.get(t, [len(g.ops) - 1]) + ([len(g.ops) - 1] if t in g.outputs else []))
        if t in g.inputs:
            spans.append((0, max(last, k), off[tb[t]], g.t(t).nbytes))
        elif t == st.split:
            spans.append((0, last, off[tb[t]], g.t(t).nbytes))
            if not sp.direct:
                spans.append((k, k, off[sp.local_buffer[t]], sp.local_size[t]))
        elif producer[t] <= k:
            ws = [[sp.stored(i, j, t) for j in range(sp.schedule.cols)] for i in range(sp.schedule.rows)]
            size = max(w.h for row in ws for w in row) * max(w.w for row in ws for w in row) * g.t(t).shape[3]
            spans.append((producer[t], last, off[tb[t]], size))
        else:
            spans.append((producer[t], last, off[tb[t]], g.t(t).nbytes))
    for b in plan.lifetimes.buffers:
        if b.scratch_of is not None:
            spans.append((b.first, b.last, off[b.id], b.size))
    live = []
    for s in range(len(g.ops)):
        iv = sorted((o, o + n) for f, l, o, n in spans if f <= s <= l)
        total, end = 0, -1
        for lo, hi in iv:
            if hi > end:
                total += hi - max(lo, end)
                end = hi
        live.append(total)
    return live


@pytest.mark.parametrize("name,sched", [
    ("mobilenetv2_035_96", Schedule(5, 8, 8)), ("mobilenetv2_035_96", Schedule(12, 3, 5)),
    ("mobilenetv2_035_96", Schedule(5, 4, 1)), ("mcunet_like", Schedule(12, 3, 4)),
])
def test_peak_from_first_principles(name, sched):
    g = load(name)
    an = Analysis(g)
    plan = make_patch_plan(g, sched, an=an)
    live = independent_live(g, plan)
    assert live == [layer.live_bytes for layer in plan.layers]
    assert max(live) <= plan.arena_bytes <= max(live) + 64  # the arena is the true peak, up to alignment
    # the search's bound never exceeds the plan
    sp = stage_plan(an, sched, exact=False)
    assert stage_estimate(g, sp) <= plan.arena_bytes
    # during the stage the graph input and the split tensor are live whole, sharing at most what
    # the streaming permit allows
    sp = plan.patch
    st = sp.stage
    x, y = g.t(g.inputs[0]), g.t(st.split)
    shared = 0 if sp.stream is None else max_overlap(x.nbytes, y.nbytes, sp.stream)
    assert min(live[: st.split_op + 1]) >= x.nbytes + y.nbytes - shared
    check_stream_bytes(g, plan)


def check_stream_bytes(g, plan):
    """Byte by byte, in the arena: no split byte a patch writes is an input byte a later patch reads."""
    sp = plan.patch
    st = sp.stage
    x, y = g.t(st.inputs[0]), g.t(st.split)
    x_off, y_off = plan.tensor_offset(x.index), plan.tensor_offset(y.index)
    if x_off + x.nbytes <= y_off or y_off + y.nbytes <= x_off:
        return  # placed apart
    assert sp.stream is not None and x_off - y_off >= sp.stream
    order = [(i, j) for i in range(sp.schedule.rows) for j in range(sp.schedule.cols)]
    reads_after = set()
    for i, j in reversed(order):
        w = sp.patch_window(i, j)
        written = {y_off + ((r * y.shape[2] + c) * y.shape[3]) + ch for r in range(w.y0, w.y1)
                   for c in range(w.x0, w.x1) for ch in range(y.shape[3])}
        assert not written & reads_after, f"patch ({i},{j}) overwrites input a later patch reads"
        n = sp.need(i, j, x.index)
        reads_after |= {x_off + ((r * x.shape[2] + c) * x.shape[3]) + ch for r in range(n.y0, n.y1)
                        for c in range(n.x0, n.x1) for ch in range(x.shape[3])}


@pytest.mark.parametrize("seed", range(6))
def test_bound_and_peak_random(seed):
    rng = np.random.default_rng(200 + seed)
    g = parse_tflite(random_cnn(rng, n_ops=int(rng.integers(4, 9))), "random")
    an, picks = random_schedules(rng, g, 5)
    for sched in picks:
        sp = stage_plan(an, sched, exact=False)
        if sp is None:
            continue
        plan = make_patch_plan(g, sched, an=an, quick=True)
        assert stage_estimate(g, sp) <= plan.arena_bytes
        assert independent_live(g, plan) == [layer.live_bytes for layer in plan.layers]
        check_stream_bytes(g, plan)


# --- the search ------------------------------------------------------------------------------------

def exhaustive(g, max_grid, stream=False):
    """Plan every schedule (and layer by layer, which holds the input) with the planner the search uses."""
    an = Analysis(g)
    lw = make_plan(g)
    rows = [] if stream else [(None, lw.macs, lw.peak_sram_bytes)]
    for s in enumerate_schedules(an, max_grid, stream):
        if stage_plan(an, s, exact=False) is None:
            continue
        p = make_patch_plan(g, s, an=an, quick=True)
        rows.append((s, p.macs, p.peak_sram_bytes))
    return lw, rows


@pytest.mark.parametrize("seed", range(3))
def test_search_is_exact(seed):
    rng = np.random.default_rng(300 + seed)
    g = parse_tflite(random_cnn(rng, n_ops=5, size=(12, 10)), "random")
    lw, rows = exhaustive(g, 3)
    for over in (0.0, 0.1, 0.5, 10.0):
        ch = search(g, "auto", max_overhead=over, max_grid=3)
        ok = [r for r in rows if r[1] <= lw.macs * (1 + over)]
        best = min(r[2] for r in ok)
        assert ch.plan.peak_sram_bytes <= best  # the full planner may beat the quick one
        # and what it picked was a best schedule of the quick planner
        picked = [r for r in rows if r[0] == ch.schedule]
        assert picked and picked[0][2] == best
    peaks = sorted({r[2] for r in rows})
    for budget in peaks[:3]:
        ch = search(g, "auto", sram=budget, max_grid=3)
        fewest = min(r[1] for r in rows if r[2] <= budget)
        assert ch.plan.macs == fewest and ch.plan.peak_sram_bytes <= budget
    with pytest.raises(TinymemError, match=f"smallest peak any schedule reaches is {peaks[0]:,} B"):
        search(g, "auto", sram=peaks[0] - 1, max_grid=3, stream=False)
    # below every in-arena peak, --patch auto streams the input if that fits: fewest MACs again
    _, streamed = exhaustive(g, 3, stream=True)
    fits = [r for r in streamed if r[2] <= peaks[0] - 1]
    if fits:
        ch = search(g, "auto", sram=peaks[0] - 1, max_grid=3)
        assert ch.schedule.stream and ch.plan.macs == min(r[1] for r in fits)
        assert ch.as_dict()["input"] == "streamed"
    # the front: no point dominated by any planned schedule
    ch = search(g, "auto", max_grid=3)
    for c in ch.pareto:
        assert not any(r[2] < c.peak and r[1] < c.macs for r in rows)


def test_search_mobilenet_144_fast():
    g = load("mobilenetv2_050_144")
    t0 = time.perf_counter()
    ch = search(g, "auto")
    took = time.perf_counter() - t0
    assert took <= 10, f"search took {took:.1f} s"
    d = ch.as_dict()
    assert d["extra_macs_ratio"] <= 0.15 and d["peak_sram_bytes"] < d["layerwise_peak_sram_bytes"] / 2


def test_parse():
    assert parse_size("64KiB") == parse_size("64K") == 65536 and parse_size("1MiB") == 1 << 20
    assert parse_patch("3x4@12") == Schedule(12, 3, 4) and parse_patch("AUTO") == "auto"
    with pytest.raises(TinymemError):
        parse_patch("3x@1")
    with pytest.raises(TinymemError):
        parse_size("lots")


def test_stage_points_stop_at_unpatchable_ops():
    g = load("mobilenetv2_035_96")
    pts = stage_points(g)
    assert 5 in pts and 12 in pts and 3 in pts
    assert 6 not in pts  # op 5's output is read again by the ADD at op 9: two tensors would cross
    assert max(pts) < len(g.ops) - 3  # MEAN, FULLY_CONNECTED, SOFTMAX end any stage


# --- the CLI ----------------------------------------------------------------------------------------

def run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_plan_patch_json(capsys):
    code, out, _ = run(["plan", MODELS / "mobilenetv2_035_96.tflite", "--patch", "auto", "--json"], capsys)
    assert code == 0
    d = json.loads(out)
    p = d["patch"]
    assert set(p) >= {"split_op", "grid", "peak_sram_bytes", "layerwise_peak_sram_bytes", "macs", "extra_macs_ratio"}
    assert p["peak_sram_bytes"] == d["peak_sram_bytes"] < p["layerwise_peak_sram_bytes"]
    assert p["extra_macs_ratio"] <= 0.15 and p["macs"] == d["macs"]
    front = d["pareto"]
    assert any(c["grid"] is None for c in front) and any(c["grid"] == p["grid"] and c["split_op"] == p["split_op"] for c in front)
    for a in front:  # not dominated
        assert not any(b["peak_sram_bytes"] < a["peak_sram_bytes"] and b["macs"] < a["macs"] for b in front)


def test_cli_plan_forced_and_budget(capsys, tmp_path):
    model = MODELS / "mobilenetv2_035_96.tflite"
    code, out, _ = run(["plan", model, "--patch", "3x3@12", "--json"], capsys)
    d = json.loads(out)
    assert code == 0 and d["patch"]["grid"] == [3, 3] and d["patch"]["split_op"] == 12
    code, out, _ = run(["plan", model, "--patch", "auto", "--sram", "48KiB", "--json", "--plot", tmp_path / "m.png"], capsys)
    d = json.loads(out)
    assert code == 0 and d["peak_sram_bytes"] <= 48 * 1024 and (tmp_path / "m.png").stat().st_size > 10_000
    # 20 KiB is below every plan holding the 27 KiB input: auto then streams it
    code, out, _ = run(["plan", model, "--patch", "auto", "--sram", "20KiB", "--json"], capsys)
    d = json.loads(out)
    assert code == 0 and d["peak_sram_bytes"] <= 20 * 1024 and d["patch"]["input"] == "streamed"
    code, _, err = run(["plan", model, "--patch", "auto", "--sram", "12KiB"], capsys)
    assert code == 1 and "no schedule fits 12,288 B" in err and "smallest peak any schedule reaches" in err
    assert "with the input streamed" in err
    code, _, err = run(["plan", model, "--patch", "3x3@63"], capsys)
    assert code == 1 and "cannot end a patch stage" in err
    code, _, err = run(["plan", model, "--sram", "64KiB"], capsys)
    assert code == 1 and "try --patch auto" in err
