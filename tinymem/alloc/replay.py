"""`tinymem alloc-replay`: replay a trace on tm_alloc and a baseline, on the host or on an
emulated board, and report peak heap, failures, fragmentation and per-op cost.

On a board the trace is compiled into flash with a generated firmware
(codegen/templates/alloc/replay_board.c.j2, built like any board project: tinymem.build) that
replays it on tm_alloc and on newlib-nano's malloc, timing every call with SysTick, and sends the
figures back as LOG frames (tinymem.link.session). QEMU runs with a slower virtual clock than
`tinymem run` uses (-icount shift=ICOUNT_SHIFT: 2^shift ns per instruction) so that one SysTick
tick is less than one instruction: per-op counts are exact instruction counts, not 40-instruction
steps."""
from __future__ import annotations

import tempfile
from pathlib import Path

from ..errors import TinymemError
from .config import AllocConfig, render_header
from .trace import OPS, Trace

ICOUNT_SHIFT = 6
BOARD_MAX_OPS = 200_000  # 16 B each in flash


def _fragmentation(peak_heap: int, peak_live: int) -> float:
    """Share of the peak heap that held no requested byte at the trace's live peak."""
    return round(1 - peak_live / peak_heap, 4) if peak_heap else 0.0


def host_result(raw: dict, peak_live: int) -> dict:
    out = {k: raw[k] for k in ("allocator", "ops", "failed_allocs", "peak_heap_bytes", "ns_per_op", "worst_ns_per_op",
                               "p99_ns_per_op", "p999_ns_per_op", "worst_op_index", "corrupted_blocks")}
    out["fragmentation"] = _fragmentation(raw["peak_heap_bytes"], peak_live)
    out["per_op"] = raw["per_op"]
    out["clock"] = "host CLOCK_MONOTONIC (ns); mean from whole-trace passes, worst and percentiles per call"
    if "stats" in raw:
        out["stats"] = raw["stats"] | {"check": "ok" if raw["check"] == 0 else f"error {raw['check']}"}
    return out


def replay_host(trace: Trace, cfg: AllocConfig, vs: str | None = None, repeat: int = 3) -> dict:
    from . import native

    peak_live = trace.profile().peak_live_bytes
    result = {"allocator": host_result(native.replay(trace, "tm_alloc", cfg, repeat), peak_live)}
    if vs:
        result["baseline"] = host_result(native.replay(trace, vs, repeat=repeat), peak_live)
        if vs == "newlib":
            result["baseline"]["model"] = ("newlib-nano's policy modelled on the host (firmware/alloc/nano_model.c); "
                                           "--board mps2_an386 runs the real one")
    return result


# ---------------------------------------------------------------------------------------------
# On an emulated board

def render_board_project(trace: Trace, cfg: AllocConfig, board, out_dir: Path, newlib_arena: int | None):
    """A PlatformIO project that replays the trace on the board (newlib too when newlib_arena)."""
    from codegen.render import environment

    from ..build.platformio import FIRMWARE_DIR
    from .boardrun import render

    main_c = environment().get_template("alloc/replay_board.c.j2").render(
        board=board, ops=trace.ops, n_slots=max(1, trace.n_slots), source=trace.source,
        vs_newlib=newlib_arena is not None, newlib_arena=newlib_arena or 0)
    extra = [FIRMWARE_DIR / "alloc" / n for n in ("tm_replay.c", "tm_replay.h")]
    return render(board, out_dir, main_c, extra, render_header(cfg, trace.source))


def _parse_r(fields: list[str]) -> dict:
    nums = list(map(int, fields[1:]))
    head = dict(zip(("ops", "failed", "corrupted", "peak_owned", "worst_op", "overhead"), nums[:6]))
    per = {}
    for k, name in enumerate(OPS):
        count, total, worst = nums[6 + 3 * k: 9 + 3 * k]
        if count:
            per[name] = (count, total, worst)
    return {"name": fields[0], **head, "per": per}


