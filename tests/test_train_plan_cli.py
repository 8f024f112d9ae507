"""`tinymem train-plan` end to end: the JSON against the library's numbers, the files it writes, the
plan it re-reads, and one-line errors (never a traceback) on bad input."""
import json

import numpy as np
import pytest

from modelgen import PADDING, ModelBuilder, options, rand_int8
from test_train_memory import tiny_net
from tinymem.cli import main
from tinymem.model.tflite import parse_tflite
from tinymem.train.contrib import param_count_gains, save_gains
from tinymem.train.memory import full_backprop_sram_bytes, plan_training
from tinymem.train.scheme import Scheme


def run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def head_net() -> bytes:
    """x[1,4,4,3] -> AVERAGE_POOL (global) -> RESHAPE [1,3] -> FC (4) -> SOFTMAX: one trainable layer."""
    rng = np.random.default_rng(3)
    m = ModelBuilder()
    x = m.act([1, 4, 4, 3], 0.05, 0)
    p = m.act([1, 1, 1, 3], 0.05, 0)
    m.op("AVERAGE_POOL_2D", [x], [p], options("Pool2DOptions", padding=PADDING["VALID"], strideH=1, strideW=1,
                                              filterHeight=4, filterWidth=4))
    shape = m.tensor([2], "int32", data=np.array([1, 3], np.int32))
    f = m.act([1, 3], 0.05, 0)
    m.op("RESHAPE", [p, shape], [f], options("ReshapeOptions", newShape=[1, 3]))
    w = m.tensor([4, 3], "int8", 0.02, [0], rand_int8(rng, (4, 3)))
    b = m.tensor([4], "int32", 0.001, [0], np.zeros(4, np.int32))
    z = m.act([1, 4], 0.05, 0)
    m.op("FULLY_CONNECTED", [f, w, b], [z], options("FullyConnectedOptions"))
    s = m.act([1, 4], 1 / 256, -128)
    m.op("SOFTMAX", [z], [s], options("SoftmaxOptions", beta=1.0))
    return m.build([x], [s])


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.tflite"
    path.write_bytes(tiny_net(np.random.default_rng(7)))
    g = parse_tflite(path.read_bytes(), "tiny")
    gains = tmp_path / "gains.json"
    save_gains(param_count_gains(g, max_weight_ops=3), gains)
    return path, g, gains


def test_json_matches_the_library(tiny, capsys, tmp_path):
    path, g, gains = tiny
    code, out, err = run(["train-plan", path, "--gains", gains, "--sram", "6KiB", "--json", "-o", tmp_path / "p.json"],
                         capsys)
    assert code == 0, err
    d = json.loads(out)
    assert json.loads((tmp_path / "p.json").read_text()) == d
    scheme = Scheme.from_dict(d["scheme"])
    plan = plan_training(g, scheme)
    assert d["train_peak_sram_bytes"] == plan.train_peak_sram_bytes <= 6 * 1024 == d["budget_bytes"]
    assert d["arena_bytes"] == plan.arena_bytes and d["static_bytes"] == plan.static_bytes
    assert d["full_backprop_sram_bytes"] == full_backprop_sram_bytes(g)
    assert d["full_over_ours"] == round(d["full_backprop_sram_bytes"] / d["train_peak_sram_bytes"], 2)
    assert d["no_reorder_sram_bytes"] == plan_training(g, scheme, reorder=False).train_peak_sram_bytes
    assert [row["index"] for row in d["layers"]] == list(range(len(g.ops)))
    assert d["gains"]["source"].startswith("heuristic") and d["search"]["method"] == "exact" and d["search"]["exact"]
    assert d["gain"] == pytest.approx(param_count_gains(g, max_weight_ops=3).scheme_gain(scheme))
    # The written plan is a scheme file: planning it again gives the same numbers.
    code, out, _ = run(["train-plan", path, "--scheme", tmp_path / "p.json", "--json"], capsys)
    assert code == 0 and json.loads(out)["train_peak_sram_bytes"] == d["train_peak_sram_bytes"]


