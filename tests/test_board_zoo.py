"""Every zoo model, on two emulated boards each, bit for bit against LiteRT BUILTIN_REF, with the
profile and memory fields checked for sanity.

Memory tolerance. The plan's peak_sram_bytes is the arena (activations + scratch + state). The
measured peak is .data+.bss of the linked ELF plus the painted stack's high-water mark, so it is
the arena plus what the runtime adds: protocol buffers, profile table, C library statics, stack.
The test holds it to   plan <= measured <= plan + runtime budget,   where the budget
(runtime_ram_bytes: RUNTIME_RAM_BYTES of runtime statics + 8 B per op of profile table + the
board's 4 KB minimum stack) is exactly what the plan-time guard (check_fits) admits a model with: measured
above it would mean the guard lets through models that do not fit. The statics alone must stay
within their RUNTIME_RAM_BYTES + 8 B/op share. Across the zoo measured - plan is about 1.4-2 KB.

Time: big inputs cross QEMU's UART at ~30 KB/s (96x96x3 in ~1 s on an idle machine), so the
MobileNets and mcunet_like run one sample each; the small models run their four saved samples.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from reference import litert_run
from test_boards import needs_arm_gcc
from tinymem.build.boards import load_board
from tinymem.build.platformio import PROFILE_BYTES_PER_OP, RUNTIME_RAM_BYTES
from tinymem.link.run import run_on_board
from tinymem.model.tflite import parse_tflite
from tinymem.plan import make_plan

pytestmark = [needs_arm_gcc, pytest.mark.skipif(not shutil.which("qemu-system-arm"), reason="qemu-system-arm missing")]
MODELS = Path(__file__).resolve().parent.parent / "models"
# (model, samples, two boards): every emulated board appears, each core (M3, M4, M7, STM32F405's M4).
RUNS = [
    ("digits_cnn", 4, ["mps2_an385", "netduinoplus2"]),
    ("awkward", 4, ["mps2_an386", "mps2_an500"]),
    ("dscnn_kws", 4, ["mps2_an500", "netduinoplus2"]),
    ("mcunet_like", 1, ["mps2_an385", "netduinoplus2"]),
    ("mobilenetv2_035_96", 1, ["mps2_an386", "mps2_an500"]),
    ("mobilenetv2_050_144", 1, ["mps2_an500", "mps2_an386"]),  # 249 KB arena: only the 256 KB boards
]
CASES = [(name, n, board) for name, n, boards in RUNS for board in boards]


@pytest.mark.parametrize("name, n, board", CASES, ids=[f"{name}-{board}" for name, _, board in CASES])
def test_zoo_model_on_board_is_bit_exact_with_litert(name, n, board, tmp_path):
    model = (MODELS / f"{name}.tflite").read_bytes()
    g = parse_tflite(model, name)
    plan = make_plan(g)
    x = np.load(MODELS / f"{name}.inputs.npy")[:n]
    b = load_board(board)
    run = run_on_board(g, plan, b, [x], project_dir=tmp_path / "proj")
    expected = litert_run(model, [x])[0]
    assert run.outputs[0].dtype == np.int8 and np.array_equal(run.outputs[0], expected), \
        f"{name} on {board}: {int(np.sum(run.outputs[0] != expected))} output bytes differ from LiteRT"

    p = run.profile
    assert (p["board"], p["samples"], p["clock"], p["unit"]) == (board, n, "qemu-icount", "instructions")
    layers = p["layers"]
    assert [layer["op"] for layer in layers] == [layer.op for layer in plan.layers]
    assert all(layer["instructions"] is not None and layer["instructions"] >= 0 for layer in layers)
    assert sum(layer["ticks"] for layer in layers) <= max(p["invoke"]["ticks"]) + len(layers)  # hooks nest in invoke
    macs = sum(layer.macs for layer in plan.layers)
    assert p["total_instructions"] >= macs / 4  # no kernel does more than 4 MACs per instruction
    heavy = max(layers, key=lambda layer: layer["macs"])
    assert heavy["instructions"] > 0

    measured, planned = p["peak_sram_measured_bytes"], p["plan"]["peak_sram_bytes"]
    assert measured == p["ram_static_bytes"] + p["stack_high_water_bytes"]
    assert 0 < p["stack_high_water_bytes"] < p["stack_capacity_bytes"]
    assert planned <= measured <= p["plan"]["bound_bytes"] and p["within_plan_bound"]
    assert p["ram_static_bytes"] - planned <= RUNTIME_RAM_BYTES + PROFILE_BYTES_PER_OP * len(plan.layers)
    assert measured <= p["ram_limit_bytes"] == b.sram_bytes
    assert p["link"]["retries"] == 0 and p["link"]["input_bytes"] == x.nbytes


def test_no_profile_flag_on_run_and_codegen(tmp_path, capsys):
    """--no-profile builds without the per-layer hooks: no layers in the profile, RAM figures kept."""
    from tinymem.cli import main

    x = np.load(MODELS / "digits_cnn.inputs.npy")[:1]
    np.save(tmp_path / "in.npy", x)
    model = str(MODELS / "digits_cnn.tflite")
    args = ["run", model, "--board", "mps2_an385", "--input", str(tmp_path / "in.npy"), "--output",
            str(tmp_path / "out.npy"), "--no-profile", "--json"]
    assert main(args) == 0
    prof = json.loads(capsys.readouterr().out)
    assert prof["layers"] == [] and prof["total_instructions"] > 0 and prof["within_plan_bound"]
    expected = litert_run((MODELS / "digits_cnn.tflite").read_bytes(), [x])[0]
    assert np.array_equal(np.load(tmp_path / "out.npy"), expected)

    assert main(["codegen", model, "--board", "mps2_an386", "-o", str(tmp_path / "proj"), "--no-profile"]) == 0
    assert "-DTINYMEM_PROFILE=0" in (tmp_path / "proj" / "platformio.ini").read_text()
    assert main(["codegen", model, "-o", str(tmp_path / "bare"), "--no-profile"]) != 0
    assert "--no-profile applies to board projects" in capsys.readouterr().err


def test_float_io_model_on_board_matches_litert(tmp_path):
    """TF's converter default (float32 I/O): quantized/dequantized on the host, int8 on the board."""
    name = "digits_cnn_float_io"
    model = (MODELS / f"{name}.tflite").read_bytes()
    g = parse_tflite(model, name)
    x = np.load(MODELS / f"{name}.inputs.npy")[:2]
    run = run_on_board(g, make_plan(g), load_board("mps2_an386"), [x], project_dir=tmp_path / "proj")
    assert run.outputs[0].dtype == np.float32 and np.array_equal(run.outputs[0], litert_run(model, [x])[0])
