"""`tinymem alloc-config` and `tinymem alloc-replay`: tm_alloc configured from an allocation trace,
and traces replayed on it against a baseline. Registered on the `cli` group of tinymem/cli.py.
Thin: parse, call tinymem.alloc, print."""
from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from .cli import _print_json, cli, console
from .errors import TinymemError

SEARCH_OPTIONS = [
    click.option("--small-max", type=int, default=256, show_default=True,
                 help="The most a request may be for size-class pools (the O(1) path): the search tries pools up to "
                      "this size, then half, down to none, and keeps the first whose heap is within 5% of a "
                      "first-fit malloc's (newlib-nano's policy)."),
    click.option("--max-spill", type=float, default=0.02, show_default=True,
                 help="Share of the requests the pools are for that may miss them (their pool full, or no class "
                      "kept for their size): those take the large region."),
    click.option("--canaries", is_flag=True, help="A guard word at each block's end, checked at free (4 B a block)."),
]


def _search_options(f):
    for option in reversed(SEARCH_OPTIONS):
        f = option(f)
    return f


def _size(text: str | None) -> int | None:
    from .alloc.config import parse_size

    return None if text is None else parse_size(text)


def _configure(trace, heap: int | None, headroom: float, small_max: int, max_spill: float, canaries: bool,
               trace_mode: bool = False) -> dict:
    """What alloc-config decides: the config for the heap, and the figures it reports."""
    from dataclasses import replace

    from .alloc.config import choose_config, with_headroom, worst_case

    if not 0 <= headroom <= 10:
        raise TinymemError(f"--headroom must be between 0 and 10 (a share: 0.1 = 10%), got {headroom}")
    if not 0 <= max_spill <= 1:
        raise TinymemError(f"--max-spill must be between 0 and 1, got {max_spill}")
    best, measured = choose_config(trace, canaries=canaries, small_max=small_max, max_spill=max_spill)
    cfg = replace(with_headroom(best, measured, headroom, heap), trace_mode=trace_mode)
    return {"config": cfg, "measured": measured,
            "need_bytes": with_headroom(best, measured, 0.0, None).total_bytes,
            "with_headroom_bytes": with_headroom(best, measured, headroom, None).total_bytes,
            "worst_case": worst_case(cfg, measured["large_peak"], measured["large_max"])}


@cli.command(name="alloc-config")
@click.option("--trace", "trace_path", required=True, type=click.Path(dir_okay=False), help="Allocation trace (CSV: op,id,size).")
@click.option("--heap", help="RAM for the allocator, metadata included (e.g. 32KiB); default: what the trace needs.")
@click.option("--headroom", type=float, default=0.1, show_default=True, help="Extra pool slots and large-region bytes, as a share.")
@_search_options
@click.option("--trace-mode", is_flag=True, help="Build tm_alloc to stream every call over the serial link (to record a trace).")
@click.option("-o", "--out", "out", default="tinymem_alloc_config.h", show_default=True, type=click.Path(dir_okay=False),
              help="The config header to write.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def alloc_config(trace_path: str, heap: str | None, headroom: float, small_max: int, max_spill: float, canaries: bool,
                 trace_mode: bool, out: str, as_json: bool) -> None:
    """Size classes and pool sizes for a trace: fewest bytes with headroom; writes tinymem_alloc_config.h."""
    from .alloc.config import render_header
    from .alloc.trace import load_trace

    trace = load_trace(trace_path)
    profile = trace.profile()
    chosen = _configure(trace, _size(heap), headroom, small_max, max_spill, canaries, trace_mode)
    cfg, measured, worst = chosen["config"], chosen["measured"], chosen["worst_case"]
    report = {"ops": profile.ops, "peak_live_bytes": profile.peak_live_bytes, "peak_live_blocks": profile.peak_live_blocks,
              "need_bytes": chosen["need_bytes"], "headroom_bytes": chosen["with_headroom_bytes"],
              "headroom_percent": round(headroom * 100), "worst_case_bytes": worst["bytes"], "bound": worst["bound"]}
    try:
        Path(out).write_text(render_header(cfg, trace_path, report))
    except OSError as exc:
        raise TinymemError(f"cannot write {out}: {exc.strerror}") from None
    result = {"trace": profile.as_dict(), "config": cfg.as_dict(), "need_bytes": chosen["need_bytes"],
              "with_headroom_bytes": chosen["with_headroom_bytes"], "heap_bytes": cfg.total_bytes, "worst_case": worst,
              "search": {"configs_tried": measured["evaluated"], "small_requests": measured["small_requests"],
                         "pool_spills": measured["spills"]}, "output": out}
    if as_json:
        _print_json(result)
        return
    table = Table(title=f"tm_alloc classes for {trace_path}")
    for col in ("slot bytes", "slots", "pool bytes"):
        table.add_column(col, justify="right")
    for size, count in cfg.classes:
        table.add_row(str(size), str(count), f"{size * count:,}")
    console.print(table)
    console.print(f"large region {cfg.large_granules * cfg.granule:,} B in {cfg.granule}-byte granules, "
                  f"metadata {cfg.meta_bytes():,} B (out of band){', canaries on' if canaries else ''}")
    console.print(f"the trace needs {chosen['need_bytes']:,} B (peak live {profile.peak_live_bytes:,} B); "
                  f"{result['with_headroom_bytes']:,} B with {headroom:.0%} headroom; heap {cfg.total_bytes:,} B")
    console.print(f"worst case for these classes: {worst['bytes']:,} B ({worst['bound']})")
    console.print(f"wrote {out}")


