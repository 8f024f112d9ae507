"""tm_alloc wired into the board runtime: generated projects carry the allocator and a config
derived from the runtime's own allocation trace, which the firmware records itself."""
import shutil

import pytest

from test_cli import fc_model
from tinymem.alloc.config import load_config
from tinymem.alloc.runtime import RUNTIME_TRACE, runtime_config, startup_config, trace_from_logs
from tinymem.alloc.trace import load_trace, parse_lines
from tinymem.build import platformio as pio
from tinymem.build.boards import load_board
from tinymem.errors import TinymemError
from tinymem.model.tflite import parse_tflite
from tinymem.plan import make_plan


@pytest.fixture(scope="module")
def fc():
    g = parse_tflite(fc_model(), "fc")
    return g, make_plan(g)


def test_generated_projects_carry_the_allocator_and_its_config(fc, tmp_path):
    project = pio.render_project(*fc, "pico", tmp_path / "p")
    src = project.dir / "src"
    assert (src / "tm_alloc.c").exists() and (src / "tm_alloc.h").exists()
    cfg = load_config(src / "tinymem_alloc_config.h")
    assert cfg == runtime_config()
    sizes = [size for _op, _slot, size, _a in load_trace(RUNTIME_TRACE).ops]
    assert cfg.heap_bytes == sum(-(-s // 8) * 8 for s in sizes) and not cfg.classes
    assert "tm_malloc(TM_FRAME_MAX_PAYLOAD)" in (src / "main.c").read_text()


def test_startup_config_refuses_traces_that_free():
    with pytest.raises(TinymemError, match="frees or resizes"):
        startup_config(parse_lines(["op,id,size", "alloc,a,8", "free,a,"], "t"))


def test_trace_logs_parse():
    t = trace_from_logs(["tinymem firmware is up", "tm_alloc a 00000000 00000010 00000000 20000100",
                         "tm_alloc f 20000100 00000000 00000000 00000000"])
    assert [(o[0], o[2]) for o in t.ops] == [(0, 16), (1, 0)]


@pytest.mark.skipif(not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc")),
                    reason="qemu-system-arm or arm-none-eabi-gcc missing")
def test_the_firmware_records_the_committed_trace(fc, tmp_path):
    from tinymem.alloc.runtime import record_runtime_trace

    recorded = record_runtime_trace(*fc, load_board("mps2_an386"), tmp_path / "rec")
    assert recorded.ops == load_trace(RUNTIME_TRACE).ops
