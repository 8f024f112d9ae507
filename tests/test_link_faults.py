"""Faults on the host <-> board link are detected, never turned into a wrong result or a hang.

A proxy (tests/linkfaults.py) sits between the host's Session and the real firmware in QEMU and
damages one chosen frame: a flipped bit, a dropped byte, a dropped frame, a truncated frame, a
board that goes silent, a link that closes. With no retries each fault must raise a one-line
TinymemError naming what went wrong; with retries (the default) the damaged sample is redone and
the outputs are bit-exact; a board that stays silent fails within a bounded time."""
import dataclasses
import random
import shutil
import time

import numpy as np
import pytest
import serial

from linkfaults import TO_BOARD, TO_HOST, Fault, FaultProxy
from test_boards import batch_fc, needs_arm_gcc
from tinymem.build import platformio as pio
from tinymem.build.emulator import Emulator
from tinymem.errors import TinymemError
from tinymem.link.frames import FrameType as T
from tinymem.link.frames import chunk_payload
from tinymem.link.session import LinkClosed, LinkError, Session
from tinymem.model.tflite import parse_tflite
from tinymem.plan import make_plan
from tinymem.sim import build_host

pytestmark = [needs_arm_gcc, pytest.mark.skipif(not shutil.which("qemu-system-arm"), reason="qemu-system-arm missing")]
# The model runs in milliseconds and a frame crosses in a few, but QEMU's UART moves one byte per
# thread hand-off: with the cores oversubscribed a 265-byte frame took over a second. 2 s of
# silence is a fault; any less and a busy CI machine would see faults that are not there.
TIMEOUT, INVOKE_TIMEOUT = 2.0, 3.0


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """640-byte input and output: three chunks each way, so a fault can land mid-tensor."""
    g = parse_tflite(batch_fc(40), "fc40")
    plan = make_plan(g)
    x = np.random.default_rng(1).integers(-128, 128, size=(6, 40, 16)).astype(np.int8)
    expected = build_host(g, plan, tmp_path_factory.mktemp("host")).run([x])[0]
    return g, plan, x, expected


def firmware(model, tmp_path_factory, window: int):
    g, plan, _, _ = model
    board = dataclasses.replace(pio.load_board("mps2_an386"), rx_window=window)
    project = pio.render_project(g, plan, board, tmp_path_factory.mktemp(f"fw{window}"))
    return pio.build(project).elf


@pytest.fixture(scope="module")
def elf(model, tmp_path_factory):
    """One frame in flight, as on real boards: each fault then has one predictable symptom.
    The random-fault test also runs the emulated boards' default window of 4."""
    return firmware(model, tmp_path_factory, 1)


class Link:
    """QEMU + proxy + Session, torn down whatever happens."""

    def __init__(self, elf, faults, retries):
        self.emu = Emulator("mps2-an386", elf).start()
        try:
            self.proxy = FaultProxy(self.emu.serial, faults)
            self.port = serial.serial_for_url(self.proxy.url, timeout=0)
        except Exception:
            self.emu.close()
            raise
        self.session = Session(self.port, timeout=TIMEOUT, retries=retries, invoke_timeout=INVOKE_TIMEOUT)

    def close(self):
        self.port.close()
        self.proxy.close()
        self.emu.close()


@pytest.fixture
def link(elf):
    made = []

    def make(faults=(), retries=0):
        made.append(Link(elf, list(faults), retries))
        return made[-1]
    yield make
    for lk in made:
        lk.close()


CASES = [  # (fault, what the one-line error says with no retry)
    (Fault(TO_BOARD, T.INPUT, "flip", 2), "board received a corrupted frame"),
    (Fault(TO_BOARD, T.INPUT, "drop_byte", 2), "board received a corrupted frame"),
    (Fault(TO_BOARD, T.INPUT, "truncate", 1), "stopped answering: no ACK within"),  # the board waits for the rest
    (Fault(TO_BOARD, T.INPUT, "drop_frame", 3), "stopped answering: no ACK within"),  # the last chunk: no ACK comes
    (Fault(TO_BOARD, T.INVOKE, "flip"), "board received a corrupted frame"),
    (Fault(TO_HOST, T.ACK, "flip", 2), "corrupted frame from the board"),
    (Fault(TO_HOST, T.OUTPUT, "drop_byte", 2), "corrupted frame from the board"),
    (Fault(TO_HOST, T.OUTPUT, "drop_frame", 2), "lost a frame from the board: expected sequence"),
    (Fault(TO_HOST, T.PROFILE, "flip"), "corrupted frame from the board"),
    (Fault(TO_HOST, T.DONE, "truncate"), "stopped answering: no answer to INVOKE within"),
]


def ids(cases):
    return [f"{f.direction}-{T(f.frame_type).name}-{f.kind}" for f, _ in cases]