def board_result(r: dict, peak_live: int, per_tick: float) -> dict:
    """Ticks to instructions (per_tick instructions per SysTick tick under -icount)."""
    count = sum(c for c, _t, _w in r["per"].values())
    total = sum(t for _c, t, _w in r["per"].values())
    worst = max((w for _c, _t, w in r["per"].values()), default=0)
    return {
        "allocator": r["name"], "ops": r["ops"], "failed_allocs": r["failed"], "peak_heap_bytes": r["peak_owned"],
        "fragmentation": _fragmentation(r["peak_owned"], peak_live), "corrupted_blocks": r["corrupted"],
        "instructions_per_op": round(total * per_tick / count, 1) if count else 0.0,
        "worst_instructions_per_op": round(worst * per_tick), "worst_op_index": r["worst_op"],
        "per_op": {name: {"count": c, "mean_instructions": round(t * per_tick / c, 1),
                          "worst_instructions": round(w * per_tick)} for name, (c, t, w) in r["per"].items()},
        "clock": f"qemu-icount shift={ICOUNT_SHIFT}: instruction counts (SysTick, its read cost taken off)",
    }


def replay_board(trace: Trace, cfg: AllocConfig, board, vs: str | None = None, project_dir: str | Path | None = None,
                 timeout: float = 120.0, on_stage=None) -> dict:
    from ..build.platformio import build
    from ..link.session import Session
    from . import native
    from .boardrun import emulator

    stage = on_stage or (lambda _msg: None)
    if not board.emulated:
        raise TinymemError(f"alloc-replay runs on emulated boards; '{board.id}' is real hardware")
    if vs not in (None, "newlib"):
        raise TinymemError(f"on a board the baseline is newlib (its malloc is what the firmware links), not {vs!r}")
    if len(trace) > BOARD_MAX_OPS:
        raise TinymemError(f"{trace.source}: {len(trace):,} ops; a board replay takes at most {BOARD_MAX_OPS:,} "
                           "(the trace is compiled into flash): replay it on the host, or cut it")
    if project_dir is None:
        with tempfile.TemporaryDirectory(prefix=f"tinymem-alloc-{board.id}-") as tmp:
            return replay_board(trace, cfg, board, vs, tmp, timeout, on_stage)
    newlib_arena = None
    if vs:  # room for newlib: what its model needed on the host, and some
        need = native.replay(trace, "newlib", repeat=0)["peak_heap_bytes"]
        newlib_arena = (need + need // 8 + 4096 + 7) & ~7
    stage(f"generating the {board.id} replay firmware")
    project = render_board_project(trace, cfg, board, Path(project_dir), newlib_arena)
    stage("building with PlatformIO")
    built = build(project)
    stage(f"replaying {len(trace):,} ops in QEMU {board.qemu_machine}")
    lines = []
    with emulator(board.qemu_machine, built.elf, ICOUNT_SHIFT) as emu:
        session = Session(emu.serial, timeout=timeout)
        session.receive(timeout, what="DONE")
        lines = list(session.logs)
        status = emu.wait(timeout)
    errors = [ln for ln in lines if ln.startswith("E ")]
    if errors:
        code, ptr = map(int, errors[0].split()[1:3])
        raise TinymemError(f"tm_alloc reported error {code} at 0x{ptr:08x} while replaying {trace.source} on {board.id}")
    if status != 0:
        raise TinymemError(f"the replay firmware exited with status {status} (1: a block's bytes changed under it)")
    runs = {r["name"]: r for r in (_parse_r(ln.split()[1:]) for ln in lines if ln.startswith("R "))}
    stats = next((list(map(int, ln.split()[1:])) for ln in lines if ln.startswith("S ")), None)
    if "tm_alloc" not in runs or stats is None or (vs and "newlib" not in runs):
        raise TinymemError(f"the replay firmware on {board.id} did not report all its results: {lines}")
    per_tick = 1e9 / board.clock_hz / (1 << ICOUNT_SHIFT)
    peak_live = trace.profile().peak_live_bytes
    result = {"allocator": board_result(runs["tm_alloc"], peak_live, per_tick)}
    names = ("check", "in_use_bytes", "peak_in_use_bytes", "heap_bytes", "pool_bytes", "meta_bytes", "owned_bytes",
             "fragmentation_permille", "largest_free_bytes", "large_peak_bytes", "large_max_block_bytes",
             "pool_spills")
    result["allocator"]["stats"] = dict(zip(names, stats)) | {"check": "ok" if stats[0] == 0 else f"error {stats[0]}"}
    if vs:
        result["baseline"] = board_result(runs["newlib"], peak_live, per_tick)
        result["baseline"]["allocator"] = "newlib-nano"
    result["board"] = {"id": board.id, "ram_static_bytes": built.ram_static_bytes, "flash_bytes": built.flash_bytes}
    return result
