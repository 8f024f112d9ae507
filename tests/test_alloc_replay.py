"""alloc-replay on the host (vs glibc and the newlib-nano model) and on an emulated Cortex-M4
(vs the real newlib-nano, instruction counts); the allocator's C tests on that board too."""
import json
import shutil
from pathlib import Path

import pytest

from tinymem.alloc import native, synth
from tinymem.alloc.boardrun import run_c_test
from tinymem.alloc.config import choose_config, with_headroom
from tinymem.alloc.replay import replay_board, replay_host
from tinymem.alloc.trace import parse_lines
from tinymem.build.boards import load_board
from tinymem.cli import main

C_TESTS = Path(__file__).resolve().parent / "c"
needs_qemu = pytest.mark.skipif(not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc")),
                                reason="qemu-system-arm or arm-none-eabi-gcc missing")
KEYS = {"allocator", "ops", "failed_allocs", "peak_heap_bytes", "fragmentation", "per_op", "worst_op_index"}


def configured(trace, **kw):
    cfg, m = choose_config(trace, **kw)
    return with_headroom(cfg, m, 0.0, None)


def mixed_trace():
    """Every op kind, memalign and zero sizes included."""
    lines = ["op,id,size,align"]
    for i in range(60):
        lines += [f"alloc,a{i},{(i * 37) % 300}", f"calloc,c{i},{8 + i}", f"memalign,m{i},{20 + i * 3},{8 << (i % 5)}"]
        if i % 3 == 0:
            lines += [f"realloc,a{i},{600 + i}", f"free,c{i},"]
        if i % 4 == 1:
            lines += [f"free,m{i},", f"realloc,a{i},0"]
    return parse_lines(lines, "mixed")


@pytest.mark.parametrize("vs", ["glibc", "newlib"])
def test_host_replay(vs):
    t = synth.json_tree(2, 4000)
    r = replay_host(t, configured(t), vs, repeat=1)
    for side in ("allocator", "baseline"):
        assert KEYS | {"ns_per_op", "worst_ns_per_op"} <= set(r[side])
        assert r[side]["ops"] == len(t) and r[side]["failed_allocs"] == 0 and r[side]["corrupted_blocks"] == 0
    assert r["allocator"]["stats"]["check"] == "ok"
    assert r["allocator"]["peak_heap_bytes"] >= t.profile().peak_live_bytes


def test_cli_host_replay_json(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    synth.sensor_queue(4, 3000).write_csv(trace)
    assert main(["alloc-replay", "--trace", str(trace), "--board", "host", "--vs", "glibc", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {"allocator", "baseline", "trace", "config"} <= set(d) and d["baseline"]["allocator"] == "glibc"
    assert d["allocator"]["ns_per_op"] > 0 and d["allocator"]["worst_ns_per_op"] >= d["allocator"]["p99_ns_per_op"]
    assert main(["alloc-replay", "--trace", str(trace), "--board", "mps2_an386", "--vs", "glibc"]) == 1
    assert "baseline is newlib" in capsys.readouterr().err


@needs_qemu
def test_board_replay_against_real_newlib(tmp_path):
    """The real newlib-nano on a Cortex-M4 in QEMU: exact instruction counts; and the host model of
    newlib-nano must need exactly the heap the real one needs (memalign aside)."""
    board = load_board("mps2_an386")
    for t in (synth.net_stack(3, 3000), mixed_trace()):
        r = replay_board(t, configured(t, canaries=True), board, "newlib", tmp_path / t.source.split("(")[0])
        a, b = r["allocator"], r["baseline"]
        assert KEYS | {"instructions_per_op", "worst_instructions_per_op"} <= set(a) and a["stats"]["check"] == "ok"
        assert a["failed_allocs"] == 0 and b["failed_allocs"] == 0 and a["corrupted_blocks"] == b["corrupted_blocks"] == 0
        assert 20 < a["instructions_per_op"] <= a["worst_instructions_per_op"] < 100_000
        model = native.replay(t, "newlib", repeat=0)["peak_heap_bytes"]
        if t.source == "mixed":  # memalign's split is modelled loosely: within 1%
            assert abs(b["peak_heap_bytes"] - model) <= 0.01 * model
        else:
            assert b["peak_heap_bytes"] == model


@needs_qemu
def test_cli_board_replay(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    synth.sensor_queue(5, 2000).write_csv(trace)
    assert main(["alloc-replay", "--trace", str(trace), "--board", "mps2_an386", "--vs", "newlib", "--json",
                 "--project", str(tmp_path / "proj")]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["baseline"]["allocator"] == "newlib-nano" and d["allocator"]["clock"].startswith("qemu-icount")


# The semantics run on the board takes the bare-metal lock: its own test checks the interrupt mask.
IRQ_LOCKED = '#include "tm_alloc_default_config.h"\n#define TM_ALLOC_LOCK_IRQ 1\n'


@needs_qemu
@pytest.mark.parametrize("test, args, header", [("alloc_semantics.c", [], IRQ_LOCKED),
                                                ("alloc_random.c", [7, 20000, 1, 16384], None)])
def test_c_tests_on_the_emulated_board(tmp_path, test, args, header):
    status, out = run_c_test(C_TESTS / test, args, load_board("mps2_an386"), tmp_path / "proj", alloc_header=header)
    assert status == 0, out
    if header:
        assert "irq lock ok" in out
    assert out.strip().splitlines()[-1] == "ok" if test == "alloc_semantics.c" else "ops 20000" in out