@pytest.mark.parametrize("fault, message", CASES, ids=ids(CASES))
def test_each_fault_is_detected_then_recovered(fault, message, link, model):
    _, _, x, expected = model
    lk = link([fault], retries=0)
    lk.session.hello()
    with pytest.raises(LinkError, match=message) as err:
        lk.session.invoke([x[0].tobytes()])
    assert "\n" not in str(err.value) and lk.proxy.applied == [fault]

    lk = link([fault], retries=2)
    out = lk.session.run([x[:2]])
    assert [o.outputs[0] for o in out] == [e.tobytes() for e in expected[:2]]
    assert lk.session.stats.retries >= 1 and lk.proxy.applied == [fault]


@pytest.mark.parametrize("direction, frame_type", [(TO_HOST, T.OUTPUT), (TO_BOARD, T.INPUT), (TO_BOARD, T.INVOKE)])
def test_a_board_that_stops_answering_fails_in_bounded_time(direction, frame_type, link, model):
    _, _, x, _ = model
    lk = link([Fault(direction, frame_type, "silence")], retries=2)
    start = time.monotonic()
    with pytest.raises(LinkError, match=r"the board stopped answering: after '.*' it did not answer PING within 2.0 s"):
        lk.session.run([x[:1]])
    # one late answer (at most the invoke deadline) + one PING deadline; no retry loop beyond it
    assert time.monotonic() - start < INVOKE_TIMEOUT + TIMEOUT + 1.5


def test_a_closed_link_is_final(link, model):
    _, _, x, _ = model
    lk = link([Fault(TO_HOST, T.OUTPUT, "cut")], retries=2)
    with pytest.raises(LinkClosed, match="the serial link closed"):
        lk.session.run([x[:1]])
    assert lk.session.stats.retries == 0


@pytest.mark.parametrize("window", [1, 4])
def test_random_faults_never_give_a_wrong_result(window, model, elf, tmp_path_factory):
    """A random fault in every sample, either way, on any frame type: each is detected, the sample
    redone once, and every output comes back bit-exact."""
    _, _, x, expected = model
    fw = elf if window == 1 else firmware(model, tmp_path_factory, window)
    rng = random.Random(window)
    targets = [(TO_BOARD, T.INPUT, 3), (TO_BOARD, T.INVOKE, 1), (TO_HOST, T.ACK, 3), (TO_HOST, T.OUTPUT, 3),
               (TO_HOST, T.PROFILE, 1), (TO_HOST, T.MEMORY, 1), (TO_HOST, T.DONE, 1)]
    lk = Link(fw, [], retries=3)  # one for the fault, the rest for a slow machine's late frames
    try:
        assert lk.session.hello().window == window
        for k in range(len(x)):
            direction, frame_type, per_sample = rng.choice(targets)
            lk.proxy.schedule(direction, frame_type, rng.choice(["flip", "drop_byte", "drop_frame", "truncate"]),
                              rng.randint(1, per_sample))
            assert lk.session.invoke([x[k].tobytes()]).outputs[0] == expected[k].tobytes()
        assert len(lk.proxy.applied) == len(x) <= lk.session.stats.retries, lk.session.stats.faults
    finally:
        lk.close()


def test_firmware_refuses_to_invoke_on_partial_or_reused_inputs(link, model):
    """The firmware's own guard, without any fault: INVOKE needs every input byte since the last one."""
    _, _, x, expected = model
    lk = link()
    s = lk.session
    s.hello()
    assert any("is up" in text for text in s.logs)  # the boot LOG frame was read and set aside
    data = x[0].tobytes()
    s.send(T.INPUT, chunk_payload(0, 0, data[:251]))
    s._expect(T.ACK)
    s.send(T.INVOKE)
    with pytest.raises(TinymemError, match="board refused to invoke: 251 of 640 input bytes arrived intact"):
        s.receive()
    s.hello()
    assert s.invoke([data]).outputs[0] == expected[0].tobytes()
    s.send(T.INVOKE)  # again, without new inputs: the arena may have overwritten them
    with pytest.raises(TinymemError, match="refused to invoke: 0 of 640"):
        s.receive()


def test_c_and_python_agree_on_frame_types_and_error_codes():
    """protocol.h and frames.py are the two halves of one protocol: the same numbers, name for name."""
    import re
    from pathlib import Path

    from tinymem.link.frames import PROTOCOL_VERSION, ErrorCode

    header = (Path(__file__).resolve().parents[1] / "firmware" / "runtime" / "protocol.h").read_text()
    frames = {name: int(v, 16) for name, v in re.findall(r"TM_FRAME_([A-Z]+) = (0x[0-9A-Fa-f]+)", header)}
    errors = {name: int(v) for name, v in re.findall(r"TM_ERR_([A-Z_]+) = (\d+)", header)}
    assert frames == {t.name: t.value for t in T}
    assert errors == {e.name: e.value for e in ErrorCode}
    assert re.search(rf"TM_PROTOCOL_VERSION {PROTOCOL_VERSION}u", header)
