"""Patch-based inference runs bit-exact with LiteRT BUILTIN_REF, for every schedule: random small
CNNs x random schedules (any split point, non-square grids, patch sizes that do not divide the map,
strides and dilations at any depth, residual ADDs, PADs, pools, activations), and the zoo. Each
generated model runs under ASan/UBSan with the arena sized exactly to the plan, so a patch that
reads or writes outside its buffers, or an arena too small for the true peak, fails too."""
from pathlib import Path

import numpy as np
import pytest

from harness import random_inputs
from reference import litert_run
from test_patch_models import random_cnn
from tinymem.cli import main
from tinymem.model.tflite import parse_tflite
from tinymem.plan.patch import Analysis, Schedule, make_patch_plan, stage_plan
from tinymem.plan.patch_search import enumerate_schedules, search
from tinymem.sim import build_host

MODELS = Path(__file__).resolve().parent.parent / "models"


def assert_patch_exact(model: bytes, sched_or_plan, inputs, tmp_path, sanitize=True, name="model"):
    g = parse_tflite(model, name)
    plan = sched_or_plan if not isinstance(sched_or_plan, Schedule) else make_patch_plan(g, sched_or_plan)
    ours = build_host(g, plan, tmp_path, sanitize=sanitize).run(inputs)
    ref = litert_run(model, inputs)
    for k, (a, b) in enumerate(zip(ours, ref)):
        if not np.array_equal(a, b):
            bad = np.argwhere(a != b)
            raise AssertionError(f"{plan.patch.schedule.label}: output {k}: {len(bad)} of {a.size} values differ, "
                                 f"first at {tuple(bad[0])}")
    return plan


def random_schedule(rng, g):
    """A random valid schedule (grids up to 5 per axis; a 1-row or 1-column grid now and then)."""
    an = Analysis(g)
    scheds = [s for s in enumerate_schedules(an, 5) if stage_plan(an, s, exact=False) is not None]
    return scheds[int(rng.integers(len(scheds)))] if scheds else None


@pytest.mark.parametrize("seed", range(16))
def test_random_models_random_schedules(seed, tmp_path):
    rng = np.random.default_rng(1000 + seed)
    model = random_cnn(rng)
    g = parse_tflite(model, "random")
    sched = random_schedule(rng, g)
    if sched is None:
        pytest.skip("no valid schedule on this draw")
    assert_patch_exact(model, sched, random_inputs(g, rng, 2), tmp_path)


@pytest.mark.parametrize("seed", range(3))
def test_random_models_auto(seed, tmp_path):
    """The schedule the search picks (several per model: tight and loose MAC budgets)."""
    rng = np.random.default_rng(2000 + seed)
    model = random_cnn(rng, n_ops=7, size=(20, 17))
    g = parse_tflite(model, "random")
    x = random_inputs(g, rng, 2)
    for over in (0.1, 1.0):
        ch = search(g, "auto", max_overhead=over, max_grid=5)
        if ch.schedule is not None:
            assert_patch_exact(model, ch.plan, x, tmp_path / f"o{over}")


@pytest.mark.parametrize("name,sched", [
    ("mobilenetv2_035_96", None),  # --patch auto
    ("mobilenetv2_035_96", Schedule(12, 3, 5)),  # residual ADD in the stage, 5 columns of a 12-wide map
    ("mobilenetv2_035_96", Schedule(9, 5, 1)),  # one column: op K writes the split tensor in place
    ("mcunet_like", Schedule(12, 3, 4)),  # 5x5 and 7x7 depthwise kernels
    ("dscnn_kws", Schedule(3, 3, 2)),  # 10x4 stride-2 stem, 25x5 map
])
def test_zoo(name, sched, tmp_path):
    model = (MODELS / f"{name}.tflite").read_bytes()
    g = parse_tflite(model, name)
    x = np.load(MODELS / f"{name}.inputs.npy")
    plan = search(g, "auto").plan if sched is None else sched
    assert_patch_exact(model, plan, [x[:2]], tmp_path, sanitize=False, name=name)


def test_sim_cli(tmp_path, capsys):
    model = MODELS / "mobilenetv2_035_96.tflite"
    x = np.load(MODELS / "mobilenetv2_035_96.inputs.npy")[:2]
    np.save(tmp_path / "in.npy", x)
    code = main(["sim", str(model), "--patch", "auto", "--input", str(tmp_path / "in.npy"),
                 "--output", str(tmp_path / "out.npy")])
    assert code == 0, capsys.readouterr()
    assert np.array_equal(np.load(tmp_path / "out.npy"), litert_run(model.read_bytes(), [x])[0])
    assert "patch " in capsys.readouterr().out
