"""Input streaming for patch-based inference (--stream-input): the model input never sits in the
arena; each patch fetches its window (halo included) through tinymem_read_input().

Checked against independent references: outputs bit for bit against LiteRT BUILTIN_REF (random
models x random streamed schedules under ASan/UBSan with the arena sized exactly to the plan, and
the zoo); each fetched window against receptive-field masks pushed back from the patch; the
plan's peak by painting every live byte of every step from first principles; flash against the
symbols of the compiled model; the link's window requests against a fake board."""
import json
import socket
import struct
import subprocess
import threading
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import serial

from harness import random_inputs
from reference import litert_run
from test_patch_exact import assert_patch_exact
from test_patch_models import random_cnn
from test_patch_plan import bbox, check_windows, mask_need
from tinymem.cli import main
from tinymem.errors import TinymemError
from tinymem.link.frames import PROTOCOL_VERSION, READ_REQUEST, Frame, FrameReader, FrameType, encode
from tinymem.link.session import Session
from tinymem.model.tflite import parse_tflite
from tinymem.ops import opdef
from tinymem.plan import make_plan
from tinymem.plan.patch import Analysis, Schedule, make_patch_plan, stage_estimate, stage_plan
from tinymem.plan.patch_search import enumerate_schedules, search
from tinymem.sim.host import WARN_FLAGS, host_cc

MODELS = Path(__file__).resolve().parent.parent / "models"


def load(name):
    return parse_tflite((MODELS / f"{name}.tflite").read_bytes(), name)


def streamed_schedules(rng, g, n, max_grid=5):
    an = Analysis(g)
    scheds = [s for s in enumerate_schedules(an, max_grid, stream=True) if stage_plan(an, s, exact=False) is not None]
    picks = [scheds[int(k)] for k in rng.choice(len(scheds), size=min(n, len(scheds)), replace=False)] if scheds else []
    return an, picks


def random_streamed(seed: int, n: int):
    """A random CNN of 4-8 ops (seeded) and up to n of its streamed schedules: (g, analysis, picks)."""
    rng = np.random.default_rng(seed)
    g = parse_tflite(random_cnn(rng, n_ops=int(rng.integers(4, 9))), "random")
    return (g, *streamed_schedules(rng, g, n))


# --- bit-exact ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(12))
def test_random_models_streamed_schedules(seed, tmp_path):
    rng = np.random.default_rng(4000 + seed)
    model = random_cnn(rng)
    g = parse_tflite(model, "random")
    _, picks = streamed_schedules(rng, g, 1)
    if not picks:
        pytest.skip("no streamable schedule on this draw")
    plan = assert_patch_exact(model, picks[0], random_inputs(g, rng, 2), tmp_path)
    assert plan.patch.streamed == g.inputs and plan.peak_sram_bytes == plan.arena_bytes


@pytest.mark.parametrize("name,sched", [
    ("mobilenetv2_050_144", None),  # --patch auto --stream-input: the 8x goal's schedule
    ("mobilenetv2_035_96", Schedule(5, 4, 4, stream=True)),  # a 3x3 stride-2 stem on 96x96 windows
    ("mcunet_like", Schedule(12, 3, 4, stream=True)),
])
def test_zoo_streamed(name, sched, tmp_path):
    model = (MODELS / f"{name}.tflite").read_bytes()
    g = parse_tflite(model, name)
    x = np.load(MODELS / f"{name}.inputs.npy")[:2]
    plan = search(g, "auto", stream=True).plan if sched is None else sched
    plan = assert_patch_exact(model, plan, [x], tmp_path, sanitize=False, name=name)
    assert plan.patch.streamed == g.inputs


def test_sim_cli_streams(tmp_path, capsys):
    model = MODELS / "mobilenetv2_035_96.tflite"
    x = np.load(MODELS / "mobilenetv2_035_96.inputs.npy")[:2]
    np.save(tmp_path / "in.npy", x)
    code = main(["sim", str(model), "--patch", "auto", "--stream-input", "--input", str(tmp_path / "in.npy"),
                 "--output", str(tmp_path / "out.npy"), "--keep", str(tmp_path / "c")])
    assert code == 0, capsys.readouterr()
    assert np.array_equal(np.load(tmp_path / "out.npy"), litert_run(model.read_bytes(), [x])[0])
    assert "(input streamed)" in capsys.readouterr().out
    header = (tmp_path / "c" / "tinymem_model.h").read_text()
    assert "#define TINYMEM_STREAMED_INPUTS 0x1u" in header and "tinymem_read_input" in header


