"""tm_alloc in the board runtime: the firmware's serial buffers come from it, and its config in
every generated board project is derived from the runtime's own allocation trace
(firmware/runtime/runtime_alloc_trace.csv), which the firmware records itself in trace mode.

The runtime allocates its three serial buffers once at startup and never frees them, so the
config needs no search: no pools, a large region that first fit fills exactly (granule 8), and
only the metadata that such a heap needs; no errno (the runtime never reads it, and newlib's
errno state would cost 100 B of RAM)."""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from ..errors import TinymemError
from .config import AllocConfig, render_header
from .trace import ALLOC, CALLOC, MEMALIGN, Trace, from_events, load_trace

RUNTIME_TRACE = Path(__file__).resolve().parents[2] / "firmware" / "runtime" / "runtime_alloc_trace.csv"
GRANULE = 8
LOG_LINE = re.compile(r"tm_alloc ([acfmr]) ([0-9a-f]{8}) ([0-9a-f]{8}) ([0-9a-f]{8}) ([0-9a-f]{8})")


def startup_config(trace: Trace, trace_mode: bool = False) -> AllocConfig:
    """The exact config for a trace of allocations that are never freed or resized."""
    if any(op not in (ALLOC, CALLOC, MEMALIGN) or align > GRANULE for op, _s, _n, align in trace.ops):
        raise TinymemError(f"{trace.source}: the runtime's trace frees or resizes blocks now: configure it with "
                           "`tinymem alloc-config` instead of tinymem/alloc/runtime.py's startup config")
    heap = sum(-(-max(size, 1) // GRANULE) * GRANULE for _op, _s, size, _a in trace.ops)
    return AllocConfig((), GRANULE, False, heap, trace_mode, set_errno=False).validate()


def runtime_config(trace_mode: bool = False) -> AllocConfig:
    return startup_config(load_trace(RUNTIME_TRACE), trace_mode)


def runtime_header(trace_mode: bool = False) -> str:
    return render_header(runtime_config(trace_mode), f"the board runtime's own allocations ({RUNTIME_TRACE.name})")


def trace_from_logs(logs: list[str], where: str = "firmware") -> Trace:
    """The trace in the LOG frames a trace-mode firmware sent (other LOG lines are ignored)."""
    events = [(m[1], int(m[2], 16), int(m[3], 16), int(m[4], 16), int(m[5], 16))
              for m in (LOG_LINE.fullmatch(line.strip()) for line in logs) if m]
    return from_events(events, where)


def record_runtime_trace(g, plan, board, project_dir: str | Path, timeout: float = 20.0) -> Trace:
    """Build the model's board project with tm_alloc in trace mode, boot it in QEMU, start and end
    a session, and return the allocations the firmware reported."""
    from ..build.emulator import Emulator
    from ..build.platformio import build, render_project
    from ..link.session import Session

    if not board.emulated:
        raise TinymemError(f"recording runs on emulated boards; '{board.id}' is real hardware")
    project = render_project(g, plan, board, project_dir)
    (project.dir / "src" / "tinymem_alloc_config.h").write_text(
        render_header(replace(runtime_config(), trace_mode=True), "the runtime, in trace mode"))
    built = build(project)
    with Emulator(board.qemu_machine, built.elf) as emu:
        session = Session(emu.serial, timeout=timeout)
        session.hello()
        session.exit(0)
        emu.wait(timeout)
    return trace_from_logs(session.logs, f"{board.id} firmware")
