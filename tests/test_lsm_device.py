"""The RRAM device model: the hash, its statistics against its parameters, reproducibility."""
import json

import numpy as np
import pytest

from tinymem.errors import TinymemError
from tinymem.lsm import device as d
from tinymem.lsm.reservoir import LsmConfig, weights


def test_hash_is_lowbias32_in_numpy_and_python():
    xs = np.array([0, 1, 2, 0xDEADBEEF, 0xFFFFFFFF], np.uint32)
    assert [d.mix32(int(x)) for x in xs] == d.mix32(xs).tolist()
    assert d.mix32(1) == 0x688990C0  # pinned: every stored lsm.json depends on this hash


def test_weights_of_the_default_reservoir_are_pinned():
    """A change to the device pipeline silently changes every reservoir made so far: catch it."""
    w = weights(LsmConfig())
    assert (int(w.mask_in.sum()), int(w.mask_rec.sum())) == (10370, 3933)
    assert int(np.abs(w.w_in).sum()) == 56756 and int(w.w_rec.sum()) == -233


def test_statistics_follow_the_parameters():
    dev = d.DeviceParams(mean_us=50, d2d_sigma_us=10, c2c_sigma_us=4, stuck_on=0.01, stuck_off=0.02, levels=64)
    s = d.device_stats(dev, seed=3, n=200_000)
    assert s["mean_us"] == pytest.approx(50, abs=0.2)
    assert s["sigma_us"] == pytest.approx(np.hypot(10, 4), rel=0.03)
    assert s["c2c_sigma_us"] == pytest.approx(4, rel=0.05)
    assert s["stuck_on"] == pytest.approx(0.01, rel=0.1) and s["stuck_off"] == pytest.approx(0.02, rel=0.1)
    assert s["weight_mean_levels"] == pytest.approx(0, abs=0.1)
    # a pair's difference of two independent cells: √2 × the cell spread, in levels
    free = d.DeviceParams(mean_us=50, d2d_sigma_us=10, c2c_sigma_us=4, stuck_on=0, stuck_off=0, levels=64)
    sf = d.device_stats(free, seed=3, n=200_000)
    assert sf["weight_sigma_levels"] == pytest.approx(np.sqrt(2) * np.hypot(10, 4) / free.us_per_level, rel=0.03)


@pytest.mark.parametrize("levels", [2, 4, 16])
def test_a_finite_number_of_levels(levels):
    dev = d.DeviceParams(levels=levels)
    lv, lf = d.device_levels(dev, 1, 0, 0, 0, np.arange(50_000, dtype=np.uint32))
    assert set(np.unique(lv)) <= set(range(levels)) and len(np.unique(lv)) == levels
    # the integer level is the float level rounded (stuck cells sit on both extremes)
    assert np.all(np.abs(lv - lf) <= 0.5 + 1e-3)  # + the floor of two Q16 products


def test_cycle_to_cycle_moves_cells_a_little_and_another_seed_is_another_array():
    dev = d.DeviceParams()
    i = np.arange(20_000, dtype=np.uint32)
    _, a = d.device_levels(dev, 7, 0, 0, 0, i)
    _, b = d.device_levels(dev, 7, 0, 0, 1, i)
    _, c = d.device_levels(dev, 8, 0, 0, 0, i)
    assert np.corrcoef(a, b)[0, 1] > 0.9 and abs(np.corrcoef(a, c)[0, 1]) < 0.05


def test_ideal_device_without_variation():
    dev = d.DeviceParams(d2d_sigma_us=0, c2c_sigma_us=0, stuck_on=0, stuck_off=0)
    lv, _ = d.device_levels(dev, 0, 0, 0, 0, np.arange(1000, dtype=np.uint32))
    assert np.all(lv == round(dev.mean_level))


def test_connectivity_density():
    m = d.connected(5, 0, 0.15, np.arange(100_000, dtype=np.uint32))
    assert m.mean() == pytest.approx(0.15, abs=0.005)


@pytest.mark.parametrize("fields, message", [
    ({"g_min_us": 5, "g_max_us": 2}, "g_max_us must exceed"),
    ({"levels": 200}, "levels must be 2..128"),
    ({"stuck_on": 0.4, "stuck_off": 0.4}, r"stuck_on \+ stuck_off"),
    ({"mean_us": 500}, "mean_us must lie"),
    ({"colour": 1}, "unknown device parameter 'colour'"),
])
def test_bad_parameters_are_one_line(tmp_path, fields, message):
    p = tmp_path / "rram.json"
    p.write_text(json.dumps(fields))
    with pytest.raises(TinymemError, match=message):
        d.load_device(p)
