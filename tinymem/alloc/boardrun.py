"""Board projects for tm_alloc's tools: the trace-replay firmware and hosted C tests run on an
emulated board. Built like every tinymem board project (tinymem.build.platformio: the same
templates for the linker script, board config and platformio.ini; the same local PlatformIO),
booted with tinymem.build.emulator."""
from __future__ import annotations

import select
import shutil
import time
from pathlib import Path

from ..errors import TinymemError
from . import FILES

RUNTIME_SOURCES = ("protocol.c", "protocol.h", *FILES)
BOARD_SOURCES = ("tm_board.h", "startup.c", "cycles.c")


def render(board, out_dir: Path, main_c: str, extra: list[Path] = (), alloc_header: str | None = None):
    """A PlatformIO project in out_dir: the board support, tm_alloc, `extra` files, and main.c."""
    from codegen.render import environment

    from ..build import platformio as pio

    out = Path(out_dir)
    src = out / "src"
    if src.is_dir():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    fw = pio.FIRMWARE_DIR
    files = [fw / "runtime" / n for n in RUNTIME_SOURCES] + [fw / "boards" / n for n in BOARD_SOURCES]
    files += [fw / "boards" / pio.UART_SOURCES[board.serial.uart], *extra]
    for path in files:
        shutil.copyfile(path, src / Path(path).name)
    env = environment()
    ctx = {"model": "tm_alloc", "board": board, "profile": False, "upload_port": None,
           "platform_dir": pio.PLATFORM_DIR, "uart_defines": pio.uart_defines(board),
           "counter_code": pio.COUNTER_CODES[board.cycle_counter]}
    for template, target in (("tm_board_config.h.j2", src / "tm_board_config.h"), ("link.ld.j2", out / "link.ld"),
                             ("platformio.ini.j2", out / "platformio.ini")):
        target.write_text(env.get_template(f"board/{template}").render(ctx))
    if alloc_header is not None:
        (src / "tinymem_alloc_config.h").write_text(alloc_header)
    (src / "main.c").write_text(main_c)
    pio.setup_core(out)
    return pio.Project(out, board, False)


def emulator(machine: str, elf: Path, icount_shift: int = 0):
    """tinymem's Emulator, with 2^icount_shift ns of virtual time per instruction."""
    from ..build.emulator import Emulator

    class Shifted(Emulator):
        def _command(self) -> list[str]:
            cmd = super()._command()
            cmd[cmd.index("-icount") + 1] = f"shift={icount_shift}"
            return cmd

    return Shifted(machine, elf)


def run_c_test(test: Path, args: list[str], board, out_dir: Path, heap_max: int = 65536,
               timeout: float = 120.0, alloc_header: str | None = None) -> tuple[int, str]:
    """Build a hosted C test (its main(argc, argv), printf) for the board, with alloc_header as its
    tinymem_alloc_config.h if given, run it in QEMU: (exit status, what it printed)."""
    from codegen.render import environment

    from ..build.platformio import build

    if not board.emulated:
        raise TinymemError(f"'{board.id}' is real hardware: C tests run on emulated boards")
    test = Path(test)
    main_c = environment().get_template("alloc/c_test_board.c.j2").render(
        board=board, test=test.name, body=test.stem + ".inc", args=[str(a) for a in args], heap_max=heap_max)
    project = render(board, out_dir, main_c, sorted(test.parent.glob("*.h")), alloc_header)
    shutil.copyfile(test, project.dir / "src" / (test.stem + ".inc"))  # included by main.c, not built alone
    built = build(project)
    out = bytearray()
    with emulator(board.qemu_machine, built.elf) as emu:
        deadline = time.monotonic() + timeout
        running = True
        while time.monotonic() < deadline:
            # QEMU may exit with its last bytes still in the socket: read until the link is drained
            # (nothing more for a moment after the process ended) or closed.
            ready, _, _ = select.select([emu.serial.fileno()], [], [], 0.1)
            if ready:
                try:
                    chunk = emu.serial.read(4096)
                except Exception:  # noqa: BLE001 - the link closes when QEMU exits: what came is kept
                    break
                out += chunk
                if chunk:
                    continue
            if not running:
                break
            running = emu.proc.poll() is None
        status = emu.wait(max(1.0, deadline - time.monotonic()))
    return status, out.decode(errors="replace")
