"""Contribution analysis (tinymem/train/contrib.py): which candidates are fine-tuned, on what data,
how the gains are tabulated and cached. A stub trainer whose accuracy is a known function of the
scheme checks the bookkeeping; the numpy reference trainer checks one real run."""
import json

import numpy as np
import pytest

from test_train_memory import tiny_net
from tinymem.errors import TinymemError
from tinymem.model.tflite import load_tflite, parse_tflite
from tinymem.train.contrib import (
    GainTable, candidates, default_bias_ks, load_dataset, load_gains, measure_gains, param_count_gains, save_gains,
    split_holdout,
)
from tinymem.train.scheme import RATIOS, Scheme


@pytest.fixture(scope="module")
def net():
    return parse_tflite(tiny_net(np.random.default_rng(7)), "tiny")


class StubTrainer:
    """Accuracy 0.5 untrained; after any step 0.5 + 0.01 per bias + 0.1 x each weight ratio."""

    made: list["StubTrainer"] = []

    def __init__(self, g, scheme: Scheme):
        self.g, self.scheme, self.labels, self.lrs = g, scheme, [], []
        StubTrainer.made.append(self)

    def step(self, x, label, lr=None):
        assert x.dtype == np.int8 and x.shape == (6, 6, 2)
        self.labels.append(label)
        self.lrs.append(lr)
        return 1.0, 0

    def evaluate(self, xs, ys):
        if not self.labels:
            return 0.5
        return 0.5 + 0.01 * len(self.scheme.bias_ops) + 0.1 * sum(self.scheme.weight_ratios.values())


def data(rng, n):
    return rng.integers(-128, 128, (n, 6, 6, 2)).astype(np.int8), rng.integers(0, 3, n)


def test_gains_are_accuracy_minus_untrained(net, rng):
    StubTrainer.made.clear()
    train, val = data(rng, 7), data(rng, 3)
    t = measure_gains(net, train, val, epochs=2, max_weight_ops=2, trainer_cls=StubTrainer, progress=False)
    assert t.bias_ops == [6, 3, 1, 0] and t.base_accuracy == 0.5
    assert t.bias == pytest.approx({0: 0.0, 1: 0.01, 2: 0.02, 3: 0.03, 4: 0.04})
    assert sorted(t.weights) == [3, 6]
    for i in (3, 6):
        assert t.weights[i] == pytest.approx({r: 0.1 * r for r in RATIOS if r > 0})
    runs = StubTrainer.made[1:]  # the first one only measured the untrained accuracy
    assert len(runs) == 4 + 2 * 4
    for run in runs:
        # Two epochs, every sample once per epoch (shuffled), one candidate each.
        assert sorted(run.labels) == sorted(list(train[1]) * 2)
        assert run.g is net and len(run.scheme.updated_ops()) >= 1


def test_subset_of_bias_ks_and_no_weights(net, rng):
    t = measure_gains(net, data(rng, 4), data(rng, 2), max_weight_ops=0, bias_ks=[2, 9, 4],
                      trainer_cls=StubTrainer, progress=False)
    assert sorted(t.bias) == [0, 2, 4] and t.weights == {}


def test_default_bias_ks():
    assert default_bias_ks(53) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 53]
    assert default_bias_ks(4) == [1, 2, 3, 4] and default_bias_ks(1) == [1] and default_bias_ks(0) == []


def test_candidates_of_mobilenet():
    g = load_tflite("models/mobilenetv2_035_96.tflite")
    last_first, ks, weights = candidates(g, max_weight_ops=3)
    assert last_first[:4] == [63, 61, 60, 59] and len(last_first) == 53
    assert weights == [(i, r) for i in (60, 61, 63) for r in RATIOS if r > 0]


