"""Run a model on a board end to end: render the project, build, flash (or boot QEMU), stream the
samples over the UART, collect outputs and what the board measured into a profile."""
from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TinymemError
from ..model.graph import Graph
from ..plan.memory import MemoryPlan
from ..model.boundary import model_inputs, model_outputs, sample_shape
from .session import Hello, Invocation, LinkStats, Session


@dataclass
class BoardRun:
    outputs: list[np.ndarray]
    profile: dict
    hello: Hello


def clock_units(board, hello: Hello) -> tuple[str, float, str]:
    """(unit, units per tick, how to read it) for the board's counter: every figure says its clock."""
    if hello.emulated:
        per_tick = 1e9 / hello.clock_hz
        return ("instructions", per_tick,
                f"QEMU -icount shift=0 retires 1 instruction per ns of virtual time; SysTick ticks at "
                f"{hello.clock_hz / 1e6:g} MHz of it, so 1 tick = {per_tick:g} instructions (that is the "
                f"resolution). Instruction counts, not cycles of any real part.")
    if hello.counter == "dwt":
        return "cycles", 1.0, f"DWT->CYCCNT: core clock cycles at {hello.clock_hz / 1e6:g} MHz"
    return "cycles", 1.0, f"SysTick on the core clock: core cycles at {hello.clock_hz / 1e6:g} MHz"


