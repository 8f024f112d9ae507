"""`tinymem demo`: the main job end to end on the bundled digits CNN, on the host and on a board.

inspect -> plan (ours vs TFLite Micro's greedy planner) -> generate C -> compile for the host -> run
the held-out digits through it -> build firmware for the emulated Cortex-M4 board (mps2_an386,
256 KB RAM limit) -> boot it in QEMU -> stream the same digits through it over the serial link ->
accuracy on the board, agreement with the host and with LiteRT BUILTIN_REF (when installed),
planned vs measured SRAM, per-layer profile, and a plot.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from .errors import TinymemError

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "models" / "digits_cnn.tflite"
DEMO_DIR = REPO / "build" / "demo"
DEMO_BOARD = "mps2_an386"


def digits_test_split() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits scaled to [0, 1], the held-out split examples/make_zoo.py did not train on."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise TinymemError("the demo needs scikit-learn for its data: pip install scikit-learn") from None
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    _, x_test, _, y_test = train_test_split(x, d.target, test_size=0.25, random_state=0, stratify=d.target)
    return x_test, y_test


def quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)


def litert_outputs(model: Path, xq: np.ndarray) -> np.ndarray | None:
    """LiteRT with its reference kernels (BUILTIN_REF), or None when LiteRT is not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        return None
    it = Interpreter(model_path=str(model), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    i_in, i_out = it.get_input_details()[0], it.get_output_details()[0]
    ref = []
    for sample in xq:
        it.set_tensor(i_in["index"], sample[None])
        it.invoke()
        ref.append(it.get_tensor(i_out["index"])[0].copy())
    return np.stack(ref)


def same_samples(a: np.ndarray, b: np.ndarray) -> int:
    """How many samples agree bit for bit."""
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return int(np.sum(np.all(a == b, axis=1)))


def _show(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _verdict(same: int, n: int) -> str:
    return "[green]bit-exact[/green]" if same == n else f"[red]{n - same} samples differ[/red]"


def host_steps(console: Console, g, xq: np.ndarray, y: np.ndarray, out_dir: Path) -> tuple:
    """Steps 1-4 on the host: (plan, host outputs, LiteRT outputs or None)."""
    from codegen import render_model

    from .plan import make_plan
    from .report.inspect import model_summary, ops_table
    from .report.plots import plot_plan
    from .report.tables import plan_table
    from .sim import build_host

    console.rule(f"[bold]1. inspect[/bold] {DEMO_MODEL.relative_to(REPO)}")
    console.print(ops_table(g, model_summary(g)))

    console.rule("[bold]2. plan[/bold] static arena, ours vs TFLite Micro's greedy-by-size planner")
    plan, greedy = make_plan(g, "tinymem"), make_plan(g, "greedy")
    console.print(plan_table(plan))
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_plan(plan, out_dir / "memory.png", baseline=greedy)
    console.print(f"peak SRAM {plan.peak_sram_bytes:,} B vs greedy {greedy.peak_sram_bytes:,} B "
                  f"({plan.peak_sram_bytes / greedy.peak_sram_bytes:.2f}x); flash {plan.flash_bytes:,} B; "
                  f"plot: {_show(out_dir / 'memory.png')}")

    console.rule("[bold]3. codegen + host build[/bold] (-O2 -Wall -Wextra -Werror)")
    files = render_model(g, plan, out_dir / "c")
    with console.status("compiling"):
        host = build_host(g, plan, out_dir / "sim")
    console.print(f"{len(files)} files in {_show(out_dir / 'c')}; binary {_show(host.exe)}")

    console.rule("[bold]4. run on the host[/bold] held-out sklearn digits through the generated C")
    out = host.run([xq], repeat=3)[0]
    accuracy = float(np.mean(out.reshape(len(y), -1).argmax(axis=1) == y))
    console.print(f"{len(y)} digits, accuracy {accuracy:.1%}, {host.us_per_invoke():.1f} us per inference on this host")
    ref = litert_outputs(DEMO_MODEL, xq)
    if ref is None:
        console.print("LiteRT not installed: skipping the bit-exactness check")
    else:
        same = same_samples(ref, out)
        console.print(f"LiteRT BUILTIN_REF vs tinymem: {_verdict(same, len(y))} on {same}/{len(y)} samples")
        if same != len(y):
            raise TinymemError("the generated C disagrees with LiteRT BUILTIN_REF")
    return plan, out, ref


def board_steps(console: Console, g, plan, xq: np.ndarray, y: np.ndarray, host_out: np.ndarray,
                ref: np.ndarray | None, board_id: str, out_dir: Path) -> dict:
    """Steps 5-6: build for the emulated board, stream the digits through it, summarise."""
    from .build.boards import load_board
    from .link.report import layers_table, memory_lines, plot_profile
    from .link.run import run_on_board
    from .ops.isa import core_isa
    from .plan import make_plan

    board = load_board(board_id)
    # The board runs its fastest kernel set (the DSP kernels on a Cortex-M4/M7), planned for it: its
    # outputs must still equal the host's portable build and LiteRT's, bit for bit.
    plan = make_plan(g, "tinymem", isa=core_isa(board.core))
    where = f"QEMU {board.qemu_machine}" if board.emulated else "hardware"
    console.rule(f"[bold]5. run on the board[/bold] {board.id} ({where}), RAM limited to {board.sram_bytes // 1024} KB, "
                 f"{plan.isa} kernels")
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("starting", total=len(xq))
        result = run_on_board(
            g, plan, board, [xq], project_dir=out_dir / "board",
            on_stage=lambda msg: bar.update(task, description=msg),
            progress=lambda done, total: bar.update(task, completed=done,
                                                    description=f"digits through {board.id} over the UART"))
    prof = result.profile
    out = result.outputs[0]
    n = len(y)
    accuracy = float(np.mean(out.reshape(n, -1).argmax(axis=1) == y))
    vs_host = same_samples(out, host_out)
    vs_ref = None if ref is None else same_samples(out, ref)
    link = prof["link"]

    console.rule("[bold]6. summary[/bold]")
    console.print(f"accuracy on the board: [bold]{accuracy:.1%}[/bold] on {n} held-out digits")
    console.print(f"board vs host simulation: {_verdict(vs_host, n)} on {vs_host}/{n} samples")
    if vs_ref is not None:
        console.print(f"board vs LiteRT BUILTIN_REF: {_verdict(vs_ref, n)} on {vs_ref}/{n} samples")
    for line in memory_lines(prof):
        console.print(line)
    console.print(layers_table(prof))
    console.print(f"link: {link['input_bytes']:,} input bytes at {link['input_bytes_per_s'] or 0:,} B/s "
                  f"(QEMU's UART), {link['retries']} samples redone; {prof['clock_note']}")
    plot = plot_profile(prof, out_dir / "board_profile.png")
    (out_dir / "board_profile.json").write_text(json.dumps(prof, indent=2) + "\n")
    console.print(f"plot: {_show(plot)}; profile: {_show(out_dir / 'board_profile.json')}")
    if vs_host != n or (vs_ref is not None and vs_ref != n):
        raise TinymemError("the board's outputs disagree with the host reference")
    return {"board": board.id, "samples": n, "accuracy": accuracy, "agree_host": vs_host / n,
            "agree_litert": None if vs_ref is None else vs_ref / n, "profile": prof, "plot": str(plot)}


def run_demo(console: Console, board: str | None = DEMO_BOARD, out_dir: str | Path = DEMO_DIR) -> dict:
    """The whole demo; board=None stops after the host steps. Returns the board summary (or {})."""
    from .model import load_tflite

    if not DEMO_MODEL.exists():
        raise TinymemError(f"bundled model {DEMO_MODEL} is missing (run `make zoo` to rebuild the zoo)")
    g = load_tflite(DEMO_MODEL)
    x, y = digits_test_split()
    scale, zp = g.t(g.inputs[0]).quant.scalar()
    xq = quantize(x, scale, zp)
    out_dir = Path(out_dir)
    plan, host_out, ref = host_steps(console, g, xq, y, out_dir)
    if board is None:
        return {}
    return board_steps(console, g, plan, xq, y, host_out, ref, board, out_dir)
