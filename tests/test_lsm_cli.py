"""`tinymem lsm ...` end to end on a few samples: files written, JSON shapes, one-line errors."""
import json

import numpy as np
import pytest

from tinymem.cli import main
from tinymem.lsm.encode import load_encoding


def run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lsm")
    assert main(["lsm", "make", "--neurons", "60", "--seed", "3", "--windows", "2", "--membrane",
                 "-o", str(d / "lsm.json")]) == 0
    assert main(["lsm", "events", "digits", "--limit", "80", "-o", str(d / "ev.npz")]) == 0
    return d


def test_make_json(tmp_path, capsys):
    code, out, _ = run(["lsm", "make", "--inputs", "256", "--neurons", "200", "--seed", "7", "-o", tmp_path / "l.json",
                        "--json"], capsys)
    d = json.loads(out)
    assert code == 0 and d["lsm"]["neurons"] == 200 and d["input_synapses"] == 10370
    assert d["weight_flash_bytes"] > 0 and json.loads((tmp_path / "l.json").read_text())["seed"] == 7


def test_device_json_and_file(tmp_path, capsys):
    code, out, _ = run(["lsm", "device", "--samples", "20000", "-o", tmp_path / "rram.json", "--json"], capsys)
    d = json.loads(out)
    assert code == 0 and d["measured"]["levels_used"] >= 28
    (tmp_path / "rram.json").write_text(json.dumps(d["device"] | {"levels": 8}))
    code, out, _ = run(["lsm", "make", "--device", tmp_path / "rram.json", "-o", tmp_path / "l.json", "--json"], capsys)
    assert code == 0 and json.loads(out)["lsm"]["device"]["levels"] == 8


def test_encode_numpy_host_float_then_fit(files, capsys):
    d = files
    common = ["lsm", "encode", d / "lsm.json", "--events", d / "ev.npz"]
    assert run(common + ["-o", d / "np.npz"], capsys)[0] == 0
    code, out, _ = run(common + ["--board", "host", "--storage", "seed", "-o", d / "c.npz", "--json"], capsys)
    assert code == 0 and json.loads(out)["backend"] == "host"
    a, b = load_encoding(d / "np.npz"), load_encoding(d / "c.npz")
    assert np.array_equal(a.counts, b.counts) and np.array_equal(a.membrane, b.membrane)
    assert a.counts.shape == (80, 120) and a.input_counts.shape == (80, 512) and len(a.labels) == 80
    assert run(common + ["--float", "-o", d / "f.npz"], capsys)[0] == 0
    code, out, _ = run(["lsm", "fit", d / "np.npz", "--epochs", "50", "--json"], capsys)
    r = json.loads(out)
    assert code == 0 and r["reservoir"]["samples"] == int((a.split == 1).sum()) and "raw_counts" in r
    assert len(r["reservoir"]["confusion"]) == len(r["reservoir"]["classes"])
    code, out, _ = run(["lsm", "fit", d / "np.npz", "--eval", d / "f.npz", "--epochs", "50", "--hidden", "8"], capsys)
    assert code == 0 and "test accuracy" in out and "paper" in out


def test_split_selection_and_align(files, capsys):
    d = files
    for which in ("train", "test"):
        assert run(["lsm", "encode", d / "lsm.json", "--events", d / "ev.npz", "--split", which,
                    "-o", d / f"{which}.npz"], capsys)[0] == 0
    tr, te = load_encoding(d / "train.npz"), load_encoding(d / "test.npz")
    assert set(tr.split) == {0} and set(te.split) == {1} and len(tr.counts) + len(te.counts) == 80
    assert run(["lsm", "make", "--neurons", "60", "--seed", "4", "-o", d / "other.json"], capsys)[0] == 0
    assert run(["lsm", "encode", d / "other.json", "--events", d / "ev.npz", "-o", d / "other.npz"], capsys)[0] == 0
    assert run(["lsm", "encode", d / "lsm.json", "--events", d / "ev.npz", "-o", d / "mine.npz"], capsys)[0] == 0
    code, out, _ = run(["lsm", "align", d / "mine.npz", d / "other.npz", "--epochs", "30", "--json"], capsys)
    assert code == 0 and 0 <= json.loads(out)["zero_shot_b_with_a_prototypes"] <= 1


def test_plot(files, capsys):
    code, out, _ = run(["lsm", "plot", files / "lsm.json", "--events", files / "ev.npz", "--index", "3",
                        "-o", files / "r.png", "--json"], capsys)
    assert code == 0 and json.loads(out)["spikes"] > 0
    assert (files / "r.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, message", [
    (["lsm", "encode", "{d}/nope.json", "--events", "{d}/ev.npz", "-o", "{d}/x.npz"], "no such file"),
    (["lsm", "encode", "{d}/ev.npz", "--events", "{d}/ev.npz", "-o", "{d}/x.npz"], "not valid JSON"),
    (["lsm", "encode", "{d}/lsm.json", "--events", "{d}/lsm.json", "-o", "{d}/x.npz"], "not a readable .npz"),
    (["lsm", "encode", "{d}/lsm.json", "--events", "{d}/ev.npz", "--board", "nosuch", "-o", "{d}/x.npz"], "nosuch"),
    (["lsm", "encode", "{d}/lsm.json", "--events", "{d}/ev.npz", "--board", "host", "--float", "-o", "{d}/x.npz"],
     "float mode is numpy only"),
    (["lsm", "fit", "{d}/ev.npz"], "not a tinymem encodings file"),
    (["lsm", "plot", "{d}/lsm.json", "--events", "{d}/ev.npz", "--index", "999", "-o", "{d}/p.png"], "outside"),
])
def test_errors_are_one_line(files, capsys, args, message):
    code, out, err = run([a.format(d=files) for a in args], capsys)
    assert code == 1 and message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2
