"""Readouts (numpy): softmax / ANN heads, the confusion matrix, contrastive zero-shot alignment,
and the whole chain on a small slice of the event digits."""
import numpy as np
import pytest

from tinymem.errors import TinymemError
from tinymem.lsm.events import SaccadeParams, bin_events, digits_events
from tinymem.lsm.readout import evaluate, fit_contrastive, fit_readout, zero_shot_accuracy
from tinymem.lsm.reservoir import LsmConfig, run


def blobs(rng, n=300, d=20, classes=4, spread=1.0):
    centres = rng.uniform(0, 8, (classes, d))
    y = rng.integers(0, classes, n)
    return np.maximum(centres[y] + spread * rng.standard_normal((n, d)), 0), y


@pytest.mark.parametrize("hidden", [0, 16])
def test_readout_learns_and_reports_a_confusion_matrix(rng, hidden):
    x, y = blobs(rng)
    r = fit_readout(x[:200], y[:200], hidden=hidden)
    res = evaluate(r, x[200:], y[200:])
    assert res["accuracy"] > 0.9 and res["samples"] == 100
    cm = np.array(res["confusion"])
    assert cm.sum() == 100 and np.trace(cm) == round(100 * res["accuracy"])


def test_readout_rejects_what_it_cannot_train_on():
    with pytest.raises(TinymemError, match="fewer than two classes"):
        fit_readout(np.ones((5, 3)), np.zeros(5, int))
    with pytest.raises(TinymemError, match="do not pair up"):
        fit_readout(np.ones((5, 3)), np.zeros(4, int))


def test_contrastive_alignment_transfers_labels_between_two_encoders(rng):
    """Two different random 'encoders' of one latent: labels from A classify B through the shared space."""
    z, y = blobs(rng, n=250, d=6, classes=5, spread=0.6)
    xa = np.maximum(z @ rng.standard_normal((6, 30)), 0)
    xb = np.maximum(z @ rng.standard_normal((6, 40)), 0)
    pa, pb = fit_contrastive(xa[:150], xb[:150], dim=8, epochs=100)
    acc = zero_shot_accuracy(pb, pa, xb[150:], y[150:], xa[:150], y[:150])
    assert acc > 0.8


def test_event_digits_through_the_reservoir_beat_chance_by_far():
    """A small slice of the full benchmark (benchmarks/bench_lsm.py runs all 1797 digits)."""
    ev = digits_events(SaccadeParams(), seed=0, limit=400)
    cfg = LsmConfig()
    counts = run(cfg, bin_events(ev, cfg.steps, cfg.inputs)).counts
    tr, te = ev.split == 0, ev.split == 1
    acc = evaluate(fit_readout(counts[tr], ev.labels[tr]), counts[te], ev.labels[te])["accuracy"]
    assert acc > 0.8
