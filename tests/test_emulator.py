"""Firmware in QEMU, end to end: outputs bit-exact with the host simulation, the profile, the
protocol's error paths, semihosting exit status, and that QEMU is always cleaned up."""
import json
import shutil

import numpy as np
import pytest

from modelgen import ModelBuilder, options, rand_int8
from test_boards import batch_fc, needs_arm_gcc
from test_cli import fc_model
from tinymem.build import platformio as pio
from tinymem.build.emulator import Emulator, boot_check
from tinymem.cli import main
from tinymem.errors import TinymemError
from tinymem.link.frames import Frame, FrameType, chunk_payload, encode
from tinymem.link.run import run_on_board
from tinymem.link.session import Session
from tinymem.model.tflite import parse_tflite
from tinymem.plan import make_plan
from tinymem.sim import build_host
from tinymem.sim.host import sample_shape

pytestmark = [needs_arm_gcc, pytest.mark.skipif(not shutil.which("qemu-system-arm"),
                                                reason="qemu-system-arm missing (apt-get install qemu-system-arm)")]
EMULATED = ["mps2_an385", "mps2_an386", "mps2_an500", "netduinoplus2"]


@pytest.fixture(scope="module")
def fc():
    g = parse_tflite(fc_model(), "fc")
    return g, make_plan(g)


@pytest.fixture(scope="module")
def an386(fc, tmp_path_factory):
    project = pio.render_project(*fc, "mps2_an386", tmp_path_factory.mktemp("an386"))
    return project, pio.build(project)


@pytest.mark.parametrize("board", EMULATED)
def test_outputs_equal_host_simulation_bit_for_bit(board, fc, rng, tmp_path):
    g, plan = fc
    x = rng.integers(-128, 128, size=(3, 24)).astype(np.int8)
    x[2] = x[0]
    expected = build_host(g, plan, tmp_path / "host").run([x])
    run = run_on_board(g, plan, pio.load_board(board), [x], project_dir=tmp_path / "proj")
    assert np.array_equal(run.outputs[0], expected[0])
    p = run.profile
    assert p["board"] == board and p["clock"] == "qemu-icount" and p["unit"] == "instructions" and p["samples"] == 3
    # -icount makes the count repeatable up to the tick's phase: the same sample costs the same
    # instructions, read through a clock of 1e9 / clock_hz instructions per tick.
    ticks = p["invoke"]["ticks"]
    assert abs(ticks[0] - ticks[2]) <= 1 and p["invoke"]["median_instructions"] > 240
    assert p["layers"][0]["op"] == "FULLY_CONNECTED" and 0 < p["layers"][0]["instructions"] <= p["invoke"]["median_instructions"]
    assert 0 < p["stack_high_water_bytes"] < 4096
    assert p["peak_sram_measured_bytes"] == p["ram_static_bytes"] + p["stack_high_water_bytes"]
    assert p["ram_static_bytes"] > p["peak_sram_planned_bytes"] and p["ram_limit_bytes"] == pio.load_board(board).sram_bytes


def fc_chain(rng, ops: int, features: int = 8) -> bytes:
    """`ops` FULLY_CONNECTED layers in a row: more layers than one PROFILE frame carries (31)."""
    m = ModelBuilder()
    x = first = m.tensor([1, features], "int8", 0.05, -3)
    for _ in range(ops):
        w = m.tensor([features, features], "int8", 0.01, 0, rand_int8(rng, (features, features)))
        y = m.tensor([1, features], "int8", 0.1, int(rng.integers(-20, 20)))
        m.op("FULLY_CONNECTED", [x, w, -1], [y], options("FullyConnectedOptions"))
        x = y
    return m.build([first], [x])


@pytest.mark.parametrize("name, model", [("640-byte input and output (3 chunks each)", lambda rng: batch_fc(40)),
                                         ("40 layers (2 profile frames)", lambda rng: fc_chain(rng, 40))],
                         ids=["io-chunks", "profile-frames"])
def test_multi_frame_transfers(name, model, rng, tmp_path):
    g = parse_tflite(model(rng), name)
    plan = make_plan(g)
    x = rng.integers(-128, 128, size=(2,) + sample_shape(g.t(g.inputs[0]).shape)).astype(np.int8)
    expected = build_host(g, plan, tmp_path / "host").run([x])
    run = run_on_board(g, plan, pio.load_board("mps2_an386"), [x], project_dir=tmp_path / "proj")
    assert np.array_equal(run.outputs[0], expected[0])
    layers = run.profile["layers"]
    assert len(layers) == len(g.ops) and all(layer["ticks"] > 0 for layer in layers)
    assert sum(layer["ticks"] for layer in layers) <= min(run.profile["invoke"]["ticks"]) + len(layers)


def test_semihosting_exit_status_and_hello(an386):
    project, built = an386
    with Emulator("mps2-an386", built.elf) as emu:
        s = Session(emu.serial)
        h = s.hello()
        assert (h.board, h.input_bytes, h.output_bytes, h.ops, h.profile) == ("mps2_an386", [24], [10], 1, True)
        assert h.stack_capacity == project.board.sram_bytes - built.ram_static_bytes
        s.exit(7)
        assert emu.wait() == 7


