"""`tinymem demo` end to end: the held-out digits on the host and on the emulated Cortex-M4
(mps2_an386, 256 KB RAM limit), with the summary, the profile and the plot it promises."""
import io
import json
import shutil

import pytest
from rich.console import Console

from test_boards import needs_arm_gcc
from tinymem.demo import run_demo

pytestmark = [needs_arm_gcc, pytest.mark.skipif(not shutil.which("qemu-system-arm"), reason="qemu-system-arm missing")]


def test_demo_runs_the_digits_on_the_emulated_board(tmp_path):
    text = io.StringIO()
    result = run_demo(Console(file=text, width=120), out_dir=tmp_path)
    out = text.getvalue()

    assert result["board"] == "mps2_an386" and result["samples"] == 450
    assert result["accuracy"] > 0.90
    assert result["agree_host"] == 1.0 and result["agree_litert"] in (1.0, None)
    for line in ("accuracy on the board", "board vs host simulation: bit-exact on 450/450",
                 "planned peak SRAM", "measured peak SRAM", "board RAM limit 262,144 B", "invoke (median)"):
        assert line in out, line

    prof = json.loads((tmp_path / "board_profile.json").read_text())
    assert prof == json.loads(json.dumps(result["profile"]))
    assert prof["ram_limit_bytes"] == 256 * 1024 and prof["unit"] == "instructions" and prof["clock"] == "qemu-icount"
    assert [layer["op"] for layer in prof["layers"]][:2] == ["CONV_2D", "CONV_2D"]
    assert all(layer["instructions"] > 0 for layer in prof["layers"] if layer["op"] != "RESHAPE")
    assert prof["plan"]["peak_sram_bytes"] <= prof["peak_sram_measured_bytes"] <= prof["plan"]["bound_bytes"]
    assert prof["peak_sram_measured_bytes"] <= prof["ram_limit_bytes"] and prof["within_plan_bound"]
    png = (tmp_path / "board_profile.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
