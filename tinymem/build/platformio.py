"""Board projects: render a plain PlatformIO project for (model, board), set PlatformIO up with no
registry, build it with `pio run`, flash it with `pio run -t upload`.

PlatformIO normally downloads a dev-platform, a toolchain and SCons. Here all three are local:
the dev-platform is written into the project's own core dir (`.pio-core/`, gitignored), the
toolchain is Debian's arm-none-eabi-gcc on PATH, and `tool-scons` is SCons from PyPI installed
once into a user cache and linked in. See shared/notes/platformio-qemu.md for the measurements.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import TinymemError
from ..model.graph import Graph
from ..plan.memory import MemoryPlan
from .boards import BOARDS_DIR, Board, load_board

FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "firmware"
CORE_DIR = ".pio-core"
PLATFORM_DIR = f"{CORE_DIR}/tinymem-platform"
PLATFORM_VERSION = "0.1.0"
MANIFEST = "tinymem.json"
# RAM the board runtime adds to the plan: protocol buffers (decoder, wire, payload) and small
# statics; the per-op profile table is added per op. Checked against the linked ELF in tests.
RUNTIME_RAM_BYTES = 1024 + 256  # + tm_alloc's out-of-band metadata: the protocol buffers come from it
PROFILE_BYTES_PER_OP = 8

UART_SOURCES = {"cmsdk": "uart_cmsdk.c", "stm32_usart_v1": "uart_stm32.c", "stm32_usart_v2": "uart_stm32.c",
                "nrf_uarte": "uart_nrf_uarte.c", "rp2040_uart": "uart_rp2040.c"}
COUNTER_CODES = {"dwt": 1, "systick": 2}


@dataclass
class Project:
    dir: Path
    board: Board
    profile: bool

    @property
    def elf(self) -> Path:
        return self.dir / ".pio" / "build" / self.board.id / "firmware.elf"


@dataclass
class BuildResult:
    elf: Path
    ram_static_bytes: int  # .data + .bss of the linked firmware (arena, runtime, C library)
    flash_bytes: int
    log: str


# ---------------------------------------------------------------------------------------------
# PlatformIO with no registry

def pio_env(project_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PLATFORMIO_CORE_DIR": str(Path(project_dir).resolve() / CORE_DIR),
        "PLATFORMIO_SETTING_ENABLE_TELEMETRY": "No",  # telemetry does a DNS lookup every run
        "PLATFORMIO_SETTING_CHECK_PLATFORMIO_INTERVAL": "3650",
        "PLATFORMIO_DISABLE_UPGRADE_CHECK": "true",
        "PLATFORMIO_NO_ANSI": "true",
    })
    return env


def scons_requirement() -> tuple[str, str]:
    """(tool-scons package version, SCons version) that the installed PlatformIO asks for.

    PlatformIO encodes SCons X.Y.Z as package version X.(X)(YY)(ZZ).0, e.g. ~4.41101.0 = 4.11.1.
    """
    from platformio.dependencies import get_core_dependencies

    spec = get_core_dependencies()["tool-scons"]
    m = re.fullmatch(r"[~^=<>]*(\d+)\.(\d)(\d\d)(\d\d)\.(\d+)", spec.strip())
    if not m:
        raise TinymemError(f"cannot read the SCons version from PlatformIO's tool-scons requirement {spec!r}")
    return f"{m[1]}.{m[2]}{m[3]}{m[4]}.{m[5]}", f"{m[2]}.{int(m[3])}.{int(m[4])}"


def cache_dir() -> Path:
    if os.environ.get("TINYMEM_CACHE_DIR"):
        return Path(os.environ["TINYMEM_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tinymem"


def scons_package() -> Path:
    """A `tool-scons` package folder in the user cache, installed from PyPI on first use."""
    pkg_version, scons_version = scons_requirement()
    pkg = cache_dir() / f"tool-scons-{pkg_version}"
    if (pkg / ".piopm").exists():
        return pkg
    pkg.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tool-scons-", dir=pkg.parent))
    try:
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(tmp),
                               f"scons=={scons_version}"], capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise TinymemError(f"installing SCons {scons_version} from PyPI (PlatformIO's tool-scons) failed: {last}")
        (tmp / "scons.py").write_text(
            "# PlatformIO runs this file; SCons itself was installed beside it from PyPI.\n"
            "import os, sys\nsys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))\n"
            "from SCons.Script import main\nmain()\n")
        (tmp / "package.json").write_text(json.dumps({"name": "tool-scons", "version": pkg_version}))
        # Without "owner": "platformio" PlatformIO does not recognise the package and goes to the
        # registry for it (and fails after a 60 s timeout).
        (tmp / ".piopm").write_text(json.dumps({
            "type": "tool", "name": "tool-scons", "version": pkg_version,
            "spec": {"owner": "platformio", "id": None, "name": "tool-scons", "requirements": None, "uri": None}}))
        try:
            os.replace(tmp, pkg)  # atomic: a concurrent setup either wins or finds it done
        except OSError:
            if not (pkg / ".piopm").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return pkg


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def setup_core(project_dir: Path) -> None:
    """Idempotent: the dev-platform and tool-scons inside project_dir/.pio-core (fast when done)."""
    from codegen.render import environment

    project_dir = Path(project_dir)
    platform = project_dir / PLATFORM_DIR
    env = environment()
    for template, target in (("platform.json.j2", "platform.json"), ("platform.py.j2", "platform.py"),
                             ("builder_main.py.j2", "builder/main.py")):
        _write_if_changed(platform / target, env.get_template(f"platformio/{template}").render(version=PLATFORM_VERSION))
    for board_file in BOARDS_DIR.glob("*.json"):
        _write_if_changed(platform / "boards" / board_file.name, board_file.read_text())
    link = project_dir / CORE_DIR / "packages" / "tool-scons"
    pkg = scons_package()
    if link.is_symlink() and Path(os.readlink(link)) == pkg:
        return
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        link.symlink_to(pkg, target_is_directory=True)
    except OSError:
        shutil.copytree(pkg, link)


# ---------------------------------------------------------------------------------------------
# Rendering a project

def runtime_ram_bytes(plan: MemoryPlan, board: Board, profile: bool) -> int:
    return RUNTIME_RAM_BYTES + (PROFILE_BYTES_PER_OP * len(plan.layers) if profile else 0) + board.stack_bytes


def check_fits(plan: MemoryPlan, board: Board, profile: bool = True) -> None:
    """Plan-time guard: the model's peak SRAM plus the runtime must fit the board's RAM limit."""
    runtime = runtime_ram_bytes(plan, board, profile)
    need = plan.peak_sram_bytes + runtime
    if need > board.sram_bytes:
        raise TinymemError(
            f"model '{plan.graph.name}' does not fit board '{board.id}': peak SRAM {plan.peak_sram_bytes:,} B "
            f"+ runtime and minimum stack {runtime:,} B = {need:,} B > {board.sram_bytes:,} B "
            f"({board.path}: tinymem.sram_bytes)")


def _pin(board: Board, key: str, pattern: str, example: str) -> tuple[int, ...]:
    value = board.serial.extra.get(key)
    m = re.fullmatch(pattern, str(value)) if value is not None else None
    if not m:
        raise TinymemError(f"{board.path}: field 'tinymem.serial.{key}' must look like {example!r}, got {value!r}")
    return tuple(int(g) if g.isdigit() else ord(g) - ord("A") for g in m.groups())


def uart_defines(board: Board) -> list[tuple[str, str]]:
    """What the UART driver needs beyond base and baud, as C macros."""
    s, kind = board.serial, board.serial.uart
    if kind.startswith("stm32_usart"):
        reg = s.extra.get("clock_enable")
        if not (isinstance(reg, list) and len(reg) == 2 and isinstance(reg[1], int)):
            raise TinymemError(f"{board.path}: field 'tinymem.serial.clock_enable' must be [\"0xADDRESS\", bit]")
        (tx_port, tx_pin), (rx_port, rx_pin) = (_pin(board, k, r"P([A-K])(\d{1,2})", "PA9") for k in ("tx", "rx"))
        af = s.extra.get("af")
        if not isinstance(af, int) or not 0 <= af <= 15:
            raise TinymemError(f"{board.path}: field 'tinymem.serial.af' must be an alternate function 0..15, got {af!r}")
        return [("TM_UART_STM32_V2", str(int(kind.endswith("v2")))), ("TM_UART_CLKEN_REG", f"{reg[0]}u"),
                ("TM_UART_CLKEN_BIT", str(reg[1])), ("TM_UART_TX_PORT", f"{tx_port}u"), ("TM_UART_TX_PIN", f"{tx_pin}u"),
                ("TM_UART_RX_PORT", f"{rx_port}u"), ("TM_UART_RX_PIN", f"{rx_pin}u"), ("TM_UART_AF", f"{af}u")]
    if kind == "nrf_uarte":
        (tx_port, tx_pin), (rx_port, rx_pin) = (_pin(board, k, r"P(\d)\.(\d\d)", "P1.03") for k in ("tx", "rx"))
        return [("TM_UART_TX_PSEL", f"{32 * tx_port + tx_pin}u"), ("TM_UART_RX_PSEL", f"{32 * rx_port + rx_pin}u")]
    if kind == "rp2040_uart":
        (tx,), (rx,) = (_pin(board, k, r"GP(\d{1,2})", "GP0") for k in ("tx", "rx"))
        return [("TM_UART_TX_GPIO", f"{tx}u"), ("TM_UART_RX_GPIO", f"{rx}u")]
    return []


def write_runtime(board: Board, src: Path) -> None:
    """Everything a board firmware needs besides its model and main.c, into src: the protocol, the
    allocator and its generated config, the board support. Shared with other firmwares that
    present a model's API (tinymem/lsm/encode.py), so they follow the runtime as it changes."""
    from ..alloc import FILES as ALLOC_FILES

    sources = [FIRMWARE_DIR / "runtime" / n for n in ("protocol.c", "protocol.h", *ALLOC_FILES)]
    sources += [FIRMWARE_DIR / "boards" / n for n in ("tm_board.h", "startup.c", "cycles.c", UART_SOURCES[board.serial.uart])]
    if board.boot2:
        sources.append(FIRMWARE_DIR / "boards" / "boot2_rp2040.c")
    for path in sources:
        shutil.copyfile(path, src / path.name)
    from ..alloc.runtime import runtime_header

    (src / "tinymem_alloc_config.h").write_text(runtime_header())