def profile_report(g: Graph, plan: MemoryPlan, board, hello: Hello, runs: list[Invocation],
                   ram_static_bytes: int, flash_bytes: int, link: LinkStats | None = None) -> dict:
    """What the board measured, in one JSON-able dict, with the plan's figures beside it.

    Measured peak SRAM = .data + .bss (arena, runtime, C library) + the painted stack's high-water
    mark. The plan's peak counts the arena only, so the two differ by the runtime: the bound they
    are held to is the one the plan-time guard (check_fits) admits a model with, plan + runtime
    budget (protocol buffers, profile table, minimum stack)."""
    from ..build.platformio import runtime_ram_bytes

    unit, per_tick, note = clock_units(board, hello)
    high_water = max(r.stack_high_water for r in runs) if runs else 0
    layers = []
    for k, layer in enumerate(plan.layers):
        ticks = [r.op_ticks[k] for r in runs if len(r.op_ticks) > k]
        median = statistics.median(ticks) if ticks else None
        layers.append({"index": layer.index, "op": layer.op, "macs": layer.macs,
                       "ticks": median, unit: None if median is None else round(median * per_tick)})
    # Waiting for streamed input windows is the link's time, not the model's (on an emulated board
    # the polling loop even retires instructions): it is reported on its own, outside the total.
    invoke = [r.ticks for r in runs]
    reads = [r.read_ticks for r in runs]
    total = round(statistics.median([t - w for t, w in zip(invoke, reads)]) * per_tick) if invoke else None
    budget = runtime_ram_bytes(plan, board, hello.profile)
    measured = ram_static_bytes + high_water
    return {
        "model": g.name, "board": board.id, "clock": hello.clock, "clock_hz": hello.clock_hz,
        "unit": unit, "unit_per_tick": per_tick, "clock_note": note, "samples": len(runs),
        "invoke": {"ticks": invoke, "input_read_ticks": reads, f"median_{unit}": total},
        f"total_{unit}": total,
        "layers": layers if hello.profile else [],
        "patch_stage": _stage_profile(plan, layers, unit) if hello.profile else None,
        "input_read": None if not hello.streamed else {
            "windows_per_invoke": (link.windows // len(runs)) if link and runs else None,
            "window_bytes_per_invoke": (link.window_bytes // len(runs)) if link and runs else None,
            f"median_{unit}": round(statistics.median(reads) * per_tick) if reads else None,
            "note": "time the board waited for its input windows over the serial link, not in the total"},
        "ram_static_bytes": ram_static_bytes,
        "stack_high_water_bytes": high_water,
        "stack_capacity_bytes": hello.stack_capacity,
        "peak_sram_measured_bytes": measured,
        "peak_sram_planned_bytes": plan.peak_sram_bytes,
        "plan": {"peak_sram_bytes": plan.peak_sram_bytes, "arena_bytes": plan.arena_bytes,
                 "runtime_budget_bytes": budget, "bound_bytes": plan.peak_sram_bytes + budget},
        "within_plan_bound": plan.peak_sram_bytes <= measured <= plan.peak_sram_bytes + budget,
        "ram_limit_bytes": board.sram_bytes,
        "flash_bytes": flash_bytes,
        "link": (link or LinkStats()).as_dict() | {"rx_window": hello.window},
    }


def _stage_profile(plan: MemoryPlan, layers: list[dict], unit: str) -> dict | None:
    """A patch stage's ops run once per patch; each op's figure is its sum over the patches, and the
    stage's is theirs (the split tensor's copy counts with op K)."""
    sp = plan.patch
    if sp is None:
        return None
    ops = [layers[s] for s in sp.stage.ops]
    return {"ops": [sp.stage.ops[0], sp.stage.split_op], "grid": [sp.schedule.rows, sp.schedule.cols],
            "patches": sp.schedule.patches, "input": sp.schedule.input_mode,
            unit: None if any(o[unit] is None for o in ops) else sum(o[unit] for o in ops)}


def check_memory(runs: list[Invocation], ram_static_bytes: int, plan: MemoryPlan, board) -> None:
    """The board's own figures must match the ELF just built and the plan: else it runs something else."""
    for r in runs[:1]:
        if (r.ram_static, r.arena_bytes, r.ram_limit) != (ram_static_bytes, plan.arena_bytes, board.sram_bytes):
            raise TinymemError(
                f"the firmware on the board is not the one just built: it reports {r.ram_static:,} B static, "
                f"arena {r.arena_bytes:,} B, RAM {r.ram_limit:,} B; the build has {ram_static_bytes:,} B, "
                f"{plan.arena_bytes:,} B, {board.sram_bytes:,} B")


def _outputs(g: Graph, runs: list[Invocation]) -> list[np.ndarray]:
    outs = []
    for k, t in enumerate(g.outputs):
        shape = sample_shape(g.t(t).shape)
        outs.append(np.stack([np.frombuffer(r.outputs[k], np.int8).reshape(shape) for r in runs])
                    if runs else np.zeros((0,) + shape, np.int8))
    return outs


def serve_on_board(board, project, elf, serve, port: str | None = None, upload_port: str | None = None,
                   timeout: float = 30.0, stage=None, what: str = "firmware"):
    """Boot `elf` in QEMU (an emulated board) or flash `project` and open the UART on `port` (real
    hardware), and return what `serve(link)` returns as (session, result): the result. QEMU is told
    to exit through the session and must exit cleanly."""
    from ..build.emulator import Emulator
    from ..build.platformio import upload

    stage = stage or (lambda _msg: None)
    if board.emulated:
        stage(f"booting QEMU {board.qemu_machine}")
        with Emulator(board.qemu_machine, elf) as emu:
            session, result = serve(emu.serial)
            session.exit(0)
            status = emu.wait(timeout)
        if status != 0:
            raise TinymemError(f"{what} exited with status {status} in QEMU ({board.qemu_machine})")
        return result
    import serial

    if not port:
        raise TinymemError(f"board '{board.id}' is real hardware: give --port, the serial port of its UART")
    stage(f"flashing over {board.upload_protocol}")
    upload(project, upload_port)
    try:
        link = serial.serial_for_url(port, baudrate=board.serial.baud, timeout=0)
    except serial.SerialException as exc:
        raise TinymemError(f"cannot open serial port {port}: {exc}") from None
    with link:
        return serve(link)[1]


def run_on_board(g: Graph, plan: MemoryPlan, board, inputs: list[np.ndarray], project_dir: str | Path | None = None,
                 port: str | None = None, upload_port: str | None = None, profile: bool = True,
                 timeout: float = 30.0, progress=None, on_stage=None, retries: int = 2) -> BoardRun:
    """inputs[i] is [N, *input_shape[1:]] (int8, or float for a float-I/O model: quantized on the host,
    the same contract as `tinymem sim`); returns outputs [N, *output_shape[1:]] and a profile."""
    from ..build.platformio import build, render_project

    stage = on_stage or (lambda _msg: None)
    inputs, _ = model_inputs(g, list(inputs))
    if not board.emulated and not port:
        raise TinymemError(f"board '{board.id}' is real hardware: give --port, the serial port of its UART")
    if project_dir is None:  # a throwaway project: build in a temporary directory, removed afterwards
        with tempfile.TemporaryDirectory(prefix=f"tinymem-{board.id}-") as tmp:
            return run_on_board(g, plan, board, inputs, tmp, port, upload_port, profile, timeout, progress, on_stage,
                                retries)
    project_dir = Path(project_dir)
    stage(f"generating the {board.id} project in {project_dir}")
    project = render_project(g, plan, board, project_dir, profile=profile)
    stage("building with PlatformIO")
    built = build(project)
    def serve(link):
        session = Session(link, timeout=timeout, progress=progress, retries=retries)
        hello = session.hello()
        return session, (session, hello, session.run(inputs))

    session, hello, runs = serve_on_board(board, project, built.elf, serve, port, upload_port, timeout, stage)
    check_memory(runs, built.ram_static_bytes, plan, board)
    report = profile_report(g, plan, board, hello, runs, built.ram_static_bytes, built.flash_bytes, session.stats)
    return BoardRun(model_outputs(g, _outputs(g, runs)), report, hello)