# --- windows and the plan -----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_streamed_windows_match_masks(seed):
    """The window each patch fetches is exactly the bounding box of the input pixels its taps read."""
    g, an, picks = random_streamed(4100 + seed, 3)
    for sched in picks:
        assert check_windows(g, an, sched)
        sp = stage_plan(an, sched)
        for i in range(sched.rows):
            for j in range(sched.cols):
                for x in sp.streamed:
                    assert sp.stored(i, j, x) == sp.need(i, j, x)


def independent_regions(g, plan):
    """(first step, last step, offset, size, tensor or scratch label) of every region the arena holds,
    from first principles: a streamed input as its largest window (the masks' bounding boxes) from
    its first reader to its last, every stage tensor as its largest stored window, the split tensor
    whole from step 0, later tensors whole over their lifetimes; scratch at its op."""
    sp = plan.patch
    st = sp.stage
    n, k = len(g.ops), st.split_op
    readers = {}
    for op in g.ops:
        for i in op.inputs:
            if i >= 0 and not g.t(i).is_const:
                readers.setdefault(i, []).append(op.index)
    producer = {op.outputs[0]: op.index for op in g.ops}
    lb, tb, off = sp.local_buffer, plan.lifetimes.tensor_buffer, plan.offsets
    out = []
    for t in sorted({i for op in g.ops for i in op.inputs + op.outputs if i >= 0 and not g.t(i).is_const}):
        last = max(readers.get(t, []) + ([n - 1] if t in g.outputs else []))
        if t in sp.streamed:
            boxes = []
            for i in range(sp.schedule.rows):
                for j in range(sp.schedule.cols):
                    pw = sp.patch_window(i, j)
                    mask = np.zeros(g.t(st.split).shape[1:3], bool)
                    mask[pw.y0:pw.y1, pw.x0:pw.x1] = True
                    boxes.append(bbox(mask_need(g, st, mask)[t]))
            size = max(b[1] - b[0] for b in boxes) * max(b[3] - b[2] for b in boxes) * g.t(t).shape[3]
            assert t not in tb, "a streamed input has no whole buffer"
            out.append((min(readers[t]), last, off[lb[t]], size, t))
        elif t in g.inputs:
            out.append((0, max(last, k), off[tb[t]], g.t(t).nbytes, t))
        elif t == st.split:
            out.append((0, last, off[tb[t]], g.t(t).nbytes, t))
            if not sp.direct:
                out.append((k, k, off[lb[t]], sp.local_size[t], t))
        elif producer[t] <= k:
            ws = [sp.stored(i, j, t) for i in range(sp.schedule.rows) for j in range(sp.schedule.cols)]
            size = max(w.h for w in ws) * max(w.w for w in ws) * g.t(t).shape[3]
            out.append((producer[t], last, off[tb[t]], size, t))
        else:
            out.append((producer[t], last, off[tb[t]], g.t(t).nbytes, t))
    for s, op in enumerate(g.ops):
        size = opdef(op).scratch_bytes(op, g)
        if size:
            out.append((s, s, plan.scratch_offset(s), size, f"scratch {s}"))
    return out


def paint(g, plan):
    """Paint every live byte of every step; two regions may share a byte only where an op writes its
    output over an input it reads for the last time (the in-place rules, proven by the bit-exact
    runs). Returns the bytes live per step."""
    regions = independent_regions(g, plan)
    live = []
    for s, op in enumerate(g.ops):
        now = [r for r in regions if r[0] <= s <= r[1]]
        canvas = np.zeros(max(o + n for _, _, o, n, _ in now), np.int16)
        for _, _, o, n, _ in now:
            canvas[o:o + n] += 1
        for a, b in combinations(now, 2):
            if a[2] < b[2] + b[3] and b[2] < a[2] + a[3]:
                pair = {a[4], b[4]}
                ok = op.outputs[0] in pair and (pair - {op.outputs[0]}) <= set(op.inputs) and \
                    all(r[1] == s for r in (a, b) if r[4] != op.outputs[0])
                assert ok, f"step {s}: {a[4]} and {b[4]} share arena bytes"
        assert canvas.size <= plan.arena_bytes
        live.append(int((canvas > 0).sum()))
    return live


