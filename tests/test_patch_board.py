"""Patch-based inference on the emulated 256 KB board (mps2_an386 in QEMU): a model whose
layer-wise plan does not fit the board runs with `tinymem run --patch auto`, bit-exact with LiteRT,
and the RAM the firmware measures (static RAM + stack high water) confirms the plan. With the input
streamed, the board asks the host for each window over the serial link: damaged or lost window
frames are detected and the sample redone, a window it did not ask for is refused."""
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import serial

from linkfaults import TO_BOARD, TO_HOST, Fault
from reference import litert_run
from test_boards import needs_arm_gcc
from test_patch_models import mobilenet_like, random_cnn
from tinymem.link.frames import FrameType as T
from tinymem.link.session import BoardError, LinkError
from tinymem.build.boards import load_board
from tinymem.build.platformio import check_fits, runtime_ram_bytes
from tinymem.cli import main
from tinymem.errors import TinymemError
from tinymem.model.tflite import parse_tflite
from tinymem.plan import make_plan
from tinymem.plan.patch_search import search

MODELS = Path(__file__).resolve().parent.parent / "models"
pytestmark = [needs_arm_gcc, pytest.mark.skipif(not shutil.which("qemu-system-arm"),
                                                reason="qemu-system-arm missing (apt-get install qemu-system-arm)")]


def test_too_big_layer_wise_runs_patch_based(tmp_path, capsys):
    model = mobilenet_like(160)
    g = parse_tflite(model, "mobilenet_like_160")
    board = load_board("mps2_an386")
    with pytest.raises(TinymemError, match="does not fit board"):
        check_fits(make_plan(g), board)
    path = tmp_path / "m.tflite"
    path.write_bytes(model)
    x = np.random.default_rng(0).integers(-128, 128, (2, 160, 160, 3)).astype(np.int8)
    np.save(tmp_path / "in.npy", x)
    code = main(["run", str(path), "--board", "mps2_an386", "--patch", "auto", "--input", str(tmp_path / "in.npy"),
                 "--output", str(tmp_path / "out.npy"), "--profile", str(tmp_path / "prof.json")])
    assert code == 0, capsys.readouterr()
    assert np.array_equal(np.load(tmp_path / "out.npy"), litert_run(model, [x])[0])
    prof = json.loads((tmp_path / "prof.json").read_text())
    plan = search(g, "auto").plan
    assert prof["peak_sram_planned_bytes"] == plan.peak_sram_bytes < make_plan(g).peak_sram_bytes
    # measured: the arena plus the runtime's static RAM (protocol buffers, profile counters), and the stack
    assert plan.peak_sram_bytes < prof["ram_static_bytes"] <= plan.peak_sram_bytes + runtime_ram_bytes(plan, board, True)
    assert prof["peak_sram_measured_bytes"] == prof["ram_static_bytes"] + prof["stack_high_water_bytes"] <= board.sram_bytes
    assert prof["stack_high_water_bytes"] < 2048  # per-patch params structs live on the stack, one at a time


# --- input streaming: the board asks the host for each window --------------------------------------

def test_zoo_model_streams_its_input_on_the_board(tmp_path, capsys):
    """MobileNetV2-0.35-96 with --stream-input: the board holds no whole image (its measured RAM is
    the plan, which leaves the 27 KiB input out, plus the runtime), outputs equal LiteRT's, and the
    profile times each op of the patch stage on its own."""
    name = "mobilenetv2_035_96"
    path = MODELS / f"{name}.tflite"
    x = np.load(MODELS / f"{name}.inputs.npy")[:1]
    np.save(tmp_path / "in.npy", x)
    code = main(["run", str(path), "--board", "mps2_an386", "--patch", "auto", "--stream-input", "--input",
                 str(tmp_path / "in.npy"), "--output", str(tmp_path / "out.npy"), "--profile", str(tmp_path / "p.json")])
    assert code == 0, capsys.readouterr()
    assert np.array_equal(np.load(tmp_path / "out.npy"), litert_run(path.read_bytes(), [x])[0])
    prof = json.loads((tmp_path / "p.json").read_text())
    g = parse_tflite(path.read_bytes(), name)
    image = g.t(g.inputs[0]).nbytes
    planned = prof["plan"]["peak_sram_bytes"]  # planned for the board's kernels, which `run` picks
    assert prof["within_plan_bound"]
    assert prof["peak_sram_measured_bytes"] - planned < image // 4  # runtime and stack, no image
    stage = prof["patch_stage"]
    assert stage["input"] == "streamed" and stage["ops"][0] == 0
    assert prof["link"]["input_bytes"] == 0 and prof["link"]["windows"] == stage["patches"] > 1
    assert prof["link"]["window_bytes"] >= image  # halos overlap
    ops = [layer["instructions"] for layer in prof["layers"][: stage["ops"][1] + 1]]
    assert stage["instructions"] == sum(ops) and min(ops) > 0 and stage["instructions"] < prof["total_instructions"]


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    """A small CNN whose input streams in 3 windows of 2,016 B (9 chunks each), and its firmware."""
    from tinymem.build import platformio as pio

    rng = np.random.default_rng(0)
    model = random_cnn(rng, n_ops=6, size=(36, 30))
    g = parse_tflite(model, "streamed")
    plan = search(g, "auto", stream=True, max_grid=3).plan
    assert plan.patch.streamed == g.inputs and plan.patch.schedule.patches == 3
    x = np.random.default_rng(1).integers(-128, 128, (6, 36, 30, 4)).astype(np.int8)
    project = pio.render_project(g, plan, "mps2_an386", tmp_path_factory.mktemp("streamed"))
    return pio.build(project).elf, x, litert_run(model, [x])[0]


