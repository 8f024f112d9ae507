"""Board descriptions: boards/*.json, one per board, in PlatformIO's board-JSON shape.

PlatformIO reads `build` and `upload`; tinymem reads its own `tinymem` object: the core, the
RAM the linker script allows (never over 256 KB), the UART, the emulator and the cycle counter.
Every check names the file and the field at fault, so a bad board file is a one-line fix.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import TinymemError

BOARDS_DIR = Path(__file__).resolve().parents[2] / "boards"
SRAM_LIMIT = 256 * 1024  # tinymem's premise: a model must fit in 256 KB of SRAM

# core -> (FPUs it may have, whether it has DWT->CYCCNT)
CORES = {
    "cortex-m0plus": ((None,), False),
    "cortex-m3": ((None,), True),
    "cortex-m4": ((None, "fpv4-sp-d16"), True),
    "cortex-m7": ((None, "fpv5-sp-d16", "fpv5-d16"), True),
}
UARTS = ("cmsdk", "stm32_usart_v1", "stm32_usart_v2", "nrf_uarte", "rp2040_uart")
COUNTERS = ("dwt", "systick")
PROTOCOLS = ("qemu", "stlink", "sam-ba", "picotool")
NOT_MCU = ("host",)  # boards/host.json describes `tinymem sim`, not a PlatformIO board


@dataclass(frozen=True)
class Serial:
    uart: str
    base: int
    baud: int
    extra: dict  # pins, alternate function, clock-enable register: what a real board's driver needs


@dataclass(frozen=True)
class Board:
    id: str
    path: Path
    name: str
    core: str
    fpu: str | None
    sram_bytes: int
    ram_origin: int
    flash_bytes: int
    flash_origin: int
    clock_hz: int
    serial: Serial
    qemu_machine: str | None
    cycle_counter: str
    stack_bytes: int
    upload_protocol: str
    boot2: bool
    rx_window: int  # host frames the firmware may have in flight (see tm_board_config.h.j2)
    description: str
    raw: dict

    @property
    def emulated(self) -> bool:
        return self.qemu_machine is not None

    @property
    def clock(self) -> str:
        """Which clock a tick of this board's counter is: said next to every figure reported."""
        if self.emulated:
            return "qemu-icount"  # SysTick on QEMU's virtual clock, 1 ns per instruction
        return "dwt-cycles" if self.cycle_counter == "dwt" else "systick-cycles"

    def summary(self) -> dict:
        return {
            "board": self.id, "name": self.name, "core": self.core, "fpu": self.fpu,
            "sram_bytes": self.sram_bytes, "flash_bytes": self.flash_bytes, "clock_hz": self.clock_hz,
            "uart": self.serial.uart, "emulator": self.qemu_machine, "cycle_counter": self.cycle_counter,
            "clock": self.clock, "upload_protocol": self.upload_protocol, "rx_window": self.rx_window,
            "file": str(self.path),
        }