@pytest.mark.parametrize("name,sched", [
    ("mobilenetv2_050_144", Schedule(12, 3, 4, stream=True)),
    ("mobilenetv2_035_96", Schedule(9, 2, 4, stream=True)),
    ("mobilenetv2_035_96", Schedule(5, 4, 1, stream=True)),  # one column: op K writes the split directly
    ("mcunet_like", Schedule(12, 3, 4, stream=True)),
])
def test_streamed_peak_painted(name, sched):
    g = load(name)
    an = Analysis(g)
    plan = make_patch_plan(g, sched, an=an)
    live = paint(g, plan)
    assert live == [layer.live_bytes for layer in plan.layers]
    assert max(live) <= plan.peak_sram_bytes == plan.arena_bytes <= max(live) + 64  # up to alignment
    assert stage_estimate(g, stage_plan(an, sched, exact=False)) <= plan.arena_bytes
    # what streaming buys: the arena-input plan of the same grid holds the whole input besides
    held = make_patch_plan(g, Schedule(sched.split_op, sched.rows, sched.cols), an=an)
    assert held.peak_sram_bytes - plan.peak_sram_bytes >= g.t(g.inputs[0]).nbytes - max(plan.patch.local_size.values())
    if name == "mobilenetv2_050_144":  # the whole 144x144x3 image (60.8 KiB) is more than the streamed peak
        assert plan.peak_sram_bytes < g.t(g.inputs[0]).nbytes


@pytest.mark.parametrize("seed", range(6))
def test_streamed_peak_painted_random(seed):
    g, an, picks = random_streamed(4200 + seed, 4)
    for sched in picks:
        plan = make_patch_plan(g, sched, an=an, quick=True)
        assert paint(g, plan) == [layer.live_bytes for layer in plan.layers]
        assert stage_estimate(g, stage_plan(an, sched, exact=False)) <= plan.arena_bytes


def test_search_streams_when_the_budget_needs_it():
    g = load("mobilenetv2_050_144")
    held = search(g, "auto")
    assert not held.schedule.stream  # without a budget, the input stays where the application put it
    ch = search(g, "auto", stream=True)
    d = ch.as_dict()
    assert d["input"] == "streamed" and d["extra_macs_ratio"] <= 0.15
    assert d["peak_sram_bytes"] < held.plan.peak_sram_bytes - 50_000
    budget = search(g, "auto", sram=d["peak_sram_bytes"])  # no in-arena schedule fits that: auto streams
    assert budget.schedule.stream and budget.plan.peak_sram_bytes <= d["peak_sram_bytes"]
    assert budget.plan.macs <= ch.plan.macs
    with pytest.raises(TinymemError, match="needs a patch stage"):
        search(g, "off", stream=True)


def test_inputs_read_after_the_stage_cannot_stream():
    """A residual ADD reading the input after the split: its whole input must stay."""
    rng = np.random.default_rng(7)
    from test_patch_models import _Net

    net = _Net(rng, 12, 12, 4)
    x = net.cur
    net.conv(k=(3, 3), stride=(1, 1), out_c=4)
    net.conv(k=(3, 3), stride=(1, 1), out_c=4)
    net.add_to(x)
    g = parse_tflite(net.build(), "residual")
    with pytest.raises(TinymemError, match=r"cannot stream its input: .* is read again after the patch stage by"):
        make_patch_plan(g, Schedule(1, 2, 2, stream=True))
    assert all(s.split_op == 2 for s in enumerate_schedules(Analysis(g), 3, stream=True))


def test_flash_counts_the_patch_tables(tmp_path):
    """flash_bytes = every constant the compiled model holds (weights, parameters, per-patch tables),
    read from the object's symbols; the params structs are left out on both sides."""
    g = load("mobilenetv2_035_96")
    from codegen import render_model

    for sched in (Schedule(9, 2, 4, stream=True), Schedule(12, 3, 5)):
        plan = make_patch_plan(g, sched)
        out = tmp_path / sched.label.replace("@", "_")
        render_model(g, plan, out)
        obj = out / "model.o"
        subprocess.run([host_cc(), *WARN_FLAGS, "-O0", "-c", str(out / "tinymem_model.c"), "-I", str(out), "-o", str(obj)],
                       check=True, capture_output=True)
        syms = subprocess.run(["nm", "-S", str(obj)], check=True, capture_output=True, text=True).stdout.split("\n")
        sizes = [int(p[1], 16) for p in (ln.split() for ln in syms) if len(p) == 4 and p[2] in "rR"
                 and not p[3].endswith("_params")]
        tables = sum(plan.patch.code.table_bytes.values())
        assert tables > 0 and sum(sizes) == plan.flash_bytes == make_plan(g).flash_bytes + tables