class StreamLink:
    """QEMU + fault proxy + Session for the streaming firmware, torn down whatever happens."""

    def __init__(self, elf, faults=(), retries=0):
        from linkfaults import FaultProxy
        from tinymem.build.emulator import Emulator
        from tinymem.link.session import Session

        self.emu = Emulator("mps2-an386", elf).start()
        self.proxy = FaultProxy(self.emu.serial, list(faults))
        self.port = serial.serial_for_url(self.proxy.url, timeout=0)
        self.session = Session(self.port, timeout=3.0, retries=retries, invoke_timeout=5.0)

    def run(self, x):
        return [r.outputs[0] for r in self.session.run([x])]

    def close(self):
        self.port.close()
        self.proxy.close()
        self.emu.close()


@pytest.fixture
def stream_link(streamed):
    made = []

    def make(faults=(), retries=0):
        made.append(StreamLink(streamed[0], faults, retries))
        return made[-1]
    yield make
    for lk in made:
        lk.close()


STREAM_FAULTS = [  # a damaged window request or window chunk: what the one-line error says with no retry
    (Fault(TO_BOARD, T.WINDOW, "flip", 4), "board received a corrupted frame"),
    (Fault(TO_BOARD, T.WINDOW, "drop_frame", 12), "board lost a frame|stopped answering: no ACK"),
    (Fault(TO_BOARD, T.WINDOW, "truncate", 18), "board received a corrupted frame|stopped answering: no ACK"),
    (Fault(TO_HOST, T.READ, "flip", 2), "corrupted frame from the board"),
    (Fault(TO_HOST, T.READ, "drop_frame", 3), "lost a frame from the board|stopped answering"),
]


@pytest.mark.parametrize("fault, message", STREAM_FAULTS,
                         ids=[f"{f.direction}-{T(f.frame_type).name}-{f.kind}" for f, _ in STREAM_FAULTS])
def test_streamed_window_faults_are_detected_then_redone(fault, message, stream_link, streamed):
    _, x, expected = streamed
    lk = stream_link([fault], retries=0)
    with pytest.raises(LinkError, match=message) as err:
        lk.run(x[:1])
    assert "\n" not in str(err.value) and lk.proxy.applied == [fault]
    lk = stream_link([fault], retries=2)
    assert lk.run(x[:2]) == [e.tobytes() for e in expected[:2]]
    assert lk.session.stats.retries >= 1


def test_board_rejects_a_window_it_did_not_ask_for(stream_link, streamed):
    """A WINDOW chunk at the wrong offset is refused (final), and the board serves the next session."""
    from tinymem.link.frames import READ_REQUEST, chunk_payload

    _, x, expected = streamed
    s = stream_link().session
    s.hello()
    s.send(T.INVOKE)
    req = s._expect(T.READ)
    index, y0, y1, x0, x1 = READ_REQUEST.unpack(req.payload)
    assert (index, y0, x0) == (0, 0, 0) and y1 == 36 and 0 < x1 < 30  # the first of 1x3 patches
    s.send(T.WINDOW, chunk_payload(0, 7, b"\0" * 16))
    with pytest.raises(BoardError, match=r"board rejected an input chunk \(input 0, offset 0\)"):
        s.receive()
    s.hello()
    assert s.invoke([x[0].tobytes()], [x.shape[1:]]).outputs[0] == expected[0].tobytes()


def test_random_stream_faults_never_give_a_wrong_result(stream_link, streamed):
    _, x, expected = streamed
    lk = stream_link(retries=3)
    rng = random.Random(5)
    targets = [(TO_BOARD, T.WINDOW, 27), (TO_HOST, T.READ, 3), (TO_HOST, T.ACK, 27), (TO_HOST, T.OUTPUT, 1),
               (TO_HOST, T.DONE, 1)]
    for k in range(len(x)):
        direction, frame_type, per_sample = rng.choice(targets)
        lk.proxy.schedule(direction, frame_type, rng.choice(["flip", "drop_byte", "drop_frame", "truncate"]),
                          rng.randint(1, per_sample))
        assert lk.session.invoke([x[k].tobytes()], [x.shape[1:]]).outputs[0] == expected[k].tobytes()
    assert len(lk.proxy.applied) == len(x) <= lk.session.stats.retries, lk.session.stats.faults