def render_project(g: Graph, plan: MemoryPlan, board: Board | str, out_dir: str | Path, profile: bool = True,
                   upload_port: str | None = None, check_ram: bool = True) -> Project:
    """Write a complete PlatformIO project for the model on the board into out_dir."""
    from codegen.render import _io, render_model

    board = load_board(board) if isinstance(board, str) else board
    if check_ram:
        check_fits(plan, board, profile)
    extra = {"ops": [layer.op for layer in plan.layers],
             "peak_sram_planned_bytes": plan.peak_sram_bytes, "arena_bytes": plan.arena_bytes,
             # render_model copies this kernel set's sources (firmware/kernels/armv7em for DSP) into src/
             "kernels": getattr(plan, "isa", "portable")}
    return render_app_project(board, out_dir, lambda src: render_model(g, plan, src), _io(g, plan, g.inputs),
                              _io(g, plan, g.outputs), g.name, extra, profile, upload_port)


def render_app_project(board: Board, out_dir: str | Path, render_sources, inputs: list[dict], outputs: list[dict],
                       name: str, manifest_extra: dict, profile: bool = False,
                       upload_port: str | None = None) -> Project:
    """A board project around any C with a model's API (tinymem_input/output/invoke: an inference
    model, an LSM, the training firmware): `render_sources(src)` writes it into src/, the board
    runtime and the driver templates are added around it. inputs/outputs: what main.c.j2 needs
    per tensor (at least "bytes")."""
    from codegen.render import environment

    if not board.emulated and board.sram_bytes is None:
        raise TinymemError(f"board '{board.id}' has no firmware build (use --board host for the host compiler)")
    out = Path(out_dir)
    src = out / "src"
    if (out / MANIFEST).exists() and src.is_dir():
        shutil.rmtree(src)  # our own earlier render, maybe for another board: no stale drivers
    src.mkdir(parents=True, exist_ok=True)
    render_sources(src)
    write_runtime(board, src)
    env = environment()
    ctx = {"model": name, "board": board, "profile": profile, "upload_port": upload_port,
           "platform_dir": PLATFORM_DIR, "inputs": inputs, "outputs": outputs,
           "uart_defines": uart_defines(board), "counter_code": COUNTER_CODES[board.cycle_counter]}
    for template, target in (("main.c.j2", src / "main.c"), ("tm_board_config.h.j2", src / "tm_board_config.h"),
                             ("link.ld.j2", out / "link.ld"), ("platformio.ini.j2", out / "platformio.ini")):
        target.write_text(env.get_template(f"board/{template}").render(ctx))
    tensors = lambda ts: [{k: t[k] for k in ("shape", "bytes") if k in t} for t in ts]  # noqa: E731
    manifest = {"board": board.id, "model": name, "profile": profile, "inputs": tensors(inputs),
                "outputs": tensors(outputs), **manifest_extra}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    setup_core(out)
    return Project(out, board, profile)


