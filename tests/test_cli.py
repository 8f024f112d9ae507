"""The CLI end to end: JSON shapes, files written, and one-line errors (never a traceback) on bad input."""
import json
import subprocess
import sys

import numpy as np
import pytest

from modelgen import ModelBuilder, options, rand_int8
from reference import litert_run
from tinymem.cli import main
from tinymem.errors import TinymemError
from tinymem.model.tflite import parse_tflite


def fc_model(in_f=24, out_f=10, dtype="int8"):
    rng = np.random.default_rng(0)
    m = ModelBuilder()
    q = dtype == "int8"
    x = m.tensor([1, in_f], dtype, 0.05 if q else None, -3 if q else None)
    w = m.tensor([out_f, in_f], dtype, 0.01 if q else None, 0 if q else None,
                 rand_int8(rng, (out_f, in_f)) if q else rng.normal(size=(out_f, in_f)).astype(np.float32))
    y = m.tensor([1, out_f], dtype, 0.1 if q else None, 7 if q else None)
    m.op("FULLY_CONNECTED", [x, w, -1], [y], options("FullyConnectedOptions"))
    return m.build([x], [y])


@pytest.fixture
def model_file(tmp_path):
    p = tmp_path / "fc.tflite"
    p.write_bytes(fc_model())
    return p


def run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_json(model_file, capsys):
    code, out, _ = run(["inspect", model_file, "--json"], capsys)
    assert code == 0
    d = json.loads(out)
    assert d["ops"][0]["op"] == "FULLY_CONNECTED" and d["ops"][0]["macs"] == 24 * 10
    assert d["weight_bytes"] == 240 and d["inputs"] == [[1, 24]]


def test_plan_json_fields(model_file, capsys):
    code, out, _ = run(["plan", model_file, "--json"], capsys)
    assert code == 0
    d = json.loads(out)
    for key in ("peak_sram_bytes", "arena_bytes", "flash_bytes", "macs", "layers"):
        assert key in d
    layer = d["layers"][0]
    assert set(layer) >= {"index", "op", "macs", "live_bytes", "in_place"}
    # weights 240 B + folded bias, multipliers and shifts (3 x 10 int32)
    assert d["flash_bytes"] == 240 + 3 * 10 * 4
    # Input (24 B) and output (10 B) are live together; the arena holds both, 4-byte aligned.
    assert d["peak_sram_bytes"] == d["arena_bytes"] <= 36 and layer["live_bytes"] <= 34


def test_codegen_writes_bundle(model_file, tmp_path, capsys):
    code, _, _ = run(["codegen", model_file, "-o", tmp_path / "out"], capsys)
    assert code == 0
    header = (tmp_path / "out" / "tinymem_model.h").read_text()
    assert "#define TINYMEM_ARENA_BYTES" in header and "TINYMEM_INPUT0_SHAPE { 1, 24 }" in header
    assert "malloc" not in (tmp_path / "out" / "tinymem_model.c").read_text()


def test_sim_matches_litert(model_file, tmp_path, capsys):
    x = np.random.default_rng(1).integers(-128, 128, (5, 24)).astype(np.int8)
    np.save(tmp_path / "in.npy", x)
    code, _, err = run(["sim", model_file, "--input", tmp_path / "in.npy", "--output", tmp_path / "out.npy"], capsys)
    assert code == 0, err
    ours = np.load(tmp_path / "out.npy")
    assert ours.dtype == np.int8 and ours.shape == (5, 10)
    assert np.array_equal(ours, litert_run(model_file.read_bytes(), x)[0])


@pytest.mark.parametrize("make,needle", [
    (lambda d: None, "no such file"),
    (lambda d: d.write_bytes(b""), "too short"),
    (lambda d: d.write_bytes(b"\x00" * 64), "not a TFLite flatbuffer"),
    (lambda d: d.write_bytes(fc_model()[:200]), "truncated or corrupt"),
    (lambda d: d.write_bytes(fc_model(dtype="float32")), "float32"),
])
def test_bad_model_files(tmp_path, capsys, make, needle):
    path = tmp_path / "bad.tflite"
    make(path)
    code, out, err = run(["plan", path], capsys)
    assert code == 1
    assert err.startswith("error:") and needle in err and "Traceback" not in err + out
    assert len(err.strip().splitlines()) <= 3  # one message (rich may wrap a long line)


def test_unsupported_op_names_op_and_list(tmp_path, capsys):
    m = ModelBuilder()
    x = m.act([1, 4], 0.1, 0)
    y = m.act([1, 4], 0.1, 0)
    m.op("SIN", [x], [y])
    path = tmp_path / "sin.tflite"
    path.write_bytes(m.build([x], [y]))
    code, _, err = run(["plan", path], capsys)
    assert code == 1 and "op 0 (SIN) is not supported" in err and "FULLY_CONNECTED" in err


@pytest.mark.parametrize("arr,needle", [
    (np.zeros((2, 24), np.float32), "expected int8"),
    (np.zeros((2, 25), np.int8), "expected [N, 24]"),
])
def test_sim_bad_inputs(model_file, tmp_path, capsys, arr, needle):
    np.save(tmp_path / "in.npy", arr)
    code, _, err = run(["sim", model_file, "--input", tmp_path / "in.npy", "--output", tmp_path / "o.npy"], capsys)
    assert code == 1 and needle in err


def test_sim_unreadable_npy(model_file, tmp_path, capsys):
    (tmp_path / "in.npy").write_bytes(b"garbage")
    code, _, err = run(["sim", model_file, "--input", tmp_path / "in.npy", "--output", tmp_path / "o.npy"], capsys)
    assert code == 1 and "not a readable .npy" in err


def test_corrupted_models_never_crash():
    """Random truncations and byte flips: either a valid model or a TinymemError, nothing else."""
    good = fc_model()
    rng = np.random.default_rng(7)
    for trial in range(300):
        buf = bytearray(good)
        if trial % 2:
            buf = buf[: int(rng.integers(8, len(buf)))]
        for _ in range(int(rng.integers(1, 6))):
            buf[int(rng.integers(8, len(buf)))] = int(rng.integers(0, 256))
        try:
            g = parse_tflite(bytes(buf), "fuzzed")
            from tinymem.plan import make_plan
            make_plan(g)
        except TinymemError:
            pass


def test_console_script_error_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tinymem.cli", "plan", str(tmp_path / "missing.tflite")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {tmp_path / 'missing.tflite'}: no such file"
