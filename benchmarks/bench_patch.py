"""Patch-based inference vs TensorFlow Lite Micro and vs our layer-wise plan, in one run.

    .venv/bin/python benchmarks/bench_patch.py [--json] [--models NAME|PATH.tflite ...]
                                               [--board mps2_an386 | --no-board] [--max-overhead 0.15]

Per model: TFLM's smallest working arena (bisection, benchmarks/tflm.py) and its head/tail, our
layer-wise peak SRAM, the peak of `--patch auto` (lowest peak within --max-overhead extra MACs)
and its extra MACs, the search time; on the emulated board, the patch plan run end to end: RAM
measured by the firmware (static RAM + stack high water) against the plan, outputs compared with
TFLM's. `mobilenet_like_160` is a MobileNetV2-0.5-style net at 160x160 (tests/test_patch_models.py)
whose layer-wise plan does not fit the board's 256 KB: it only runs patch-based.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))
from tflm import run_tflm  # noqa: E402

from tinymem.errors import TinymemError  # noqa: E402
from tinymem.model.tflite import parse_tflite  # noqa: E402
from tinymem.plan.patch_search import search  # noqa: E402
from tinymem.sim.host import sample_shape  # noqa: E402

MODELS = ROOT / "models"
DEFAULT = ["mobilenetv2_035_96", "mobilenetv2_050_144", "mcunet_like", "mobilenet_like_160"]
# Goals of the issue: peak SRAM with --patch auto this many times below TFLM's arena, <= 15% extra MACs.
GOALS = {"mobilenetv2_035_96": 5.0, "mobilenetv2_050_144": 8.0}
MAX_EXTRA_MACS = 0.15


@dataclass
class Row:
    model: str
    input_bytes: int
    tflm_arena: int
    tflm_head: int
    tflm_tail: int
    layerwise_peak: int
    patch_peak: int
    schedule: str
    extra_macs_ratio: float
    search_s: float
    considered: int
    board: str | None = None
    board_ram_measured: int | None = None  # static RAM + stack high water, as the firmware reports
    board_ram_static: int | None = None
    board_stack: int | None = None
    board_planned: int | None = None
    board_max_diff_vs_tflm: int | None = None
    layerwise_fits_board: bool | None = None
    board_error: str | None = None

    def ratios(self) -> dict:
        return {"tflm_arena_over_patch": self.tflm_arena / self.patch_peak,
                "tflm_head_over_patch": self.tflm_head / self.patch_peak,
                "layerwise_over_patch": self.layerwise_peak / self.patch_peak}


def load(arg: str) -> tuple[str, bytes, np.ndarray]:
    if arg == "mobilenet_like_160":
        from test_patch_models import mobilenet_like

        model = mobilenet_like(160)
        return arg, model, np.random.default_rng(0).integers(-128, 128, (2, 160, 160, 3)).astype(np.int8)
    path = Path(arg) if arg.endswith(".tflite") else MODELS / f"{arg}.tflite"
    model = path.read_bytes()
    saved = path.with_suffix(".inputs.npy")
    if saved.exists():
        return path.stem, model, np.load(saved)[:2]
    g = parse_tflite(model, path.stem)
    shape = sample_shape(g.t(g.inputs[0]).shape)
    return path.stem, model, np.random.default_rng(0).integers(-128, 128, (2,) + shape).astype(np.int8)


def bench(name: str, model: bytes, x: np.ndarray, board: str | None, max_overhead: float) -> Row:
    g = parse_tflite(model, name)
    ref = run_tflm(model, [x], len(g.outputs), rounds=1)
    ch = search(g, "auto", max_overhead=max_overhead)
    d = ch.as_dict()
    row = Row(name, g.t(g.inputs[0]).nbytes, ref.arena, ref.head, ref.tail, d["layerwise_peak_sram_bytes"],
              d["peak_sram_bytes"], d["label"], d["extra_macs_ratio"], d["search_seconds"], d["schedules_considered"])
    if board:
        from tinymem.build.boards import load_board
        from tinymem.build.platformio import check_fits
        from tinymem.link.run import run_on_board

        b = load_board(board)
        row.board = b.id
        try:
            check_fits(ch.layerwise, b)
            row.layerwise_fits_board = True
        except TinymemError:
            row.layerwise_fits_board = False
        try:
            with tempfile.TemporaryDirectory(prefix=f"bench-patch-{name}-") as work:
                run = run_on_board(g, ch.plan, b, [x], project_dir=work)
        except TinymemError as e:
            row.board_error = str(e).splitlines()[0]
            return row
        p = run.profile
        row.board_ram_measured, row.board_ram_static = p["peak_sram_measured_bytes"], p["ram_static_bytes"]
        row.board_stack, row.board_planned = p["stack_high_water_bytes"], p["peak_sram_planned_bytes"]
        row.board_max_diff_vs_tflm = max(int(np.abs(a.astype(int) - r).max()) for a, r in zip(run.outputs, ref.outputs))
    return row


def kib(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:.1f}"


def goals(rows: list[Row]) -> dict:
    out = {}
    for r in rows:
        if r.model in GOALS:
            ratio = r.ratios()["tflm_arena_over_patch"]
            out[r.model] = {"tflm_arena_over_patch": ratio, "target": GOALS[r.model],
                            "met": ratio >= GOALS[r.model] and r.extra_macs_ratio <= MAX_EXTRA_MACS,
                            "extra_macs_ratio": r.extra_macs_ratio,
                            "input_bytes": r.input_bytes,
                            "budget_bytes": r.tflm_arena / GOALS[r.model]}
    return out


def render(rows: list[Row], console: Console) -> None:
    t = Table(title="patch-based inference (--patch auto) vs TFLite Micro and our layer-wise plan (KiB)")
    for col in ("model", "TFLM arena", "(head+tail)", "layer-wise", "patch", "schedule", "+MACs",
                "TFLM/ patch", "layer-wise/ patch", "search s", "board RAM", "planned", "vs TFLM"):
        t.add_column(col, justify="left" if col in ("model", "schedule") else "right", no_wrap=col == "model")
    for r in rows:
        q = r.ratios()
        goal = GOALS.get(r.model)
        mark = "" if goal is None else (" [green]✓[/]" if q["tflm_arena_over_patch"] >= goal else f" [red]✗ (goal {goal:g}×)[/]")
        board = "-" if r.board_ram_measured is None else f"{kib(r.board_ram_measured)}"
        if r.board_error:
            board = "[red]failed[/]"
        diff = "-" if r.board_max_diff_vs_tflm is None else ("exact" if r.board_max_diff_vs_tflm == 0 else f"±{r.board_max_diff_vs_tflm}")
        t.add_row(r.model, kib(r.tflm_arena), f"{kib(r.tflm_head)}+{kib(r.tflm_tail)}", kib(r.layerwise_peak)
                  + ("" if r.layerwise_fits_board in (None, True) else " [red](no fit)[/]"),
                  kib(r.patch_peak), r.schedule, f"{r.extra_macs_ratio:+.1%}",
                  f"{q['tflm_arena_over_patch']:.2f}×{mark}", f"{q['layerwise_over_patch']:.2f}×", f"{r.search_s:.2f}",
                  board, kib(r.board_planned), diff)
    console.print(t)
    for r in rows:
        if r.board_error:
            console.print(f"[red]{r.model} on {r.board}:[/] {r.board_error}")
    for name, gl in goals(rows).items():
        if not gl["met"]:
            console.print(f"[yellow]{name}:[/] {gl['tflm_arena_over_patch']:.2f}× < {gl['target']:g}×: the goal needs a peak "
                          f"under {gl['budget_bytes'] / 1024:.1f} KiB, but the input tensor alone is "
                          f"{gl['input_bytes'] / 1024:.1f} KiB and stays in SRAM through the patch stage"
                          if gl["input_bytes"] > gl["budget_bytes"] else
                          f"[yellow]{name}:[/] {gl['tflm_arena_over_patch']:.2f}× < {gl['target']:g}×")
    console.print("board RAM = static RAM + stack high water measured by the firmware (the plan's arena + "
                  "the runtime); vs TFLM = largest |ours - TFLM| over the outputs.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--models", nargs="+", default=DEFAULT)
    ap.add_argument("--board", default="mps2_an386", help="emulated board to run the patch plans on")
    ap.add_argument("--no-board", action="store_true", help="plan and compare only")
    ap.add_argument("--max-overhead", type=float, default=MAX_EXTRA_MACS)
    args = ap.parse_args()
    board = None if args.no_board else args.board
    err = Console(file=os.fdopen(os.dup(2), "w"), stderr=True)  # TFLM's report is read through fds 1 and 2
    rows = []
    for arg in args.models:
        name, model, x = load(arg)
        err.print(f"benchmarking {name}")
        rows.append(bench(name, model, x, board, args.max_overhead))
    if args.json:
        print(json.dumps({"host": platform.platform(), "models": [asdict(r) | r.ratios() for r in rows],
                          "goals": goals(rows)}, indent=2))
    else:
        render(rows, Console(width=None if sys.stdout.isatty() else 200))


if __name__ == "__main__":
    main()
