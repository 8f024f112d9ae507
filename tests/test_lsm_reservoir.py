"""The reservoir: the fixed-point spec (against a plain scalar rendering of it), float vs fixed,
connectivity, config files."""
import json

import numpy as np
import pytest

from tinymem.errors import TinymemError
from tinymem.lsm.reservoir import LsmConfig, load_lsm, run, weights


def scalar_fixed(cfg: LsmConfig, frames: np.ndarray) -> np.ndarray:
    """The fixed-point rules of reservoir.py's docstring, one neuron and one synapse at a time."""
    w, q = weights(cfg), cfg.fixed()
    counts = np.zeros((cfg.windows, cfg.neurons), int)
    v, fired = [0] * cfg.neurons, [False] * cfg.neurons
    for t in range(cfg.steps):
        v = [(x * q["decay_q16"] + 32768) >> 16 for x in v]  # Python's >> floors, as an arithmetic shift
        for i in np.flatnonzero(frames[t]):
            for j in np.flatnonzero(w.mask_in[i]):
                v[j] += int(w.w_in[i, j]) * q["a_in"]
        for k in [k for k in range(cfg.neurons) if fired[k]]:
            for j in np.flatnonzero(w.mask_rec[k]):
                v[j] += int(w.w_rec[k, j]) * q["a_rec"]
        fired = [x >= q["theta_q"] for x in v]
        for j in range(cfg.neurons):
            if fired[j]:
                counts[t * cfg.windows // cfg.steps, j] += 1
                v[j] = 0
    return counts.reshape(-1)


def random_frames(rng, n, cfg, rate=0.15):
    return rng.random((n, cfg.steps, cfg.inputs)) < rate


def test_fixed_mode_is_the_written_spec(rng):
    cfg = LsmConfig(inputs=30, neurons=24, steps=20, seed=11, p_in=0.3, p_rec=0.3, gain_rec=8, windows=2)
    frames = random_frames(rng, 3, cfg)
    enc = run(cfg, frames)
    for k in range(3):
        assert np.array_equal(enc.counts[k], scalar_fixed(cfg, frames[k]))
    assert enc.counts.sum() > 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_float_and_fixed_agree_closely(rng, seed):
    cfg = LsmConfig(seed=seed, neurons=120, inputs=256)
    frames = random_frames(rng, 40, cfg, rate=0.1)
    fixed, flt = run(cfg, frames, "fixed").counts, run(cfg, frames, "float").counts
    assert np.corrcoef(fixed.ravel(), flt.ravel())[0, 1] > 0.95
    assert abs(int(fixed.sum()) - int(flt.sum())) < 0.05 * flt.sum()


def test_windows_split_the_counts_and_membrane_is_the_truncated_mean(rng):
    cfg = LsmConfig(neurons=50, steps=30, seed=4)
    frames = random_frames(rng, 5, cfg)
    one = run(cfg, frames)
    three = run(cfg.with_(windows=3, membrane=True), frames, record=True)
    assert np.array_equal(three.counts.reshape(5, 3, 50).sum(1), one.counts)
    total = three.trace.astype(np.int64).sum(1)
    assert np.array_equal(three.membrane, np.trunc(total / 30).astype(np.int32))
    assert np.array_equal(three.spikes.sum(1), one.counts)


def test_connectivity_is_sparse_and_has_no_self_loops():
    cfg = LsmConfig(p_in=0.2, p_rec=0.1)
    w = weights(cfg)
    assert w.mask_in.mean() == pytest.approx(0.2, abs=0.01) and w.mask_rec.mean() == pytest.approx(0.1, abs=0.01)
    assert not np.diag(w.mask_rec).any()
    assert np.all(w.w_in[~w.mask_in] == 0) and np.abs(w.w_in).max() <= cfg.device.levels - 1


def test_reservoir_activity_is_moderate_on_digit_like_input(rng):
    """The defaults neither stay silent nor saturate: most neurons fire, well below once a step."""
    cfg = LsmConfig()
    rate = run(cfg, random_frames(rng, 20, cfg, rate=0.1)).counts.mean() / cfg.steps
    assert 0.02 < rate < 0.5


def test_config_round_trip_and_errors(tmp_path):
    cfg = LsmConfig(seed=99, windows=5, membrane=True)
    cfg.save(tmp_path / "lsm.json")
    assert load_lsm(tmp_path / "lsm.json") == cfg
    bad = json.loads((tmp_path / "lsm.json").read_text())
    for change, message in (({"format": "x"}, "not a tinymem LSM file"), ({"steps": 0}, "steps must be"),
                            ({"decay": 1.5}, "decay must be"), ({"extra": 1}, "unknown field 'extra'"),
                            ({"gain_in": 1e6}, "overflow int32")):
        (tmp_path / "b.json").write_text(json.dumps(bad | change))
        with pytest.raises(TinymemError, match=message):
            load_lsm(tmp_path / "b.json")
    with pytest.raises(TinymemError, match="expected"):
        run(cfg, np.zeros((1, 3, 256), bool))
