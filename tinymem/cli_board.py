"""`tinymem boards`, `tinymem flash`, `tinymem run`: the board commands, registered on the `cli`
group of tinymem/cli.py (imported at its end). Thin: parse, call tinymem.build / tinymem.link, print."""
from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from .cli import _kernels_option, _load, _load_npy, _patch_choice, _patch_line, _patch_options, _plan, _print_json, _save_outputs, cli, console


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def boards(as_json: bool) -> None:
    """The boards tinymem can build for (boards/*.json): core, RAM limit, UART, emulator, clock."""
    from .build.boards import list_boards

    found = list_boards()
    if as_json:
        _print_json({"boards": [b.summary() for b in found]})
        return
    table = Table(title="boards")
    for col in ("board", "core", "RAM limit", "flash", "clock", "UART", "runs on", "counter", "upload"):
        table.add_column(col)
    for b in found:
        core = b.core.replace("cortex-", "").replace("plus", "+").upper() + ("F" if b.fpu else "")
        table.add_row(b.id, core, f"{b.sram_bytes // 1024} KB", f"{b.flash_bytes // 1024} KB",
                      f"{b.clock_hz / 1e6:g} MHz", b.serial.uart, f"QEMU {b.qemu_machine}" if b.emulated else "hardware",
                      b.clock, b.upload_protocol)
    console.print(table)


@cli.command()
@click.argument("project", type=click.Path(file_okay=False))
@click.option("--port", help="Upload port of a real board (default: PlatformIO's autodetection).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def flash(project: str, port: str | None, as_json: bool) -> None:
    """Build PROJECT (a tinymem board project) and flash it; an emulated board boots in QEMU instead."""
    from .build.emulator import boot_check
    from .build.platformio import build, open_project, upload

    proj, manifest = open_project(project)
    with console.status(f"building {project} for {proj.board.id}"):
        built = build(proj)
    result = {"project": str(proj.dir), "board": proj.board.id, "model": manifest.get("model"), "elf": str(built.elf),
              "ram_static_bytes": built.ram_static_bytes, "flash_bytes": built.flash_bytes,
              "ram_limit_bytes": proj.board.sram_bytes}
    if proj.board.emulated:
        with console.status(f"booting QEMU {proj.board.qemu_machine}"):
            result["hello"] = boot_check(proj.board.qemu_machine, built.elf)
        result["upload"] = "qemu boot check"
    else:
        with console.status(f"flashing over {proj.board.upload_protocol}"):
            upload(proj, port)
        result["upload"] = proj.board.upload_protocol
    if as_json:
        _print_json(result)
        return
    console.print(f"built {built.elf}: RAM {built.ram_static_bytes:,} B static of {proj.board.sram_bytes:,} B, "
                  f"flash {built.flash_bytes:,} B")
    if proj.board.emulated:
        h = result["hello"]
        console.print(f"booted in QEMU {proj.board.qemu_machine}: firmware answers for board {h['board']} "
                      f"({h['ops']} ops, arena {h['arena_bytes']:,} B, clock {h['clock']})")
    else:
        console.print(f"flashed {proj.board.id} over {proj.board.upload_protocol}")


@cli.command(name="run")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--board", "board_name", required=True, help="Board id (see `tinymem boards`) or a board .json.")
@click.option("--input", "inputs", required=True, multiple=True, type=click.Path(dir_okay=False),
              help="int8 .npy [N, *input_shape[1:]]; repeat for each model input.")
@click.option("--output", required=True, type=click.Path(dir_okay=False), help="Where to write int8 outputs (.npy).")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False),
              help="Write the board's measurements (per-layer clock, RAM, stack) as JSON.")
@click.option("--port", help="Serial port of a real board's UART (emulated boards need none).")
@click.option("--upload-port", help="Upload port of a real board, if not its UART port.")
@click.option("--project", "project_dir", type=click.Path(file_okay=False),
              help="Keep the generated PlatformIO project here (default: a temporary directory).")
@click.option("--planner", type=click.Choice(["tinymem", "greedy"]), default="tinymem", show_default=True)
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for each answer.")
@click.option("--retries", type=click.IntRange(0, 10), default=2, show_default=True,
              help="Times a sample is redone after a damaged, lost or late frame.")
@click.option("--no-profile", is_flag=True, help="Build without the per-layer timing hooks (RAM figures stay).")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as one JSON object.")
@_patch_options
@_kernels_option
def run_cmd(model: str, board_name: str, inputs: tuple[str, ...], output: str, profile_path: str | None,
            port: str | None, upload_port: str | None, project_dir: str | None, planner: str, timeout: float,
            retries: int, no_profile: bool, as_json: bool, patch: str = "off", sram: str | None = None,
            max_overhead: float = 0.15, stream_input: bool = False) -> None:
    """Generate, build and flash MODEL for a board, stream every input sample through it, save outputs."""
    from .build.boards import load_board
    from .link.report import memory_lines
    from .link.run import run_on_board

    board = load_board(board_name)
    g = _load(model)
    arrays = [_load_npy(p) for p in inputs]
    choice = _patch_choice(g, planner, patch, sram, max_overhead, stream_input)
    plan = choice.plan if choice else _plan(g, planner)
    if choice is not None and not as_json:
        console.print(_patch_line(choice))
    with console.status("starting") as status:
        def progress(done: int, total: int) -> None:
            status.update(f"sample {done}/{total} on {board.id}")

        result = run_on_board(g, plan, board, arrays, project_dir=project_dir, port=port, upload_port=upload_port,
                              profile=not no_profile, timeout=timeout, progress=progress, on_stage=status.update,
                              retries=retries)
    _save_outputs(output, result.outputs)
    prof = result.profile
    if profile_path:
        Path(profile_path).write_text(json.dumps(prof, indent=2) + "\n")
    if as_json:
        _print_json(prof)
        return
    unit = prof["unit"]
    console.print(f"ran {prof['samples']} sample(s) on {board.id}; wrote {output}")
    console.print(f"invoke: {prof[f'total_{unit}']:,} {unit} (median; clock {prof['clock']})")
    for line in memory_lines(prof):
        console.print(line)
    if prof["link"]["retries"]:
        console.print(f"[yellow]{prof['link']['retries']} sample(s) redone after link faults:[/yellow] "
                      + "; ".join(prof["link"]["faults"]), highlight=False)
    if profile_path:
        console.print(f"profile written to {profile_path}")
