"""The LSM on an emulated board (mps2_an386 in QEMU): frames in over the UART, spike counts back,
equal to the host's fixed-point model bit for bit; memory and time reported."""
import json
import shutil

import numpy as np
import pytest

from test_boards import needs_arm_gcc
from tinymem.cli import main
from tinymem.errors import TinymemError
from tinymem.lsm.encode import encode, load_encoding, render_lsm_project
from tinymem.lsm.reservoir import LsmConfig, run

pytestmark = [needs_arm_gcc, pytest.mark.skipif(not shutil.which("qemu-system-arm"),
                                                reason="qemu-system-arm missing (apt-get install qemu-system-arm)")]


@pytest.mark.parametrize("storage", ["flash", "seed"])
def test_board_encodings_equal_the_host_bit_for_bit(storage, rng, tmp_path):
    cfg = LsmConfig(membrane=storage == "flash", windows=2 if storage == "seed" else 1)
    frames = rng.random((3, cfg.steps, cfg.inputs)) < np.array([0.05, 0.1, 0.2])[:, None, None]
    enc = encode(cfg, frames, "mps2_an386", storage=storage, project_dir=tmp_path)
    ref = run(cfg, frames)
    assert np.array_equal(enc.counts, ref.counts)
    if cfg.membrane:
        assert np.array_equal(enc.membrane, ref.membrane)
    p = enc.profile
    assert p["samples"] == 3 and p["unit"] == "instructions" and p["instructions_per_sample"] > 10_000
    assert p["peak_sram_measured_bytes"] < 16 * 1024 < p["ram_limit_bytes"]
    assert (p["weight_bytes"] > 20_000) == (storage == "flash") and p["flash_bytes"] > p["weight_bytes"]
    assert p["link"]["retries"] == 0


def test_an_lsm_over_the_board_ram_fails_before_building(tmp_path):
    big = LsmConfig(inputs=4096, neurons=4000, steps=255, p_in=0.001, p_rec=0.001, windows=255, frac_bits=4)
    with pytest.raises(TinymemError, match="does not fit board 'mps2_an386'"):
        render_lsm_project(big, "mps2_an386", tmp_path, "seed")


def test_cli_encode_on_the_board(tmp_path, capsys):
    for args in (["lsm", "make", "-o", tmp_path / "lsm.json"],
                 ["lsm", "events", "digits", "--split", "test", "--limit", "2", "-o", tmp_path / "ev.npz"]):
        assert main([str(a) for a in args]) == 0
    capsys.readouterr()
    code = main([str(a) for a in ["lsm", "encode", tmp_path / "lsm.json", "--events", tmp_path / "ev.npz",
                                  "--board", "mps2_an386", "-o", tmp_path / "enc.npz", "--json"]])
    out = capsys.readouterr().out
    assert code == 0 and json.loads(out)["backend"] == "mps2_an386"
    assert main([str(a) for a in ["lsm", "encode", tmp_path / "lsm.json", "--events", tmp_path / "ev.npz",
                                  "-o", tmp_path / "ref.npz"]]) == 0
    assert np.array_equal(load_encoding(tmp_path / "enc.npz").counts, load_encoding(tmp_path / "ref.npz").counts)