def open_project(project_dir: str | Path) -> tuple[Project, dict]:
    """A project rendered earlier by render_project, and its manifest."""
    d = Path(project_dir)
    path = d / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise TinymemError(f"{d}: not a tinymem board project (no {MANIFEST}; make one with "
                           f"`tinymem codegen MODEL --board BOARD -o {d}`)") from None
    except json.JSONDecodeError as exc:
        raise TinymemError(f"{path}: not valid JSON ({exc.msg})") from None
    return Project(d, load_board(manifest.get("board", "?")), bool(manifest.get("profile"))), manifest


# ---------------------------------------------------------------------------------------------
# Building and flashing

def _pio(project: Project, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    setup_core(project.dir)
    cmd = [sys.executable, "-m", "platformio", "run", "-d", str(project.dir), "-e", project.board.id, *args]
    try:
        return subprocess.run(cmd, env=pio_env(project.dir), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TinymemError(f"`pio run {' '.join(args)}` in {project.dir} took over {timeout:.0f} s") from None


def _failure(project: Project, log: str, what: str) -> TinymemError:
    b = project.board
    if "tinymem: model + runtime do not fit" in log or re.search(r"region `RAM' overflowed", log):
        over = re.search(r"region `RAM' overflowed by (\d+) bytes", log)
        why = (f"static data over by {int(over[1]):,} B" if over
               else f"static data leaves less than the {b.stack_bytes:,} B minimum stack")
        return TinymemError(f"link failed: the firmware needs more RAM than board '{b.id}' allows ({why}): "
                            f"{b.sram_bytes:,} B ({b.path}: tinymem.sram_bytes)")
    if re.search(r"region `FLASH' overflowed", log):
        return TinymemError(f"link failed: the firmware needs more flash than board '{b.id}' has: "
                            f"{b.flash_bytes:,} B ({b.path}: tinymem.flash_bytes)")
    errors = [ln.strip() for ln in log.splitlines() if re.search(r"error|Error", ln)]
    detail = errors[0] if errors else (log.strip().splitlines() or ["no output"])[-1]
    return TinymemError(f"{what} of {project.dir} for '{b.id}' failed: {detail}")


def elf_ram_flash(elf: Path) -> tuple[int, int]:
    """(static RAM, bytes stored in flash) of a linked firmware, from arm-none-eabi-size.

    Static RAM spans from the start of .data to the end of .bss, alignment gaps between them
    included (a 16-byte aligned arena can leave one): what the firmware's linker symbols report."""
    proc = subprocess.run(["arm-none-eabi-size", "-A", "-d", str(elf)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise TinymemError(f"arm-none-eabi-size could not read {elf}: {proc.stderr.strip()}")
    sizes, spans = {}, []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].startswith(".") and parts[1].isdigit() and parts[2].isdigit():
            sizes[parts[0]] = int(parts[1])
            if parts[0] in (".data", ".bss") and int(parts[1]):
                spans.append((int(parts[2]), int(parts[2]) + int(parts[1])))
    ram = max(e for _, e in spans) - min(a for a, _ in spans) if spans else 0
    flash = sum(sizes.get(s, 0) for s in (".boot2", ".vectors", ".text", ".ARM.exidx", ".data"))
    return ram, flash


def build(project: Project, timeout: float = 600) -> BuildResult:
    proc = _pio(project, timeout=timeout)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise _failure(project, log, "build")
    ram, flash = elf_ram_flash(project.elf)
    return BuildResult(project.elf, ram, flash, log)


def upload(project: Project, port: str | None = None, timeout: float = 600) -> str:
    """`pio run -t upload`: boots an emulated board in QEMU, or flashes a real one. Returns the log."""
    proc = _pio(project, "-t", "upload", *(["--upload-port", port] if port else []), timeout=timeout)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise _failure(project, log, "upload")
    return log
