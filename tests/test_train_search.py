"""The scheme search (tinymem/train/search.py) against brute force: every scheme of a small space
planned in full with the memory model, its gain summed here from the table."""
import itertools
import time

import numpy as np
import pytest

from test_train_memory import tiny_net
from tinymem.errors import TinymemError
from tinymem.model.tflite import load_tflite, parse_tflite
from tinymem.plan.arena import lower_bound
from tinymem.train.contrib import GainTable, param_count_gains
from tinymem.train.memory import full_backprop_sram_bytes, plan_training, training_lifetimes
from tinymem.train.scheme import Scheme
from tinymem.train.search import fast_lower_bound, search_scheme

RATIOS = (0.25, 0.5, 1.0)
WEIGHT_OPS = (1, 3, 6)  # the last three trainable ops of tiny_net (op 0 comes first)
BIAS_OPS = [6, 3, 1, 0]  # last first


@pytest.fixture(scope="module")
def net():
    return parse_tflite(tiny_net(np.random.default_rng(7)), "tiny")


def all_schemes():
    """Every (bias k, ratio per weight op) of the space, as (k, {op: ratio})."""
    for k in range(len(BIAS_OPS) + 1):
        for rs in itertools.product((0.0, *RATIOS), repeat=len(WEIGHT_OPS)):
            ratios = {i: r for i, r in zip(WEIGHT_OPS, rs) if r > 0}
            if k or ratios:
                yield k, ratios


@pytest.fixture(scope="module", params=[True, False], ids=["reorder", "no-reorder"])
def peaks(net, request):
    """Train peak of every scheme, planned in full: the brute-force reference."""
    reorder = request.param
    return reorder, {(k, tuple(sorted(r.items()))): plan_training(net, Scheme(bias_ops=BIAS_OPS[:k], weight_ratios=r),
                                                                 reorder).train_peak_sram_bytes
                     for k, r in all_schemes()}


def random_table(rng, spread=1.0) -> GainTable:
    # Gains may be negative (fine-tuning can hurt) and need not grow with the ratio.
    bias = {0: 0.0, **{k: float(rng.normal(0.05 * k, 0.05 * spread)) for k in range(1, len(BIAS_OPS) + 1)}}
    weights = {i: {r: float(rng.normal(0.1 * r, 0.08 * spread)) for r in RATIOS} for i in WEIGHT_OPS}
    return GainTable("tiny", BIAS_OPS, bias, weights)


def table_gain(table, k, ratios) -> float:
    return table.bias[k] + sum(table.weights[i][r] for i, r in ratios)


def brute_best(table, peaks, budget):
    fitting = [table_gain(table, k, r) for (k, r), peak in peaks.items() if peak <= budget]
    return max(fitting) if fitting else None


@pytest.mark.parametrize("case", range(6))
def test_search_finds_the_brute_force_optimum(net, peaks, rng, case):
    reorder, peaks = peaks
    table = random_table(rng)
    values = sorted(set(peaks.values()))
    # Budgets across the range: the smallest scheme's peak exactly, in between, everything fits.
    for budget in (values[0], *np.quantile(values, [0.1, 0.3, 0.6]).astype(int), values[-1]):
        want = brute_best(table, peaks, int(budget))
        for exact_limit in (10**6, 0):  # exhaustive, then the evolutionary path on the same space
            r = search_scheme(net, table, int(budget), max_weight_ops=3, reorder=reorder, exact_limit=exact_limit,
                              seed=case)
            assert r.gain == pytest.approx(want, abs=1e-12)
            assert r.plan.train_peak_sram_bytes <= budget
            assert r.plan.train_peak_sram_bytes == peaks[(len(r.scheme.bias_ops), tuple(sorted(r.scheme.weight_ratios.items())))]
            assert r.exact  # small enough to prove on both paths
            assert r.method == ("evolutionary" if not exact_limit else "exact" if reorder else "exhaustive")


