"""alloc-config: the layout mirrored in Python, the search, the header it writes (which must build
with tm_alloc.c), the worst-case bound, and the command line."""
import json
import subprocess
from pathlib import Path

import pytest

from tinymem.alloc import C_SOURCES, native, synth
from tinymem.alloc.config import (AllocConfig, choose_config, load_config, parse_size, render_header, with_headroom,
                                  worst_case)
from tinymem.cli import main
from tinymem.errors import TinymemError
from tinymem.sim.host import WARN_FLAGS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sensor():
    return synth.sensor_queue(3, 6000)


@pytest.mark.parametrize("classes, granule, canaries", [
    ((), 8, False), (((16, 3),), 16, True), (((8, 1), (24, 40), (64, 1024), (520, 2)), 32, False),
    (tuple((8 * (k + 1), 5 + k) for k in range(32)), 64, True),
])
def test_meta_bytes_match_the_c_layout(classes, granule, canaries):
    cfg = AllocConfig(classes, granule, canaries, sum(s * n for s, n in classes) + 9000)
    t = synth.sensor_queue(1, 200)
    stats = native.replay(t, "tm_alloc", cfg, repeat=0)["stats"]
    assert stats["meta_bytes"] == cfg.meta_bytes()
    assert stats["heap_bytes"] == cfg.large_off + cfg.large_granules * cfg.granule


def test_default_config_header_is_consistent():
    text = (ROOT / "firmware" / "runtime" / "tm_alloc_default_config.h").read_text()
    macros = dict(line.split()[1:3] for line in text.splitlines() if line.startswith("#define TM_ALLOC_") and
                  len(line.split()) >= 3)
    classes = tuple(tuple(int(v.strip(" {}u")) for v in pair.split(",")) for pair in
                    text.split("#define TM_ALLOC_CLASSES", 1)[1].splitlines()[0].strip().strip("{}").split("}, {"))
    cfg = AllocConfig(classes, int(macros["TM_ALLOC_GRANULE"].rstrip("u")), True, int(macros["TM_ALLOC_HEAP_BYTES"].rstrip("u")))
    assert cfg.meta_bytes() == int(macros["TM_ALLOC_META_BYTES"].rstrip("u"))


def test_the_search_serves_the_trace_with_few_bytes(sensor):
    cfg, m = choose_config(sensor, canaries=False, small_max=256, max_spill=0.02)
    assert cfg.classes and all(s <= 256 for s, _ in cfg.classes)
    assert m["spills"] <= 0.02 * m["small_requests"]
    exact = with_headroom(cfg, m, 0.0, None)
    tm = native.replay(sensor, "tm_alloc", exact, repeat=0)
    assert tm["failed_allocs"] == 0 and tm["check"] == 0 and tm["corrupted_blocks"] == 0
    assert tm["peak_heap_bytes"] <= exact.total_bytes
    newlib = native.replay(sensor, "newlib", repeat=0)["peak_heap_bytes"]
    assert tm["peak_heap_bytes"] <= 1.15 * newlib
    assert sensor.profile().peak_live_bytes < tm["peak_heap_bytes"]


def test_headroom_budget_and_bound(sensor):
    cfg, m = choose_config(sensor, canaries=True)
    roomy = with_headroom(cfg, m, 0.25, None)
    exact = with_headroom(cfg, m, 0.0, None)
    assert roomy.total_bytes > exact.total_bytes
    budget = with_headroom(cfg, m, 0.1, 32768)
    assert budget.total_bytes <= 32768 and budget.total_bytes > 32768 - 64
    with pytest.raises(TinymemError, match="more than --heap 1,000 B"):
        with_headroom(cfg, m, 0.1, 1000)
    w = worst_case(budget, m["large_peak"], m["large_max"])
    assert w["bytes"] >= exact.total_bytes and "Robson" in w["bound"] and w["pool_bytes"] == budget.pool_bytes


def test_header_round_trips_and_builds_with_tm_alloc(sensor, tmp_path):
    cfg, m = choose_config(sensor)
    cfg = with_headroom(cfg, m, 0.1, 16384)
    (tmp_path / "tinymem_alloc_config.h").write_text(render_header(cfg, "sensor.csv"))
    assert load_config(tmp_path / "tinymem_alloc_config.h") == cfg
    main_c = tmp_path / "main.c"
    main_c.write_text('#include <stdio.h>\n#include "tm_alloc.h"\nint main(void) {\n'
                      '    void *p = tm_malloc(24), *q = tm_malloc(3000);\n    tm_alloc_stats_t s;\n'
                      '    tm_heap_stats(tm_alloc_default_heap(), &s);\n    printf("%u %u %u\\n", s.heap_bytes, s.meta_bytes, '
                      's.pool_bytes);\n    tm_free(p);\n    tm_free(q);\n    return tm_heap_check(tm_alloc_default_heap());\n}\n')
    exe = tmp_path / "main"
    subprocess.run(["gcc", *WARN_FLAGS, "-O2", "-I", str(tmp_path), "-I", str(ROOT / "firmware" / "runtime"),
                    str(main_c), *(str(ROOT / "firmware" / "runtime" / n) for n in C_SOURCES), "-o", str(exe)],
                   check=True)
    heap, meta, pools = map(int, subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split())
    assert (meta, pools) == (cfg.meta_bytes(), cfg.pool_bytes) and heap + meta <= 16384


def test_load_config_errors(tmp_path):
    p = tmp_path / "x.h"
    p.write_text("#define X 1\n")
    with pytest.raises(TinymemError, match="not a header written by"):
        load_config(p)
    with pytest.raises(TinymemError, match="no such config header"):
        load_config(tmp_path / "none.h")


@pytest.mark.parametrize("text, value", [("32KiB", 32768), ("32K", 32768), ("1.5MiB", 1572864), ("4096", 4096)])
def test_sizes(text, value):
    assert parse_size(text) == value


def test_cli_alloc_config(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    synth.json_tree(1, 3000).write_csv(trace)
    out = tmp_path / "cfg.h"
    assert main(["alloc-config", "--trace", str(trace), "--heap", "32KiB", "--json", "-o", str(out)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["heap_bytes"] <= 32768 and d["need_bytes"] <= d["with_headroom_bytes"] <= d["heap_bytes"]
    assert d["worst_case"]["bytes"] >= d["need_bytes"] and d["config"]["classes"] and out.exists()
    assert "tinymem-alloc-config:" in out.read_text()
    assert main(["alloc-config", "--trace", str(trace), "--heap", "1KiB", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "more than --heap 1,024 B" in err and err.count("\n") == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("op,id,size\nalloc,a,8\nfree,b,\n")
    assert main(["alloc-config", "--trace", str(bad)]) == 1
    assert "bad.csv:3:" in capsys.readouterr().err