def test_text_report_and_plot(tiny, capsys, tmp_path):
    path, g, gains = tiny
    code, out, _ = run(["train-plan", path, "--gains", gains, "--sram", "8KiB", "--plot", tmp_path / "m.png"], capsys)
    assert code == 0
    for text in ("gain: last k biases", "gain: one layer's weights per ratio", "training memory per layer", "scheme: ",
                 "train peak SRAM", "full back-propagation", "plot written to"):
        assert text in out
    png = (tmp_path / "m.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_measures_and_caches_gains(tmp_path, capsys):
    """--data with the numpy reference trainer; --gains caches the table, a second run reuses it."""
    model = tmp_path / "head.tflite"
    model.write_bytes(head_net())
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(-128, 128, (12, 4, 4, 3)).astype(np.int8), y=rng.integers(0, 4, 12))
    args = ["train-plan", model, "--data", tmp_path / "d.npz", "--sram", "64KiB", "--gains", tmp_path / "g.json",
            "--max-samples", 6, "--json"]
    code, out, err = run(args, capsys)
    assert code == 0, err
    d = json.loads(out)
    table = json.loads((tmp_path / "g.json").read_text())
    assert d["gains"] == table and table["source"].startswith("measured")
    assert table["details"]["train_samples"] == 6 and table["details"]["eval_samples"] == 3  # 12 - 3 held out, then 6
    assert sorted(table["weights"]) == ["2"] and sorted(table["weights"]["2"], key=float) == ["0.125", "0.25", "0.5", "1.0"]
    table["weights"]["2"]["0.25"] = 5.0  # a cached table is read, not re-measured
    (tmp_path / "g.json").write_text(json.dumps(table))
    code, out, _ = run(args, capsys)
    assert code == 0 and json.loads(out)["scheme"]["weight_ratios"] == {"2": 0.25}


def one_line_error(code, err, want_code, text):
    assert code == want_code, err
    assert text in err and "Traceback" not in err
    if want_code == 1:
        assert err.strip().count("\n") == 0 and err.startswith("error:")


def test_errors(tiny, capsys, tmp_path):
    path, g, gains = tiny
    np.savez(tmp_path / "nox.npz", y=np.zeros(3, int))
    np.savez(tmp_path / "f.npz", x=np.zeros((3, 6, 6, 2), np.float32), y=np.zeros(3, int))
    np.savez(tmp_path / "shape.npz", x=np.zeros((3, 6, 2), np.int8), y=np.zeros(3, int))
    np.savez(tmp_path / "label.npz", x=np.zeros((3, 6, 6, 2), np.int8), y=np.array([0, 1, 7]))
    (tmp_path / "s.json").write_text(json.dumps({"scheme": {"bias_ops": [2]}}))
    cases = [
        (["--data", tmp_path / "none.npz", "--sram", "8KiB"], 1, "none.npz: no such file"),
        (["--data", tmp_path / "nox.npz", "--sram", "8KiB"], 1, "no array 'x'"),
        (["--data", tmp_path / "f.npz", "--sram", "8KiB"], 1, "x is float32; samples must be int8"),
        (["--data", tmp_path / "shape.npz", "--sram", "8KiB"], 1, "expected [N, 6, 6, 2]"),
        (["--data", tmp_path / "label.npz", "--sram", "8KiB"], 1, "label 7 of sample 2 is out of range"),
        (["--gains", gains, "--sram", "lots"], 1, "cannot read 'lots' as a size"),
        (["--gains", tmp_path / "missing.json", "--sram", "8KiB"], 1, "missing.json: no such file; give --data"),
        (["--gains", gains], 2, "--sram is needed"),
        (["--sram", "8KiB"], 2, "give --data"),
        (["--scheme", tmp_path / "s.json", "--data", tmp_path / "f.npz"], 2, "takes no --data or --gains"),
        (["--scheme", tmp_path / "s.json"], 1, "updates op 2 (ADD); trainable ops are 0, 1, 3, 6"),
        (["--gains", gains, "--sram", "8KiB", "--max-samples", 0], 2, "--max-samples must be >= 1"),
    ]
    for args, want, text in cases:
        code, _, err = run(["train-plan", path, *args], capsys)
        one_line_error(code, err, want, text)


def test_budget_too_small_names_what_would_fit(tiny, capsys):
    path, g, gains = tiny
    # The smallest scheme of the table: the last bias alone or one layer's weights at 0.125.
    smallest = min(plan_training(g, s).train_peak_sram_bytes for s in
                   [Scheme(bias_ops=[6]), *(Scheme(weight_ratios={i: 0.125}) for i in (1, 3, 6))])
    code, _, err = run(["train-plan", path, "--gains", gains, "--sram", smallest - 1], capsys)
    one_line_error(code, err, 1, f"no training scheme fits in {smallest - 1:,} B of SRAM")
    assert f"needs {smallest:,} B (--sram {smallest} would fit it)" in err
    code, out, _ = run(["train-plan", path, "--gains", gains, "--sram", smallest, "--json"], capsys)
    assert code == 0 and json.loads(out)["train_peak_sram_bytes"] == smallest
    (gains.parent / "big.json").write_text(json.dumps({"scheme": {"bias_ops": [0, 1, 3, 6]}}))
    code, _, err = run(["train-plan", path, "--scheme", gains.parent / "big.json", "--sram", smallest], capsys)
    one_line_error(code, err, 1, "big.json needs")
    code, _, err = run(["train-plan", path, "--scheme", gains.parent / "none.json", "--sram", 100], capsys)
    one_line_error(code, err, 1, "cannot read training plan")