class _Fields:
    """Typed access to one board file's JSON with errors that name file and field."""

    def __init__(self, path: Path, data: dict):
        self.path, self.data = path, data

    def fail(self, field: str, why: str) -> TinymemError:
        return TinymemError(f"{self.path}: field '{field}' {why}")

    def get(self, field: str, default=KeyError):
        node = self.data
        for part in field.split("."):
            if not isinstance(node, dict) or part not in node:
                if default is KeyError:
                    raise self.fail(field, "is missing")
                return default
            node = node[part]
        return node

    def str_(self, field: str, choices=None, default=KeyError) -> str:
        v = self.get(field, default)
        if not isinstance(v, str) or not v:
            raise self.fail(field, f"must be a non-empty string, got {v!r}")
        if choices and v not in choices:
            raise self.fail(field, f"is {v!r}; expected one of {', '.join(map(str, choices))}")
        return v

    def int_(self, field: str, default=KeyError, minimum: int = 1) -> int:
        v = self.get(field, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise self.fail(field, f"must be an integer >= {minimum}, got {v!r}")
        return v

    def addr(self, field: str) -> int:
        v = self.get(field)
        if not isinstance(v, str) or not re.fullmatch(r"0x[0-9a-fA-F]{1,8}", v):
            raise self.fail(field, f"must be a hex address string like \"0x20000000\", got {v!r}")
        return int(v, 16)


def _parse(board_id: str, path: Path, data: dict) -> Board:
    f = _Fields(path, data)
    if not isinstance(data, dict):
        raise TinymemError(f"{path}: expected a JSON object")
    name = f.str_("name")
    cpu = f.str_("build.cpu", CORES)
    f.str_("build.mcu")
    f_cpu = f.str_("build.f_cpu")
    if not re.fullmatch(r"\d+L?", f_cpu):
        raise f.fail("build.f_cpu", f"must look like \"25000000L\", got {f_cpu!r}")
    core = f.str_("tinymem.core", CORES)
    if core != cpu:
        raise f.fail("tinymem.core", f"is {core!r} but build.cpu is {cpu!r}")
    fpus, has_dwt = CORES[core]
    fpu = f.get("tinymem.fpu")
    if fpu not in fpus:
        raise f.fail("tinymem.fpu", f"is {fpu!r}; a {core} has {' or '.join(map(str, fpus))}")
    sram = f.int_("tinymem.sram_bytes")
    if sram > SRAM_LIMIT or sram % 8:
        raise f.fail("tinymem.sram_bytes", f"is {sram}; it must be a multiple of 8 and at most {SRAM_LIMIT} (256 KB)")
    ram_max = f.int_("upload.maximum_ram_size")
    if ram_max != sram:
        raise f.fail("upload.maximum_ram_size", f"is {ram_max} but tinymem.sram_bytes is {sram}: PlatformIO's size "
                     "report must show the limit the linker script enforces")
    flash = f.int_("tinymem.flash_bytes")
    if f.int_("upload.maximum_size") != flash:
        raise f.fail("upload.maximum_size", f"must equal tinymem.flash_bytes ({flash})")
    clock = f.int_("tinymem.clock_hz")
    if int(f_cpu.rstrip("L")) != clock:
        raise f.fail("build.f_cpu", f"is {f_cpu} but tinymem.clock_hz is {clock}")
    uart = f.str_("tinymem.serial.uart", UARTS)
    serial_raw = f.get("tinymem.serial")
    serial = Serial(uart, f.addr("tinymem.serial.base"), f.int_("tinymem.serial.baud"),
                    {k: v for k, v in serial_raw.items() if k not in ("uart", "base", "baud", "rx_window")})
    emu = f.get("tinymem.emulator")
    if emu is not None and not isinstance(emu, dict):
        raise f.fail("tinymem.emulator", "must be null (a real board) or an object with qemu_machine")
    qemu = f.str_("tinymem.emulator.qemu_machine") if emu is not None else None
    protocol = f.str_("upload.protocol", PROTOCOLS)
    if (protocol == "qemu") != (qemu is not None):
        raise f.fail("upload.protocol", f"is {protocol!r}; emulated boards (and only they) use 'qemu'")
    counter = f.str_("tinymem.cycle_counter", COUNTERS)
    if counter == "dwt" and not has_dwt:
        raise f.fail("tinymem.cycle_counter", f"is 'dwt' but a {core} has no DWT cycle counter: use 'systick'")
    if counter == "dwt" and qemu:
        raise f.fail("tinymem.cycle_counter", "is 'dwt' but QEMU does not implement DWT->CYCCNT: use 'systick'")
    stack = f.int_("tinymem.stack_bytes", default=4096, minimum=1024)
    boot2 = f.get("tinymem.boot2", default=False)
    if not isinstance(boot2, bool):
        raise f.fail("tinymem.boot2", f"must be true or false, got {boot2!r}")
    # Frames the host may have in flight. On silicon 1: a polled UART overruns while the firmware
    # sends an ACK (a firmware with buffered RX may raise it in its board file). QEMU holds the line
    # instead, so 4 there: it lets INVOKE follow the last chunk without waiting for its ACK, a round
    # trip saved per sample (digits: ~54 -> ~29 ms per sample, median of 4 runs on a loaded machine);
    # bulk streaming gains nothing, QEMU's UART takes one byte per main-loop turn either way.
    window = f.int_("tinymem.serial.rx_window", default=4 if qemu else 1)
    if window > 64:
        raise f.fail("tinymem.serial.rx_window", f"is {window}; at most 64 frames may be in flight")
    return Board(
        id=board_id, path=path, name=name, core=core, fpu=fpu, sram_bytes=sram, ram_origin=f.addr("tinymem.ram_origin"),
        flash_bytes=flash, flash_origin=f.addr("tinymem.flash_origin"), clock_hz=clock, serial=serial,
        qemu_machine=qemu, cycle_counter=counter, stack_bytes=stack, upload_protocol=protocol, boot2=boot2,
        rx_window=window,
        description=f.get("tinymem.description", default=""), raw=data,
    )


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise TinymemError(f"{path}: no such board file") from None
    except json.JSONDecodeError as exc:
        raise TinymemError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None


def board_ids(directory: Path = BOARDS_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.json") if p.stem not in NOT_MCU)


def load_board(name: str | Path, directory: Path = BOARDS_DIR) -> Board:
    """A board by id (boards/<id>.json) or by the path of a board file."""
    path = Path(name)
    if path.suffix != ".json":
        path = directory / f"{name}.json"
        if not path.exists():
            raise TinymemError(f"unknown board '{name}'; choose one of {', '.join(board_ids(directory))} "
                               f"(or give the path of a board .json)")
    if path.stem in NOT_MCU:
        raise TinymemError(f"{path}: '{path.stem}' is not a microcontroller board (use `tinymem sim` for the host)")
    return _parse(path.stem, path, _read(path))


def list_boards(directory: Path = BOARDS_DIR) -> list[Board]:
    return [load_board(b, directory) for b in board_ids(directory)]
