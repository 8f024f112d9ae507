"""Patch-based inference on the emulated 256 KB board (mps2_an386 in QEMU): a model whose
layer-wise plan does not fit the board runs with `tinymem run --patch auto`, bit-exact with LiteRT,
and the RAM the firmware measures (static RAM + stack high water) confirms the plan."""
import json
import shutil

import numpy as np
import pytest

from reference import litert_run
from test_boards import needs_arm_gcc
from test_patch_models import mobilenet_like
from tinymem.build.boards import load_board
from tinymem.build.platformio import check_fits, runtime_ram_bytes
from tinymem.cli import main
from tinymem.errors import TinymemError
from tinymem.model.tflite import parse_tflite
from tinymem.plan import make_plan
from tinymem.plan.patch_search import search

pytestmark = [needs_arm_gcc, pytest.mark.skipif(not shutil.which("qemu-system-arm"),
                                                reason="qemu-system-arm missing (apt-get install qemu-system-arm)")]


def test_too_big_layer_wise_runs_patch_based(tmp_path, capsys):
    model = mobilenet_like(160)
    g = parse_tflite(model, "mobilenet_like_160")
    board = load_board("mps2_an386")
    with pytest.raises(TinymemError, match="does not fit board"):
        check_fits(make_plan(g), board)
    path = tmp_path / "m.tflite"
    path.write_bytes(model)
    x = np.random.default_rng(0).integers(-128, 128, (2, 160, 160, 3)).astype(np.int8)
    np.save(tmp_path / "in.npy", x)
    code = main(["run", str(path), "--board", "mps2_an386", "--patch", "auto", "--input", str(tmp_path / "in.npy"),
                 "--output", str(tmp_path / "out.npy"), "--profile", str(tmp_path / "prof.json")])
    assert code == 0, capsys.readouterr()
    assert np.array_equal(np.load(tmp_path / "out.npy"), litert_run(model, [x])[0])
    prof = json.loads((tmp_path / "prof.json").read_text())
    plan = search(g, "auto").plan
    assert prof["peak_sram_planned_bytes"] == plan.peak_sram_bytes < make_plan(g).peak_sram_bytes
    # measured: the arena plus the runtime's static RAM (protocol buffers, profile counters), and the stack
    assert plan.peak_sram_bytes < prof["ram_static_bytes"] <= plan.peak_sram_bytes + runtime_ram_bytes(plan, board, True)
    assert prof["peak_sram_measured_bytes"] == prof["ram_static_bytes"] + prof["stack_high_water_bytes"] <= board.sram_bytes
    assert prof["stack_high_water_bytes"] < 2048  # per-patch params structs live on the stack, one at a time