def test_protocol_errors_are_reported_and_the_firmware_survives(an386):
    _, built = an386
    with Emulator("mps2-an386", built.elf) as emu:
        s = Session(emu.serial)
        s.hello()
        emu.serial.write(b"\x05garbage\x00")  # not a valid frame
        with pytest.raises(TinymemError, match="corrupted frame"):
            s.receive()
        s.hello()
        s.send(FrameType.INPUT, chunk_payload(3, 0, b"x"))  # the model has one input
        with pytest.raises(TinymemError, match=r"rejected an input chunk \(input 3"):
            s.receive()
        s.hello()
        s.send(FrameType.INPUT, chunk_payload(0, 20, b"x" * 8))  # runs past the 24-byte input
        with pytest.raises(TinymemError, match="offset 20"):
            s.receive()
        s.hello()
        emu.serial.write(encode(Frame(FrameType.INVOKE, s._seq + 5)))  # a sequence gap
        with pytest.raises(TinymemError, match="board lost a frame"):
            s.receive()
        s.hello()
        s.send(0x7E)
        with pytest.raises(TinymemError, match="does not handle frame type 0x7e"):
            s.receive()
        s.hello()  # still answering
        x = np.arange(-12, 12, dtype=np.int8).reshape(1, 24)
        assert len(s.run([x])[0].outputs[0]) == 10
        s.exit(0)
        assert emu.wait() == 0


def test_qemu_is_cleaned_up_when_the_session_fails(an386):
    _, built = an386
    with pytest.raises(TinymemError):
        with Emulator("mps2-an386", built.elf) as emu:
            proc = emu.proc
            Session(emu.serial, timeout=0.3).receive()  # nothing was asked: times out
    assert proc.poll() is not None


def test_boot_check_and_missing_firmware(an386, tmp_path):
    _, built = an386
    assert boot_check("mps2-an386", built.elf)["board"] == "mps2_an386"
    with pytest.raises(TinymemError, match="no such firmware"):
        Emulator("mps2-an386", tmp_path / "none.elf").start()
    with pytest.raises(TinymemError, match=r"QEMU \(no-such-machine\) did not open its serial port.*machine"):
        Emulator("no-such-machine", built.elf).start()


@pytest.mark.skipif(bool(shutil.which("openocd")), reason="openocd is installed: this would try to flash")
def test_flashing_a_real_board_without_its_tool_is_one_clear_line(fc, tmp_path):
    project = pio.render_project(*fc, "nucleo_f746zg", tmp_path)
    with pytest.raises(TinymemError, match="openocd is not on PATH: install it to flash a nucleo_f746zg board"):
        pio.upload(project)


def test_pio_upload_boots_the_emulated_board(an386):
    project, _ = an386
    log = pio.upload(project)
    assert "booted in QEMU mps2-an386: board mps2_an386" in log


def test_cli_run_flash_boards(tmp_path, capsys, rng):
    model = tmp_path / "fc.tflite"
    model.write_bytes(fc_model())
    x = rng.integers(-128, 128, size=(3, 24)).astype(np.int8)
    np.save(tmp_path / "in.npy", x)
    args = ["run", model, "--board", "mps2_an386", "--input", tmp_path / "in.npy", "--output", tmp_path / "out.npy",
            "--profile", tmp_path / "prof.json", "--project", tmp_path / "proj"]
    assert main([str(a) for a in args]) == 0
    assert main(["sim", str(model), "--input", str(tmp_path / "in.npy"), "--output", str(tmp_path / "sim.npy")]) == 0
    assert np.array_equal(np.load(tmp_path / "out.npy"), np.load(tmp_path / "sim.npy"))
    prof = json.loads((tmp_path / "prof.json").read_text())
    assert {"ram_static_bytes", "stack_high_water_bytes", "peak_sram_measured_bytes", "layers", "clock"} <= set(prof)
    capsys.readouterr()
    assert main(["flash", str(tmp_path / "proj"), "--json"]) == 0
    flashed = json.loads(capsys.readouterr().out)
    assert flashed["hello"]["board"] == "mps2_an386" and flashed["ram_static_bytes"] == prof["ram_static_bytes"]
    assert main(["boards", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["boards"]
    assert {b["board"] for b in listed} >= set(EMULATED) | {"nucleo_f746zg", "nano33ble", "pico"}


@pytest.mark.parametrize("args, message", [
    (["--board", "uno"], "unknown board 'uno'"),
    (["--board", "nucleo_f746zg"], "real hardware: give --port"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, args, message):
    model = tmp_path / "fc.tflite"
    model.write_bytes(fc_model())
    np.save(tmp_path / "in.npy", np.zeros((1, 24), np.int8))
    code = main(["run", str(model), *args, "--input", str(tmp_path / "in.npy"), "--output", str(tmp_path / "o.npy")])
    err = capsys.readouterr().err
    assert code == 1 and message in err and "Traceback" not in err


def test_a_fault_is_reported_with_its_pc_and_exits_3(fc, tmp_path):
    project = pio.render_project(*fc, "mps2_an386", tmp_path)
    main_c = project.dir / "src" / "main.c"
    # Make INVOKE read unmapped memory: a precise BusFault, escalated to HardFault.
    main_c.write_text(main_c.read_text().replace("    tinymem_invoke();", "    (void)*(volatile uint32_t *)0xF0000000u;\n"
                                                 "    tinymem_invoke();"))
    built = pio.build(project)
    with Emulator("mps2-an386", built.elf) as emu:
        s = Session(emu.serial, timeout=5)
        s.hello()
        with pytest.raises(TinymemError, match=r"board faulted at pc 0x[0-9a-f]{8} \(fault status 0x0000[0-9a-f]{2}00\)"):
            s.invoke([bytes(24)])
        assert emu.wait() == 3
