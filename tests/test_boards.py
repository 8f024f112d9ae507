"""Board files, PlatformIO projects with no registry, and the two RAM guards (plan time, link time).

Every board in boards/ must build and link (real boards: build only); emulated boards are
run in QEMU by tests/test_emulator.py."""
import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from modelgen import ModelBuilder, options, rand_int8
from test_cli import fc_model
from tinymem.build import platformio as pio
from tinymem.build.boards import BOARDS_DIR, SRAM_LIMIT, board_ids, list_boards, load_board
from tinymem.errors import TinymemError
from tinymem.model.tflite import parse_tflite
from tinymem.plan import make_plan

BOARDS = ["mps2_an385", "mps2_an386", "mps2_an500", "netduinoplus2", "nucleo_f746zg", "nano33ble", "pico"]
needs_arm_gcc = pytest.mark.skipif(not shutil.which("arm-none-eabi-gcc"),
                                   reason="arm-none-eabi-gcc missing (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi)")


def batch_fc(batches: int, features: int = 16) -> bytes:
    """An FC model whose arena grows with `batches` while its weights stay tiny: RAM without flash."""
    rng = np.random.default_rng(0)
    m = ModelBuilder()
    x = m.tensor([batches, features], "int8", 0.05, -3)
    w = m.tensor([features, features], "int8", 0.01, 0, rand_int8(rng, (features, features)))
    y = m.tensor([batches, features], "int8", 0.1, 7)
    m.op("FULLY_CONNECTED", [x, w, -1], [y], options("FullyConnectedOptions"))
    return m.build([x], [y])


@pytest.fixture(scope="module")
def fc():
    g = parse_tflite(fc_model(), "fc")
    return g, make_plan(g)


def test_every_board_file_loads_and_keeps_the_256k_premise():
    assert board_ids() == sorted(BOARDS)
    for b in list_boards():
        assert b.sram_bytes <= SRAM_LIMIT
        assert b.raw["upload"]["maximum_ram_size"] == b.sram_bytes
        assert b.emulated == (b.upload_protocol == "qemu")
        assert (b.cycle_counter == "dwt") == (not b.emulated and b.core != "cortex-m0plus")
    assert load_board("netduinoplus2").sram_bytes == 128 * 1024  # STM32F405: 112+16 KB contiguous
    assert load_board("pico").boot2 and load_board("pico").upload_protocol == "picotool"
    assert load_board("nucleo_f746zg").upload_protocol == "stlink"


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["tinymem"].update(sram_bytes=300 * 1024), "tinymem.sram_bytes"),
    (lambda d: d["tinymem"].pop("clock_hz"), "tinymem.clock_hz"),
    (lambda d: d["tinymem"]["serial"].update(uart="usb"), "tinymem.serial.uart"),
    (lambda d: d["tinymem"]["serial"].update(base=1073758208), "tinymem.serial.base"),
    (lambda d: d["tinymem"].update(fpu="fpv5-d16"), "tinymem.fpu"),
    (lambda d: d["tinymem"].update(cycle_counter="dwt"), "tinymem.cycle_counter"),
    (lambda d: d["upload"].update(maximum_ram_size=1024), "upload.maximum_ram_size"),
    (lambda d: d["build"].update(f_cpu="48000000L"), "build.f_cpu"),
    (lambda d: d["upload"].update(protocol="stlink"), "upload.protocol"),
])
def test_bad_board_file_names_file_and_field(tmp_path, mutate, field):
    data = json.loads((BOARDS_DIR / "mps2_an386.json").read_text())
    mutate(data)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data))
    with pytest.raises(TinymemError) as exc:
        load_board(path)
    assert str(path) in str(exc.value) and f"'{field}'" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_unknown_board_and_bad_json(tmp_path):
    with pytest.raises(TinymemError, match="unknown board 'uno'.*mps2_an386"):
        load_board("uno")
    bad = tmp_path / "bad.json"
    bad.write_text("{ nope")
    with pytest.raises(TinymemError, match=r"bad.json: not valid JSON \(line 1"):
        load_board(bad)
    with pytest.raises(TinymemError, match="not a microcontroller board"):
        load_board(BOARDS_DIR / "host.json")


def test_stm32_pin_fields_are_checked(tmp_path, fc):
    data = json.loads((BOARDS_DIR / "nucleo_f746zg.json").read_text())
    data["tinymem"]["serial"]["tx"] = "D8"
    path = tmp_path / "nucleo_bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(TinymemError, match=r"nucleo_bad.json: field 'tinymem.serial.tx' must look like 'PA9'"):
        pio.render_project(*fc, load_board(path), tmp_path / "proj")


def test_scons_version_comes_from_platformio():
    from platformio.dependencies import get_core_dependencies

    pkg_version, scons = pio.scons_requirement()
    assert get_core_dependencies()["tool-scons"].endswith(pkg_version)
    major, minor, patch = map(int, scons.split("."))
    assert pkg_version == f"{major}.{major}{minor:02d}{patch:02d}.0"


