"""The training driver (tinymem/train/run.py) and `tinymem train` on the host build: every step's
loss and prediction against the numpy reference trainer fed the same samples in the documented
order, per-epoch records, the evaluation with the trained parameters, and bad input."""
import json
from pathlib import Path

import numpy as np
import pytest

from trainmodels import Chain, class_samples
from tinymem.cli import main
from tinymem.errors import TinymemError
from tinymem.model.tflite import parse_tflite
from tinymem.train.memory import plan_training
from tinymem.train.reference import Trainer
from tinymem.train.run import epoch_orders, load_train_plan, train
from tinymem.train.scheme import Scheme

# A rate at which 3 epochs leave the evaluation short of 100 %: the accuracy then depends on
# the parameters actually trained.
SCHEME = {"bias_ops": [1, 3], "weight_ratios": {"1": 1.0, "3": 1.0}, "lr": 0.003}
CLASSES = 10
SEED = 5


def small_model(rng) -> bytes:
    """conv (op 0) -> 1x1 conv (1, updated) -> RESHAPE (2) -> FC logits (3, updated) -> SOFTMAX."""
    c = Chain(rng, [1, 6, 6, 2])
    c.conv(6, 3, act="RELU6")
    c.conv(4, 1, act="RELU6")
    c.flatten()
    c.fc(CLASSES, logit_std=2.0)
    return c.build()


@pytest.fixture(scope="module")
def task():
    rng = np.random.default_rng(11)
    g = parse_tflite(small_model(rng))
    xs, ys = class_samples(rng, (6, 6, 2), CLASSES, 60)
    return g, Scheme.from_dict(SCHEME), (xs[:36], ys[:36]), (xs[36:], ys[36:])


@pytest.fixture(scope="module")
def host_run(task):
    g, scheme, tr, te = task
    return train(g, plan_training(g, scheme), *tr, backend="host", epochs=3, eval=te, seed=SEED)


def test_every_step_equals_the_reference_trainer_in_the_documented_order(task, host_run):
    g, scheme, (xs, ys), (ex, ey) = task
    rng = np.random.default_rng(SEED)  # the documented order: one generator, a permutation per epoch
    orders = [rng.permutation(len(xs)) for _ in range(3)]
    ref = Trainer(g, scheme)
    before = ref.evaluate(ex, ey)
    steps = [ref.step(xs[j], int(ys[j]), scheme.lr) for o in orders for j in o]
    losses, preds = np.array([s[0] for s in steps], np.float32), np.array([s[1] for s in steps])

    for got, want in zip(host_run.order, orders):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(host_run.preds, preds)
    np.testing.assert_allclose(host_run.losses, losses, rtol=1e-4)  # float32 agreement, docs/training.md
    # The evaluation ran on the trained firmware: it sees the updated parameters, as the reference does.
    assert host_run.eval_accuracy == ref.evaluate(ex, ey) != before
    np.testing.assert_array_equal(host_run.eval_preds, [ref.predict(x) for x in ex])


def test_epoch_records_and_learning(task, host_run):
    g, scheme, (xs, ys), _ = task
    records = host_run.epochs
    assert [e.epoch for e in records] == [1, 2, 3] and all(e.samples == len(xs) for e in records)
    assert all(e.lr == pytest.approx(scheme.lr) for e in records)
    for k, e in enumerate(records):
        part = slice(k * len(xs), (k + 1) * len(xs))
        assert e.mean_loss == pytest.approx(float(np.mean(host_run.losses[part])), rel=1e-6)
        assert e.accuracy == pytest.approx(float(np.mean(host_run.preds[part] == ys[host_run.order[k]])))
    assert records[-1].mean_loss < 0.6 * records[0].mean_loss
    assert records[-1].accuracy > records[0].accuracy
    d = host_run.as_dict()
    assert d["train_steps"] == 3 * len(xs) and d["eval_samples"] == 24 and d["backend"] == "host"
    assert d["memory"]["train_peak_sram_bytes"] == plan_training(g, scheme).train_peak_sram_bytes
    json.dumps(d)  # --json prints it