def test_nothing_fits_names_the_smallest_peak(net, peaks):
    reorder, peaks = peaks
    smallest = min(peaks.values())
    table = random_table(np.random.default_rng(1))
    for exact_limit in (10**6, 0):
        with pytest.raises(TinymemError, match=f"no training scheme fits in {smallest - 1:,} B .* needs {smallest:,} B"):
            search_scheme(net, table, smallest - 1, max_weight_ops=3, reorder=reorder, exact_limit=exact_limit)


def test_weight_candidates_limited_to_the_last_ops(net):
    table = random_table(np.random.default_rng(2))
    table.bias = {k: 0.1 * k for k in range(5)}
    table.weights = {i: {r: r for r in RATIOS} for i in (0, 1, 3, 6)}
    r = search_scheme(net, table, 10**9, max_weight_ops=2)
    assert set(r.scheme.weight_ratios) == {3, 6}  # ops 0 and 1 are not among the last two
    assert r.scheme.weight_ratios == {3: 1.0, 6: 1.0} and r.scheme.bias_ops == BIAS_OPS[:4]


def test_table_for_another_model(net):
    table = random_table(np.random.default_rng(3))
    table.weights[5] = {1.0: 0.3}  # op 5 is the RESHAPE
    with pytest.raises(TinymemError, match="names op 5, which is not an updatable op .* another model"):
        search_scheme(net, table, 10**6)


@pytest.mark.parametrize("seed", range(5))
def test_fast_lower_bound_equals_the_planner_bound(net, seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(0, 5))
    ratios = {i: float(rng.choice(RATIOS)) for i in WEIGHT_OPS if rng.random() < 0.5}
    scheme = Scheme(bias_ops=BIAS_OPS[:max(k, 0 if ratios else 1)], weight_ratios=ratios)
    for overlaps in (True, False):
        lt = training_lifetimes(net, scheme, reorder=bool(seed % 2), overlaps=overlaps)
        for align in (1, 4, 16):
            assert fast_lower_bound(lt, align) == lower_bound(lt, align)


def test_mobilenet_search_is_fast_and_fits():
    g = load_tflite("models/mobilenetv2_035_96.tflite")
    table = param_count_gains(g)
    start = time.perf_counter()
    r = search_scheme(g, table, 256 * 1024)
    assert time.perf_counter() - start < 10
    assert r.method == "exact" and r.exact and r.space > 10**6
    assert r.plan.train_peak_sram_bytes <= 256 * 1024
    assert plan_training(g, r.scheme).train_peak_sram_bytes == r.plan.train_peak_sram_bytes
    assert r.gain == pytest.approx(table.scheme_gain(r.scheme))
    assert full_backprop_sram_bytes(g) > 15 * r.plan.train_peak_sram_bytes
    # Tighter budgets pick schemes of no more gain; the evolutionary search stays below the optimum
    # and close to it.
    tight = search_scheme(g, table, 180 * 1024)
    assert tight.plan.train_peak_sram_bytes <= 180 * 1024 and tight.gain <= r.gain
    evo = search_scheme(g, table, 180 * 1024, exact_limit=0)
    assert evo.method == "evolutionary" and evo.plan.train_peak_sram_bytes <= 180 * 1024
    assert 0.9 * tight.gain <= evo.gain <= tight.gain + 1e-12


def test_updates_that_gain_nothing_are_left_out(net):
    """A weight ratio that gains no more than a cheaper one costs SRAM for nothing: on a tie the
    search must not take it, even when the budget has room."""
    table = random_table(np.random.default_rng(4))
    table.bias = {k: 0.1 * k for k in range(5)}
    table.weights = {6: {0.125: 0.0, 0.25: 0.0, 0.5: 0.3, 1.0: 0.3}, 3: {r: 0.0 for r in RATIOS if r > 0}}
    r = search_scheme(net, table, 10**9, max_weight_ops=3)
    assert r.scheme.weight_ratios == {6: 0.5}
    assert r.gain == pytest.approx(0.4 + 0.3)
