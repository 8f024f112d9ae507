"""Generated LSM C on the host: bit for bit the numpy fixed-point mode, on random reservoirs and
random event streams, with both weight storages; warning-free and clean under ASan/UBSan."""
import shutil

import numpy as np
import pytest

from tinymem.lsm.codegen import build_host_lsm, context, pack_frames, render_lsm
from tinymem.lsm.device import DeviceParams
from tinymem.lsm.reservoir import LsmConfig, run

pytestmark = pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="no host C compiler")

CASES = {
    "paper": LsmConfig(),
    "odd-sizes": LsmConfig(inputs=37, neurons=13, steps=9, seed=123, p_in=0.5, p_rec=0.4, gain_rec=12, windows=4,
                           membrane=True, cycle=3),
    "wide": LsmConfig(inputs=64, neurons=300, steps=12, seed=5, p_in=0.3, p_rec=0.05, decay=0.5, threshold=2.0,
                      frac_bits=8, device=DeviceParams(levels=8, c2c_sigma_us=0, stuck_on=0.05, stuck_off=0.05)),
}


@pytest.mark.parametrize("storage", ["flash", "seed"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_host_c_equals_numpy_fixed_bit_for_bit(name, storage, rng, tmp_path):
    cfg = CASES[name]
    n = 12 if name == "paper" else 40
    rate = rng.uniform(0.02, 0.4)
    frames = rng.random((n, cfg.steps, cfg.inputs)) < rate
    frames[0] = False  # silence in, silence out
    frames[1] = True   # everything at once
    ref = run(cfg, frames)
    counts, membrane = build_host_lsm(cfg, tmp_path, storage).run(frames)
    assert np.array_equal(counts, ref.counts)
    assert counts[0].sum() == 0 and counts.sum() > 0
    if cfg.membrane:
        assert np.array_equal(membrane, ref.membrane)


def test_sanitizers_find_nothing(rng, tmp_path):
    cfg = CASES["odd-sizes"]
    frames = rng.random((5, cfg.steps, cfg.inputs)) < 0.3
    for storage in ("flash", "seed"):
        counts, _ = build_host_lsm(cfg, tmp_path / storage, storage, sanitize=True).run(frames)
        assert np.array_equal(counts, run(cfg, frames).counts)


def test_weights_in_flash_or_none_and_the_packing(tmp_path):
    cfg = LsmConfig()
    flash, seed = context(cfg, "flash"), context(cfg, "seed")
    assert 25_000 < flash["weight_bytes"] < 35_000 and seed["weight_bytes"] == 0
    files, _ = render_lsm(cfg, tmp_path / "s", "seed")
    assert "lsm_in_w" not in files[1].read_text() and "lsm_mix32" in files[1].read_text()
    f = np.zeros((1, 2, 10), bool)
    f[0, 0, 0] = f[0, 1, 9] = True
    assert pack_frames(f).tolist() == [[1, 0, 0, 2]]