@cli.command(name="alloc-replay")
@click.option("--trace", "trace_path", required=True, type=click.Path(dir_okay=False), help="Allocation trace (CSV: op,id,size).")
@click.option("--board", "board_name", default="host", show_default=True,
              help="host, or an emulated board (see `tinymem boards`): the trace is replayed there.")
@click.option("--vs", type=click.Choice(["newlib", "glibc"]),
              help="Baseline: newlib-nano's malloc (on a board the real one, on the host a model), or glibc (host).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="A tinymem_alloc_config.h from alloc-config; default: configure from this trace, no headroom.")
@click.option("--heap", help="With no --config: RAM for the allocator, metadata included (default: what the trace needs).")
@_search_options
@click.option("--project", "project_dir", type=click.Path(file_okay=False), help="Keep the board's replay project here.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def alloc_replay(trace_path: str, board_name: str, vs: str | None, config_path: str | None, heap: str | None,
                 small_max: int, max_spill: float, canaries: bool, project_dir: str | None, as_json: bool) -> None:
    """Replay a trace on tm_alloc (and a baseline): peak heap, failures, fragmentation, per-op cost."""
    from .alloc.config import load_config
    from .alloc.replay import replay_board, replay_host
    from .alloc.trace import load_trace

    trace = load_trace(trace_path)
    if config_path:
        cfg = load_config(config_path)
    else:
        cfg = _configure(trace, _size(heap), 0.0, small_max, max_spill, canaries)["config"]
    if board_name == "host":
        with console.status(f"replaying {len(trace):,} ops on the host"):
            result = replay_host(trace, cfg, vs)
    else:
        from .build.boards import load_board

        board = load_board(board_name)
        with console.status("starting") as status:
            result = replay_board(trace, cfg, board, vs, project_dir, on_stage=status.update)
    result["trace"] = trace.profile().as_dict()
    result["config"] = cfg.as_dict()
    if as_json:
        _print_json(result)
        return
    _print_replay(result, board_name)


def _print_replay(result: dict, where: str) -> None:
    rows = [result["allocator"]] + ([result["baseline"]] if "baseline" in result else [])
    host = "ns_per_op" in rows[0]
    table = Table(title=f"alloc-replay on {where}: {result['trace']['ops']:,} ops, "
                        f"peak live {result['trace']['peak_live_bytes']:,} B")
    cols = ["allocator", "peak heap B", "fragmentation", "failed"] + (
        ["ns/op", "p99.9 ns", "worst ns"] if host else ["instr/op", "worst instr"])
    for col in cols:
        table.add_column(col, justify="left" if col == "allocator" else "right")
    for r in rows:
        cost = ([f"{r['ns_per_op']:.1f}", str(r["p999_ns_per_op"]), str(r["worst_ns_per_op"])] if host else
                [f"{r['instructions_per_op']:.1f}", str(r["worst_instructions_per_op"])])
        table.add_row(r["allocator"], f"{r['peak_heap_bytes']:,}", f"{r['fragmentation']:.1%}", str(r["failed_allocs"]), *cost)
    console.print(table)
    if "baseline" in result:
        a, b = result["allocator"], result["baseline"]
        speed = (a["ns_per_op"] / b["ns_per_op"] if host else a["instructions_per_op"] / b["instructions_per_op"])
        console.print(f"tm_alloc / {b['allocator']}: peak heap {a['peak_heap_bytes'] / b['peak_heap_bytes']:.3f}x, "
                      f"cost per op {speed:.2f}x ({rows[0]['clock']})")
    stats = result["allocator"].get("stats", {})
    if stats:
        console.print(f"tm_alloc invariant check after the replay: {stats['check']}; "
                      f"pool spills {stats.get('pool_spills', 0)}")