def test_epoch_orders_are_seeded_permutations():
    a, b = epoch_orders(20, 3, 1), epoch_orders(20, 3, 1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(sorted(o) == list(range(20)) for o in a)
    assert not np.array_equal(a[0], a[1])
    assert not np.array_equal(a[0], epoch_orders(20, 1, 2)[0])


def test_learning_rate_reaches_the_firmware(task):
    """--lr overrides the plan's: a tenfold rate takes different steps from the second one on."""
    g, scheme, (xs, ys), _ = task
    plan = plan_training(g, scheme)
    slow = train(g, plan, xs[:6], ys[:6], epochs=1)
    fast = train(g, plan, xs[:6], ys[:6], epochs=1, lr=10 * scheme.lr)
    assert fast.losses[0] == slow.losses[0] and not np.array_equal(fast.losses[1:], slow.losses[1:])
    assert fast.epochs[0].lr == pytest.approx(10 * scheme.lr)


@pytest.mark.parametrize("change, message", [
    (lambda x, y: (x.astype(np.float32), y), "samples must be int8"),
    (lambda x, y: (x[:, :5], y), "samples must be int8 \\[N, 6, 6, 2\\]"),
    (lambda x, y: (x, y[:-1]), "need 36 integer labels"),
    (lambda x, y: (x, y + 1), "label 10 is out of range for 10 classes"),
    (lambda x, y: (x[:0], y[:0]), "no samples"),
])
def test_bad_training_sets(task, change, message):
    g, scheme, (xs, ys), _ = task
    with pytest.raises(TinymemError, match=message):
        train(g, plan_training(g, scheme), *change(xs, ys))


def test_bad_settings(task):
    g, scheme, (xs, ys), (ex, ey) = task
    plan = plan_training(g, scheme)
    for kwargs, message in (({"epochs": 0}, "epochs must be >= 1"), ({"lr": -0.1}, "learning rate must be a positive number"),
                            ({"lr": float("nan")}, "learning rate must be a positive number"),
                            ({"eval": (ex, ey - 1)}, "evaluation set: label -1"),
                            ({"backend": "nosuchboard"}, "unknown board 'nosuchboard'"),
                            ({"backend": "nucleo_f746zg"}, "real hardware: give --port")):
        with pytest.raises(TinymemError, match=message):
            train(g, plan, xs, ys, **kwargs)


def _files(task, tmp_path):
    """The task as files: the model (same seed, same bytes), train/test .npz, the bare scheme JSON."""
    _, _, tr, te = task
    model = tmp_path / "m.tflite"
    model.write_bytes(small_model(np.random.default_rng(11)))
    for name, (x, y) in (("train", tr), ("test", te)):
        np.savez(tmp_path / f"{name}.npz", x=x, y=y)
    (tmp_path / "scheme.json").write_text(json.dumps(SCHEME))
    return model


def test_cli_trains_from_a_train_plan_file(task, host_run, tmp_path, capsys):
    model = _files(task, tmp_path)
    plan = tmp_path / "plan.json"
    assert main(["train-plan", str(model), "--scheme", str(tmp_path / "scheme.json"), "-o", str(plan)]) == 0
    capsys.readouterr()
    args = ["train", str(model), "--plan", str(plan), "--data", str(tmp_path / "train.npz"),
            "--eval", str(tmp_path / "test.npz"), "--epochs", "3", "--seed", str(SEED)]
    assert main(args + ["--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["eval_accuracy"] == host_run.eval_accuracy
    assert [e["mean_loss"] for e in d["epochs"]] == pytest.approx([e.mean_loss for e in host_run.epochs])
    assert d["scheme"] == Scheme.from_dict(SCHEME).as_dict() and d["backend"] == "host"
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "running accuracy" in out and f"{host_run.eval_accuracy:.1%}" in out
    assert f"{d['memory']['train_peak_sram_bytes']:,} B" in out


def test_cli_bad_input_is_one_line(task, tmp_path, capsys):
    model = _files(task, tmp_path)
    g = task[0]
    plan = tmp_path / "plan.json"
    d = plan_training(g, task[1]).as_dict()
    plan.write_text(json.dumps(d | {"train_peak_sram_bytes": d["train_peak_sram_bytes"] + 1}))
    np.savez(tmp_path / "float.npz", x=np.zeros((4, 6, 6, 2), np.float32), y=np.zeros(4, int))
    (tmp_path / "bad.json").write_text("{not json")
    base = ["train", str(model), "--data", str(tmp_path / "train.npz")]
    for args, message in (
            (base + ["--plan", str(plan)], "was it made for another model"),
            (base + ["--plan", str(tmp_path / "bad.json")], "not JSON"),
            (base + ["--plan", str(tmp_path / "none.json")], "cannot read training plan"),
            (["train", str(model), "--plan", str(tmp_path / "scheme.json"), "--data", str(tmp_path / "float.npz")],
             "samples must be int8"),
            (["train", str(model), "--plan", str(tmp_path / "scheme.json"), "--data", str(tmp_path / "none.npz")],
             "no such file"),
            (["train", str(model), "--plan", str(tmp_path / "scheme.json"), "--data", str(tmp_path / "train.npz"),
              "--board", "nosuchboard"], "unknown board")):
        assert main(args) == 1
        err = capsys.readouterr().err.strip()
        assert message in err and err.startswith("error:") and "Traceback" not in err, err
    assert main(base + ["--plan", str(tmp_path / "scheme.json"), "--epochs", "0"]) != 0
    assert "--epochs must be >= 1" in capsys.readouterr().err


def test_a_plan_made_for_this_model_loads(task, tmp_path):
    g, scheme, _, _ = task
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan_training(g, scheme, reorder=False).as_dict()))
    plan = load_train_plan(path, g)
    assert plan.scheme.as_dict() == scheme.as_dict() and plan.reorder is False


def test_codegen_writes_the_training_firmware(tmp_path):
    """`tinymem codegen M --train plan.json`: the training C (bare, or a board project with its
    manifest) whose header states the plan's train peak; a board's DSP kernel choice must not leak
    into the training plan (its forward runs the portable kernels the memory model counts)."""
    import re

    from tinymem.cli import main
    from tinymem.model import load_tflite
    from tinymem.train.run import load_train_plan

    models = Path(__file__).resolve().parent.parent / "models"
    model, plan_json = models / "transfer_digits.tflite", models / "transfer_digits.plan.json"
    plan = load_train_plan(plan_json, load_tflite(model))
    assert main(["codegen", str(model), "--train", str(plan_json), "-o", str(tmp_path / "c")]) == 0
    header = (tmp_path / "c" / "tinymem_model.h").read_text()
    assert int(re.search(r"#define TINYMEM_PEAK_SRAM_BYTES (\d+)", header).group(1)) == plan.train_peak_sram_bytes
    assert main(["codegen", str(model), "--board", "mps2_an386", "--train", str(plan_json), "-o", str(tmp_path / "b")]) == 0
    manifest = json.loads((tmp_path / "b" / "tinymem.json").read_text())
    assert manifest["training"]["train_peak_sram_bytes"] == plan.train_peak_sram_bytes
    assert (tmp_path / "b" / "src" / "main.c").exists()