def test_table_round_trip_and_scheme_gain(net, tmp_path):
    t = param_count_gains(net, max_weight_ops=2)
    save_gains(t, tmp_path / "g.json")
    back = load_gains(tmp_path / "g.json")
    assert back == t
    # FC [3,45], 1x1 conv [5,1,1,4]: weight gains are updated parameters over the largest (135).
    assert t.weights[6][1.0] == 1.0 and t.weights[3][0.5] == pytest.approx(3 * 4 / 135)
    assert t.scheme_gain(Scheme(bias_ops=[6, 3], weight_ratios={6: 0.5})) == pytest.approx((3 + 5) / 135 + 2 * 45 / 135)
    with pytest.raises(TinymemError, match="not the last 1"):
        t.scheme_gain(Scheme(bias_ops=[3]))


def test_bad_tables(tmp_path):
    (tmp_path / "a.json").write_text("[1, 2]")
    with pytest.raises(TinymemError, match="must be a JSON object"):
        load_gains(tmp_path / "a.json")
    (tmp_path / "b.json").write_text(json.dumps({"bias": {"ops": [1]}}))
    with pytest.raises(TinymemError, match="bad gain table: missing or malformed 'gain'"):
        load_gains(tmp_path / "b.json")
    with pytest.raises(TinymemError, match="no.json: .*No such file"):
        load_gains(tmp_path / "no.json")


@pytest.mark.parametrize("arrays,msg", [
    ({"x": np.zeros((2, 6, 6, 2), np.int8)}, "no array 'y'"),
    ({"x": np.zeros((2, 6, 6, 2), np.float32), "y": np.zeros(2, int)}, "x is float32; samples must be int8"),
    ({"x": np.zeros((2, 6, 6, 3), np.int8), "y": np.zeros(2, int)}, r"x has shape \[2, 6, 6, 3\]; expected \[N, 6, 6, 2\]"),
    ({"x": np.zeros((2, 6, 6, 2), np.int8), "y": np.zeros(3, int)}, "y must be 2 integer labels"),
    ({"x": np.zeros((2, 6, 6, 2), np.int8), "y": np.array([0, 3])}, "label 3 of sample 1 is out of range: .* 3 classes"),
    ({"x": np.zeros((0, 6, 6, 2), np.int8), "y": np.zeros(0, int)}, "no samples"),
])
def test_bad_datasets(net, tmp_path, arrays, msg):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(TinymemError, match=msg):
        load_dataset(tmp_path / "d.npz", net)


def test_holdout_split(rng):
    x, y = data(rng, 8)
    (tx, ty), (vx, vy) = split_holdout(x, y, seed=0)
    assert len(vx) == 2 and len(tx) == 6
    assert sorted(map(bytes, np.concatenate([tx, vx]))) == sorted(map(bytes, x))


def test_with_the_reference_trainer(net, rng):
    """The real numpy trainer on the last layer only: a task the FC alone can learn (the label is
    where the logits already point, shuffled), fine-tuning its weights must not be worse than chance
    and the gain must be exactly what an independent run of the same fine-tuning measures."""
    from tinymem.train.contrib import fine_tune_accuracy
    from tinymem.train.reference import Trainer

    x, y = data(rng, 12)
    base = Trainer(net, Scheme(bias_ops=[6]))
    y = np.array([base.predict(s) for s in x])  # labels the untrained model gets right...
    y[::2] = (y[::2] + 1) % 3  # ...half of them moved: room to learn
    t = measure_gains(net, (x[:8], y[:8]), (x[8:], y[8:]), max_weight_ops=1, bias_ks=[1], progress=False)
    assert sorted(t.weights) == [6] and sorted(t.bias) == [0, 1]
    assert t.base_accuracy == base.evaluate(x[8:], y[8:])
    again = fine_tune_accuracy(net, Scheme(weight_ratios={6: 0.5}), (x[:8], y[:8]), (x[8:], y[8:]), 1, 0, Trainer)
    assert t.weights[6][0.5] == pytest.approx(again - t.base_accuracy)
    assert all(-1 <= v <= 1 for rs in t.weights.values() for v in rs.values())


def test_table_for_the_wrong_model(net):
    t = GainTable("other", [63], {0: 0.0, 1: 0.1}, {})
    with pytest.raises(TinymemError, match="names op 63, which is not an updatable op"):
        t.check(net)