def test_plan_cli_reports_the_input(capsys):
    model = str(MODELS / "mobilenetv2_035_96.tflite")
    assert main(["plan", model, "--patch", "2x4@9", "--stream-input", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["patch"]["input"] == "streamed" and all(c["input"] in ("arena", "streamed") for c in d["pareto"])
    assert main(["plan", model, "--patch", "2x4@9", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["patch"]["input"] == "arena"
    assert main(["plan", model, "--stream-input"]) == 1
    assert "--stream-input needs a patch stage" in capsys.readouterr().err


# --- the link: a fake board asks for windows --------------------------------------------------------

class FakeBoard(threading.Thread):
    """Speaks the board side of the protocol over TCP: a model with one streamed [4, 5, 2] input
    and a 1-byte output; on INVOKE it asks for the windows it was given, then answers DONE."""

    SHAPE = (4, 5, 2)

    def __init__(self, requests, streamed=1):
        super().__init__(daemon=True)
        self.requests, self.streamed, self.got = requests, streamed, []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.server.getsockname()[1]}"
        self.start()

    def run(self):
        conn, _ = self.server.accept()
        reader, seq, pending = FrameReader(), 0, list(self.requests)
        c = self.SHAPE[2]

        def send(ftype, payload=b""):
            nonlocal seq
            conn.sendall(encode(Frame(ftype, seq, payload)))
            seq += 1

        def next_request():  # one window at a time, as the firmware asks
            if pending:
                send(FrameType.READ, READ_REQUEST.pack(*pending[0]))
                self.got.append(b"")
            else:
                send(FrameType.OUTPUT, struct.pack("<BI", 0, 0) + b"\x07")
                send(FrameType.MEMORY, struct.pack("<5I", 0, 0, 0, 0, 0))
                send(FrameType.DONE, struct.pack("<QQ", 10, 4))

        with conn:
            while data := conn.recv(4096):
                for f in reader.feed(data):
                    if f.type == FrameType.PING:
                        head = struct.pack("<6BHIIIHH", PROTOCOL_VERSION, 0, 0, 1, 1, 4, 1, 25_000_000, 64, 4096,
                                           f.seq, self.streamed)
                        send(FrameType.HELLO, head + struct.pack("<II", int(np.prod(self.SHAPE)), 1) + b"fake")
                    elif f.type == FrameType.INPUT:
                        send(FrameType.ACK, struct.pack("<H", f.seq))
                    elif f.type == FrameType.INVOKE:
                        next_request()
                    elif f.type == FrameType.WINDOW:
                        self.got[-1] += f.payload[5:]
                        send(FrameType.ACK, struct.pack("<H", f.seq))
                        _, y0, y1, x0, x1 = pending[0]
                        if len(self.got[-1]) == (y1 - y0) * (x1 - x0) * c:
                            pending.pop(0)
                            next_request()


def fake_session(board):
    port = serial.serial_for_url(board.url, timeout=0)
    return port, Session(port, timeout=2.0, retries=0, invoke_timeout=2.0)


def test_link_serves_windows_row_major():
    board = FakeBoard([(0, 1, 3, 2, 5), (0, 0, 4, 0, 1)])
    port, s = fake_session(board)
    with port:
        x = np.arange(40, dtype=np.int8).reshape(1, *FakeBoard.SHAPE)
        (inv,) = s.run([x])
        assert inv.outputs == [b"\x07"] and (inv.ticks, inv.read_ticks) == (10, 4)
        assert board.got == [x[0, 1:3, 2:5].tobytes(), x[0, 0:4, 0:1].tobytes()]
        assert s.stats.input_bytes == 0 and s.stats.windows == 2  # the input itself never crossed


@pytest.mark.parametrize("request_, streamed, message", [
    ((0, 2, 6, 0, 5), 1, r"board asked for rows 2\.\.6, columns 0\.\.5 of input 0 \[4, 5, 2\]: outside the input"),
    ((0, 3, 3, 0, 5), 1, r"rows 3\.\.3, columns 0\.\.5 of input 0 \[4, 5, 2\]: outside the input"),
    ((1, 0, 1, 0, 1), 1, "board asked for a window of input 1, which this model does not stream"),
    ((0, 0, 1, 0, 1), 0, "board asked for a window of input 0, which this model does not stream"),
])
def test_link_window_out_of_range_is_a_clear_error(request_, streamed, message):
    board = FakeBoard([request_], streamed)
    port, s = fake_session(board)
    with port, pytest.raises(TinymemError, match=message) as err:
        s.run([np.zeros((1, *FakeBoard.SHAPE), np.int8)])
    assert "\n" not in str(err.value)