@needs_arm_gcc
@pytest.mark.parametrize("board", BOARDS)
def test_every_board_builds_and_links(board, fc, tmp_path):
    g, plan = fc
    project = pio.render_project(g, plan, board, tmp_path / board)
    built = pio.build(project)
    b = project.board
    assert built.elf.is_file() and (built.elf.with_suffix(".bin")).is_file()
    # The plan-time runtime estimate must not undercount what the linked firmware really uses.
    assert plan.arena_bytes < built.ram_static_bytes <= plan.arena_bytes + pio.runtime_ram_bytes(plan, b, True) - b.stack_bytes
    symbols = subprocess.run(["arm-none-eabi-nm", str(built.elf)], capture_output=True, text=True, check=True).stdout
    addr = {line.split()[-1]: int(line.split()[0], 16) for line in symbols.splitlines() if len(line.split()) == 3}
    assert addr["__stack_top"] == b.ram_origin + b.sram_bytes  # the linker script's RAM limit
    assert addr["tm_vectors"] == b.flash_origin + (256 if b.boot2 else 0)
    if b.boot2:  # the RP2040 boot ROM runs boot2 only when its CRC-32/MPEG-2 checks out
        raw = built.elf.with_suffix(".boot2")
        subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", "-j", ".boot2", str(built.elf), str(raw)], check=True)
        data = raw.read_bytes()
        crc = 0xFFFFFFFF
        for byte in data[:252]:
            crc ^= byte << 24
            for _ in range(8):
                crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
        assert len(data) == 256 and int.from_bytes(data[252:], "little") == crc
    ini = (project.dir / "platformio.ini").read_text()
    assert f"board = {board}" in ini and "test_framework = custom" in ini and "core_dir = .pio-core" in ini


def test_model_over_ram_fails_at_plan_time():
    g = parse_tflite(batch_fc(8300), "too big")  # ~130 KB arena on a 128 KB board
    plan = make_plan(g)
    with pytest.raises(TinymemError) as exc:
        pio.check_fits(plan, load_board("netduinoplus2"))
    msg = str(exc.value)
    assert "does not fit board 'netduinoplus2'" in msg and "netduinoplus2.json: tinymem.sram_bytes" in msg
    pio.check_fits(plan, load_board("mps2_an386"))  # 256 KB: fits


@needs_arm_gcc
@pytest.mark.parametrize("batches", [8300, 7900])  # .bss over RAM; .bss fits but the minimum stack does not
def test_model_over_ram_fails_at_link_time(batches, tmp_path):
    g = parse_tflite(batch_fc(batches), "too big")
    plan = make_plan(g)
    project = pio.render_project(g, plan, "netduinoplus2", tmp_path / "p", check_ram=False)  # skip guard 1
    with pytest.raises(TinymemError) as exc:
        pio.build(project)
    assert "link failed: the firmware needs more RAM than board 'netduinoplus2' allows" in str(exc.value)
    assert "netduinoplus2.json: tinymem.sram_bytes" in str(exc.value)


def test_setup_is_idempotent_and_fast(tmp_path):
    pio.setup_core(tmp_path)
    core = tmp_path / pio.CORE_DIR
    builder = core / "tinymem-platform" / "builder" / "main.py"
    before = builder.stat().st_mtime_ns
    start = time.monotonic()
    pio.setup_core(tmp_path)
    assert time.monotonic() - start < 1.0
    assert builder.stat().st_mtime_ns == before  # nothing rewritten
    piopm = json.loads((core / "packages" / "tool-scons" / ".piopm").read_text())
    assert piopm["spec"]["owner"] == "platformio"  # without it PlatformIO goes to the registry


def test_rerender_for_another_board_leaves_no_stale_driver(fc, tmp_path):
    pio.render_project(*fc, "mps2_an386", tmp_path)
    assert (tmp_path / "src" / "uart_cmsdk.c").exists()
    pio.render_project(*fc, "nucleo_f746zg", tmp_path)
    assert not (tmp_path / "src" / "uart_cmsdk.c").exists() and (tmp_path / "src" / "uart_stm32.c").exists()
    project, manifest = pio.open_project(tmp_path)
    assert project.board.id == "nucleo_f746zg" and manifest["inputs"] == [{"shape": [1, 24], "bytes": 24}]


def test_open_project_error(tmp_path):
    with pytest.raises(TinymemError, match="not a tinymem board project"):
        pio.open_project(tmp_path)


@pytest.mark.skipif(not shutil.which("cc"), reason="no host C compiler")
def test_board_sources_are_warning_free_for_the_host_too(tmp_path):
    """The protocol and the generated model with its profile hooks also compile on the host."""
    from tinymem.sim.host import WARN_FLAGS, host_cc

    g = parse_tflite(fc_model(), "fc")
    from codegen import render_model

    render_model(g, make_plan(g), tmp_path)
    src = [str(p) for p in tmp_path.glob("*.c")] + [str(Path(pio.FIRMWARE_DIR) / "runtime" / "protocol.c")]
    hooks = tmp_path / "hooks.c"
    hooks.write_text("void tinymem_profile_begin(int s);\nvoid tinymem_profile_end(int s);\n"
                     "void tinymem_profile_begin(int s) { (void)s; }\nvoid tinymem_profile_end(int s) { (void)s; }\n"
                     "int main(void) { return 0; }\n")
    subprocess.run([host_cc(), *WARN_FLAGS, "-DTINYMEM_PROFILE=1", "-I", str(tmp_path), "-I",
                    str(Path(pio.FIRMWARE_DIR) / "runtime"), *src, str(hooks), "-o", str(tmp_path / "a.out")],
                   check=True, capture_output=True, text=True)


def test_cli_run_refuses_a_model_over_the_board_ram_before_building(tmp_path, capsys):
    from tinymem.cli import main

    model = tmp_path / "big.tflite"
    model.write_bytes(batch_fc(8300))
    np.save(tmp_path / "in.npy", np.zeros((1, 8300, 16), np.int8))
    code = main(["run", str(model), "--board", "netduinoplus2", "--input", str(tmp_path / "in.npy"),
                 "--output", str(tmp_path / "out.npy"), "--project", str(tmp_path / "proj")])
    err = capsys.readouterr().err
    assert code == 1 and "does not fit board 'netduinoplus2'" in err and "tinymem.sram_bytes" in err
    assert not (tmp_path / "proj").exists()  # refused at plan time: nothing generated, nothing built
