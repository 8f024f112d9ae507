"""tm_alloc vs newlib-nano's malloc (emulated Cortex-M4) and glibc (host): peak heap and per-op cost.

    .venv/bin/python benchmarks/bench_alloc.py [--json] [--ops N] [--markdown]

Traces: the synthetic MCU workloads of tinymem/alloc/synth.py (seed 1) and the trace recorded
from the board runtime. tm_alloc is configured by alloc-config's search from the trace itself
(its defaults: pools for requests up to 256 B or fewer, kept within 5% of a first-fit malloc's
heap, at most 2% of their requests missing them, no canaries, no headroom) -- what
`tinymem alloc-replay --trace T` does -- and, in the "seed 2" rows, configured on seed 1 with
10% headroom and replayed on seed 2 (a profile that is not the run).
Board: mps2_an386 (Cortex-M4) in QEMU, instruction counts (-icount shift 6, exact), newlib 3.3
nano. Host: this machine, ns per op (mean of whole-trace passes; worst over single calls, noisy).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tinymem.alloc import synth  # noqa: E402
from tinymem.alloc.config import choose_config, with_headroom  # noqa: E402
from tinymem.alloc.replay import replay_board, replay_host  # noqa: E402
from tinymem.alloc.runtime import RUNTIME_TRACE  # noqa: E402
from tinymem.alloc.trace import load_trace  # noqa: E402
from tinymem.build.boards import load_board  # noqa: E402

BOARD = "mps2_an386"


def configure(trace, headroom=0.0):
    cfg, measured = choose_config(trace)
    return with_headroom(cfg, measured, headroom, None), measured["small_max"]


def measure(name, trace, configured, board, tmp) -> dict:
    cfg, small_max = configured
    b = replay_board(trace, cfg, board, "newlib", Path(tmp) / name)
    h = replay_host(trace, cfg, "glibc")
    return {
        "trace": name, "ops": len(trace), "peak_live_bytes": trace.profile().peak_live_bytes,
        "tm_peak": b["allocator"]["peak_heap_bytes"], "newlib_peak": b["baseline"]["peak_heap_bytes"],
        "glibc_peak": h["baseline"]["peak_heap_bytes"],
        "tm_instr": b["allocator"]["instructions_per_op"], "newlib_instr": b["baseline"]["instructions_per_op"],
        "tm_worst_instr": b["allocator"]["worst_instructions_per_op"],
        "newlib_worst_instr": b["baseline"]["worst_instructions_per_op"],
        "tm_ns": h["allocator"]["ns_per_op"], "glibc_ns": h["baseline"]["ns_per_op"],
        "tm_p999_ns": h["allocator"]["p999_ns_per_op"], "glibc_p999_ns": h["baseline"]["p999_ns_per_op"],
        "classes": len(cfg.classes), "small_max": small_max, "spills": b["allocator"]["stats"]["pool_spills"],
        "failed": b["allocator"]["failed_allocs"] + b["baseline"]["failed_allocs"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--markdown", action="store_true", help="print the README's markdown table")
    ap.add_argument("--ops", type=int, default=20000, help="ops per synthetic trace")
    args = ap.parse_args()
    board = load_board(BOARD)
    rows = []
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="tinymem-bench-alloc-") as tmp:
        for name, make in synth.WORKLOADS.items():
            console.print(f"{name} ...")
            trace = make(1, args.ops)
            rows.append(measure(name, trace, configure(trace), board, tmp))
            other = make(2, args.ops)
            rows.append(measure(f"{name} seed 2", other, configure(trace, 0.1), board, tmp))
        runtime = load_trace(RUNTIME_TRACE)
        rows.append(measure("board runtime (recorded)", runtime, configure(runtime), board, tmp))
    if args.json:
        print(json.dumps({"host": platform.platform(), "board": BOARD, "rows": rows}, indent=2))
        return 0
    if args.markdown:
        print("| trace | ops | peak live B | tm_alloc peak B | newlib peak B | ratio | glibc peak B "
              "| tm_alloc instr/op (worst) | newlib instr/op (worst) | tm_alloc ns/op | glibc ns/op | failed |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['trace']} | {r['ops']:,} | {r['peak_live_bytes']:,} | {r['tm_peak']:,} | {r['newlib_peak']:,} "
                  f"| {r['tm_peak'] / r['newlib_peak']:.3f} | {r['glibc_peak']:,} | {r['tm_instr']:.0f} ({r['tm_worst_instr']:,}) "
                  f"| {r['newlib_instr']:.0f} ({r['newlib_worst_instr']:,}) | {r['tm_ns']:.1f} | {r['glibc_ns']:.1f} "
                  f"| {r['failed']} |")
        return 0
    table = Table(title=f"tm_alloc vs newlib-nano ({BOARD}, instructions) and glibc ({platform.machine()}, ns)")
    for col in ("trace", "peak live", "tm_alloc peak", "newlib peak", "ratio", "glibc peak", "tm instr/op",
                "newlib instr/op", "tm worst", "newlib worst", "tm ns/op", "glibc ns/op"):
        table.add_column(col, justify="left" if col == "trace" else "right")
    for r in rows:
        table.add_row(r["trace"], f"{r['peak_live_bytes']:,}", f"{r['tm_peak']:,}", f"{r['newlib_peak']:,}",
                      f"{r['tm_peak'] / r['newlib_peak']:.3f}", f"{r['glibc_peak']:,}", f"{r['tm_instr']:.0f}",
                      f"{r['newlib_instr']:.0f}", f"{r['tm_worst_instr']:,}", f"{r['newlib_worst_instr']:,}",
                      f"{r['tm_ns']:.1f}", f"{r['glibc_ns']:.1f}")
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
