"""Choose the sparse-update scheme: the most summed gain (Tiny Training: gains add) whose training
step fits the SRAM budget, judged by the true memory model (tinymem/train/memory.py).

A scheme is a genome: how many of the last biases are updated (one of the gain table's k) and, per
candidate weight tensor (the last `max_weight_ops` updatable layers), one of RATIOS. Its gain is a
sum of table entries; its SRAM is the planned arena plus static parameter bytes. Two facts keep the
true model cheap to ask: the static bytes are a sum over ops (exact, no planning), and with
operator reordering the arena does not depend on the ratio values, only on which ops are updated,
so arenas are planned once per (biases, set of weight ops) and shared. Before planning, the
arena's lower bound (tinymem.plan.arena.lower_bound) proves a misfit and the planner's first pass
(an upper bound of its result) proves a fit; only undecided arenas are fully planned.

Search, all exact except the last:
- with reordering (the default), per arena group: each group's best is a vectorised max over its
  ratio combinations, groups are visited best bound first (_best_by_arena);
- without reordering, small spaces: schemes best gain first (the k-best sums of sorted lists,
  lazily); the first that fits is optimal;
- otherwise a seeded evolutionary search (greedy seed, crossover, mutation, repair, then a
  two-coordinate hill-climb), after which the best-gain-first enumeration looks above its result
  within a work cap: if it ends, the result is proven optimal.
"""
from __future__ import annotations

import heapq
import itertools
import random
import time
from dataclasses import dataclass

import numpy as np

from ..errors import TinymemError
from ..model.graph import Graph
from ..plan.arena import PLANNERS, OverlapAware, align_up, max_overlap
from ..plan.lifetimes import Lifetimes
from .contrib import GainTable
from .memory import TrainPlan, io_static_bytes, op_param_sram_bytes, plan_training, training_arena_bytes, training_lifetimes, updatable_ops
from .scheme import Scheme

EXHAUSTIVE_LIMIT = 20_000  # without reordering, exact search (one arena per scheme) up to this many schemes
Genome = tuple[int, ...]  # (index into the bias ks, then per candidate op an index into its ratios)


@dataclass
class SearchResult:
    scheme: Scheme
    gain: float
    plan: TrainPlan
    exact: bool  # proven optimal under the gain table and the memory model
    method: str  # "exhaustive" or "evolutionary"
    space: int  # schemes in the search space
    arenas: int  # distinct arenas bounded (a scheme's arena is shared by every scheme with the same updates)
    planned: int  # of those, fully planned (the rest were decided by their bounds)
    seconds: float

    def as_dict(self) -> dict:
        return {"gain": self.gain, "exact": self.exact, "method": self.method, "space": self.space,
                "arenas": self.arenas, "planned": self.planned, "seconds": round(self.seconds, 3)}


def _undominated(options: list, gain: dict) -> list:
    """`options` (in order of rising cost) without those whose gain does not beat every cheaper one's."""
    out, best = [], float("-inf")
    for o in options:
        if gain[o] > best:
            out.append(o)
            best = max(best, gain[o])
    return out


class _Space:
    """The genomes of one (graph, gain table, budget), their gains, static bytes and fit."""

    def __init__(self, g: Graph, table: GainTable, budget: int, max_weight_ops: int, reorder: bool, planner: str,
                 lr: float, qas: bool, prune: bool = True):
        table.check(g)
        self.g, self.table, self.budget, self.reorder, self.planner = g, table, budget, reorder, planner
        self.lr, self.qas = lr, qas
        last = {op.index for op in updatable_ops(g)[-max_weight_ops:]} if max_weight_ops > 0 else set()
        # An option that costs more SRAM than a smaller one (more biases, a higher ratio) but gains
        # no more is never worth taking: dropping it keeps the optimum and keeps zero-gain updates
        # out of the scheme (on a tie the search would otherwise spend budget on nothing).
        keep = _undominated if prune else (lambda options, _gain: options)
        self.ks = keep(sorted(table.bias), table.bias)
        ratios = {i: keep([0.0] + sorted(r for r in table.weights[i] if r > 0), {0.0: 0.0, **table.weights[i]})
                  for i in table.weights if i in last}
        self.wops = sorted(i for i, rs in ratios.items() if len(rs) > 1)
        self.ratios = [ratios[i] for i in self.wops]
        self.options = [len(self.ks)] + [len(r) for r in self.ratios]
        self.gains = [[table.bias[k] for k in self.ks]] + [
            [0.0] + [table.weights[i][r] for r in rs[1:]] for i, rs in zip(self.wops, self.ratios)]
        self._static_tables()
        self._arena: dict[tuple, dict] = {}
        self._fits: dict[Genome, bool] = {}
        self.planned = 0
        self.align = 16 if planner == "greedy" else OverlapAware().align

    @property
    def size(self) -> int:
        n = 1
        for o in self.options:
            n *= o
        return n - 1  # the genome that updates nothing is no scheme

    def gain(self, x: Genome) -> float:
        return sum(gains[v] for gains, v in zip(self.gains, x))

    def scheme(self, x: Genome) -> Scheme:
        return Scheme(bias_ops=list(self.table.bias_ops[:self.ks[x[0]]]),
                      weight_ratios={i: rs[v] for i, rs, v in zip(self.wops, self.ratios, x[1:]) if v > 0},
                      qas=self.qas, lr=self.lr)

    def empty(self, x: Genome) -> bool:
        return self.ks[x[0]] == 0 and not any(x[1:])

    def _static_tables(self) -> None:
        """Static bytes decomposed so a genome's are a few lookups: the bias prefix's ops as if
        only their biases were updated, plus per weight op what its ratio adds (depending on
        whether its bias is in the prefix: the folded bias copy is shared)."""
        g, ops = self.g, self.g.ops

        def p(i: int, r: float, bias: bool) -> int:
            return op_param_sram_bytes(g, ops[i], r, bias)

        prefix = [io_static_bytes(g)]  # the firmware's I/O buffers: the same for every scheme
        for i in self.table.bias_ops:
            prefix.append(prefix[-1] + p(i, 0.0, True))
        self.bias_static = [prefix[k] for k in self.ks]
        pos = {i: n for n, i in enumerate(self.table.bias_ops)}
        self.bias_pos = [pos.get(i, len(pos)) for i in self.wops]  # in the prefix of k iff pos < k
        self.weight_static = [[(p(i, r, False), p(i, r, True) - p(i, 0.0, True)) for r in rs]
                              for i, rs in zip(self.wops, self.ratios)]

    def static(self, x: Genome) -> int:
        k = self.ks[x[0]]
        return self.bias_static[x[0]] + sum(table[v][pos < k] for table, v, pos in
                                            zip(self.weight_static, x[1:], self.bias_pos))

    def arena_key(self, x: Genome) -> tuple:
        # Reordered, the ratio values change static bytes only; otherwise the scratch too.
        return (x[0], tuple(v if not self.reorder else v > 0 for v in x[1:]))

    def fits(self, x: Genome) -> bool:
        if x in self._fits:
            return self._fits[x]
        room = self.budget - self.static(x)
        ok = not self.empty(x) and room >= 0 and self._arena_fits(self.arena_key(x), self.scheme(x), room)
        self._fits[x] = ok
        return ok

    def _arena_fits(self, key: tuple, scheme: Scheme, room: int) -> bool:
        """Does the arena of `key` fit in `room` bytes? Decided by the cheapest sufficient test:
        the lower bound, then (tinymem planner) one first-fit pass, then the planner itself."""
        a = self._arena.setdefault(key, {})
        if "exact" in a:
            return a["exact"] <= room
        if self.arena_lb(key, scheme) > room:
            return False
        if self.arena_ub(key, scheme) <= room:
            return True
        return self.arena_exact(key, scheme) <= room

    def _lifetimes(self, scheme: Scheme) -> Lifetimes:
        return training_lifetimes(self.g, scheme, self.reorder, overlaps=self.planner != "greedy")

    def arena_lb(self, key: tuple, scheme: Scheme) -> int:
        a = self._arena.setdefault(key, {})
        if "lb" not in a:
            a["lb"] = a["exact"] if "exact" in a else fast_lower_bound(self._lifetimes(scheme), self.align)
        return a["lb"]

    def arena_ub(self, key: tuple, scheme: Scheme) -> int:
        """An upper bound of the planner's arena: its own first pass (it only improves on that)."""
        a = self._arena.setdefault(key, {})
        if "ub" not in a:
            a["ub"] = (OverlapAware(iterations=0).place(self._lifetimes(scheme)).arena_bytes
                       if self.planner == "tinymem" else self.arena_exact(key, scheme))
        return a["ub"]

    def arena_exact(self, key: tuple, scheme: Scheme) -> int:
        a = self._arena.setdefault(key, {})
        if "exact" not in a:
            a["exact"] = training_arena_bytes(self.g, scheme, self.reorder, self.planner)
            self.planned += 1
        return a["exact"]

    def combos(self, kx: int, ops: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Every genome with bias choice `kx` and exactly the candidate weight ops `ops` (indices
        into wops) at a nonzero ratio: (gains, static bytes), flat in C order over the ratios."""
        k = self.ks[kx]
        gains, static = np.array(self.gains[0][kx]), np.array(self.bias_static[kx], np.int64)
        for j in ops:
            in_prefix = self.bias_pos[j] < k
            gains = gains[..., None] + np.array(self.gains[1 + j][1:])
            static = static[..., None] + np.array([w[in_prefix] for w in self.weight_static[j][1:]], np.int64)
        return gains.ravel(), static.ravel()

    def genome(self, kx: int, ops: tuple[int, ...], flat: int) -> Genome:
        """The genome at position `flat` of combos(kx, ops)."""
        x = [kx] + [0] * len(self.wops)
        if ops:
            for j, v in zip(ops, np.unravel_index(flat, [self.options[1 + j] - 1 for j in ops])):
                x[1 + j] = int(v) + 1
        return tuple(x)

    def peak(self, x: Genome) -> int:
        return plan_training(self.g, self.scheme(x), self.reorder, self.planner).train_peak_sram_bytes

    def minimal(self) -> list[Genome]:
        """The smallest schemes: the fewest biases alone, or one weight tensor at its lowest ratio."""
        zero = (0,) * len(self.options)
        out = [(1,) + zero[1:]] if len(self.ks) > 1 else []
        for j in range(1, len(self.options)):
            if self.options[j] > 1:
                out.append(zero[:j] + (1,) + zero[j + 1:])
        return out

    def describe(self, x: Genome) -> str:
        s = self.scheme(x)
        parts = [f"the biases of the last {len(s.bias_ops)} layers"] if s.bias_ops else []
        parts += [f"op {i} weights at {r:g}" for i, r in sorted(s.weight_ratios.items())]
        return " + ".join(parts)


def fast_lower_bound(lt: Lifetimes, align: int = 1) -> int:
    """tinymem.plan.arena.lower_bound, in O(buffers + permits + steps) with difference arrays
    instead of one pass over all buffers per step: the search asks it for hundreds of timelines."""
    if not lt.buffers:
        return 0
    steps = max(b.last for b in lt.buffers) + 2
    need = np.zeros(steps, np.int64)
    for b in lt.buffers:
        need[b.first] += b.size
        need[b.last + 1] -= b.size
    bufs = lt.buffers
    for p in lt.permits:
        i, o = bufs[p.inp], bufs[p.out]
        lo, hi = max(i.first, o.first), min(i.last, o.last)
        if lo <= hi:
            shared = max_overlap(i.size, o.size, align_up(p.min_delta, align))
            need[lo] -= shared
            need[hi + 1] += shared
    return align_up(int(np.cumsum(need).max()), align)


# ---------------------------------------------------------------------------------------------
# best gain first


def _by_gain(space: _Space, above: float, max_pops: int | None):
    """Yield genomes in non-increasing gain while their gain exceeds `above`; stops after
    `max_pops` (then yields None to say it was cut short)."""
    order = [sorted(range(n), key=lambda v: (-gains[v], v)) for n, gains in zip(space.options, space.gains)]
    sorted_gains = [[gains[v] for v in o] for o, gains in zip(order, space.gains)]
    start = (0,) * len(order)
    heap = [(-sum(gs[0] for gs in sorted_gains), start, 0)]
    pops = 0
    while heap:
        neg, idx, last = heapq.heappop(heap)
        if -neg <= above:
            return
        if max_pops is not None and pops >= max_pops:
            yield None
            return
        pops += 1
        yield tuple(o[i] for o, i in zip(order, idx))
        # Each index vector has one parent (undo its last increment): every one is reached once.
        for c in range(last, len(order)):
            i = idx[c]
            if i + 1 < len(order[c]):
                nxt = idx[:c] + (i + 1,) + idx[c + 1:]
                heapq.heappush(heap, (neg + sorted_gains[c][i] - sorted_gains[c][i + 1], nxt, c))


def _first_fit_by_gain(space: _Space, above: float, max_pops: int | None) -> tuple[Genome | None, bool]:
    """(the best genome above `above` that fits, or None; whether the enumeration finished)."""
    for x in _by_gain(space, above, max_pops):
        if x is None:
            return None, False
        if not space.empty(x) and space.fits(x):
            return x, True
    return None, True


# ---------------------------------------------------------------------------------------------
# exact, per arena


def _best_under(gains: np.ndarray, static: np.ndarray, room: int) -> int | None:
    """Index of the most gain among entries with static <= room (the first such on ties)."""
    ok = np.flatnonzero(static <= room)
    return None if ok.size == 0 else int(ok[np.argmax(gains[ok])])


def _best_by_arena(space: _Space) -> Genome | None:
    """The optimum when the arena depends only on (bias k, set of weight ops): with reordering.

    Every genome of a group (k, set) shares one arena A, so the group's best is its most gain with
    static <= budget - A: a vectorised max. Groups are visited by their best gain under a floor no
    training arena goes below (the inference timeline's lower bound: the training timeline holds
    the same buffers at least as long, with fewer overlaps), and each only gets as far as it must:
    its own lower bound, then the planner's first pass, then the planner. The first group whose
    bound cannot beat the best so far ends the search."""
    from ..plan.lifetimes import compute_lifetimes

    floor = fast_lower_bound(compute_lifetimes(space.g, use_overlaps=space.planner != "greedy"), space.align)
    groups = []
    for kx in range(len(space.ks)):
        for size in range(len(space.wops) + 1):
            for ops in itertools.combinations(range(len(space.wops)), size):
                if space.ks[kx] == 0 and not ops:
                    continue
                gains, static = space.combos(kx, ops)
                if (i := _best_under(gains, static, space.budget - floor)) is not None:
                    groups.append((-float(gains[i]), kx, ops))
    groups.sort()
    best, best_gain = None, float("-inf")
    for neg, kx, ops in groups:
        if -neg <= best_gain:
            break
        x = space.genome(kx, ops, 0)
        key, scheme = space.arena_key(x), space.scheme(x)
        gains, static = space.combos(kx, ops)
        room = space.budget
        top = _best_under(gains, static, room - space.arena_lb(key, scheme))  # the most the group can give
        if top is None or gains[top] <= best_gain:
            continue
        pick = _best_under(gains, static, room - space.arena_ub(key, scheme))  # surely fits
        if pick is None or gains[pick] < gains[top]:
            pick = _best_under(gains, static, room - space.arena_exact(key, scheme))
            if pick is None or gains[pick] <= best_gain:
                continue
        best, best_gain = space.genome(kx, ops, pick), float(gains[pick])
    return best


# ---------------------------------------------------------------------------------------------
# evolutionary


def _repair(space: _Space, x: Genome) -> Genome | None:
    """Step coordinates down (the one giving up the least gain per static byte first) until it fits."""
    x = list(x)
    while not space.empty(tuple(x)) and not space.fits(tuple(x)):
        best = None
        for c, v in enumerate(x):
            if v == 0:
                continue
            y = x[:c] + [max(0, v - 1)] + x[c + 1:]
            lost = space.gain(tuple(x)) - space.gain(tuple(y))
            saved = space.static(tuple(x)) - space.static(tuple(y)) + 1
            if best is None or lost / saved < best[0]:
                best = (lost / saved, y)
        x = best[1]
    return None if space.empty(tuple(x)) else tuple(x)


def _greedy(space: _Space, start: Genome, max_checks: int) -> Genome:
    """Climb from `start`: take the fitting move (one coordinate raised) with the most gain per byte."""
    x, checks = start, 0
    while checks < max_checks:
        moves = []
        for c, n in enumerate(space.options):
            for v in range(n):
                y = x[:c] + (v,) + x[c + 1:]
                dg = space.gain(y) - space.gain(x)
                if dg > 0:
                    moves.append((-dg / (max(0, space.static(y) - space.static(x)) + 256), y))
        for _, y in sorted(moves):
            checks += 1
            if space.fits(y):
                x = y
                break
        else:
            return x
    return x


def _polish(space: _Space, x: Genome) -> Genome:
    """Hill-climb over changes of one or two coordinates at once (raise one, lower another: what
    the greedy and the mutations rarely hit together), best improvement first, until none fits."""
    while True:
        base = space.gain(x)
        moves = set()
        for c1, c2 in itertools.combinations_with_replacement(range(len(x)), 2):
            for v1 in range(space.options[c1]):
                for v2 in range(space.options[c2]) if c2 != c1 else (None,):
                    y = list(x)
                    y[c1] = v1
                    if v2 is not None:
                        y[c2] = v2
                    if space.gain(tuple(y)) > base:
                        moves.add(tuple(y))
        better = next((y for y in sorted(moves, key=lambda y: (-space.gain(y), y)) if space.fits(y)), None)
        if better is None:
            return x
        x = better


def _evolve(space: _Space, seed: Genome, rng: random.Random, generations: int, population: int) -> Genome:
    def rand() -> Genome:
        return tuple(rng.randrange(n) if rng.random() < 0.3 else 0 for n in space.options)

    pop = {seed}
    for _ in range(population * 3):
        if len(pop) >= population:
            break
        if (y := _repair(space, rand())) is not None:
            pop.add(y)
    pop = sorted(pop, key=lambda x: (-space.gain(x), x))
    for _ in range(generations):
        kids = []
        for _ in range(population):
            a, b = (min(rng.sample(pop, min(2, len(pop))), key=lambda x: (-space.gain(x), x)) for _ in range(2))
            child = [ai if rng.random() < 0.5 else bi for ai, bi in zip(a, b)]
            c = rng.randrange(len(child))
            child[c] = rng.randrange(space.options[c])
            if (y := _repair(space, tuple(child))) is not None:
                kids.append(y)
        pop = sorted(set(pop) | set(kids), key=lambda x: (-space.gain(x), x))[:population]
    return pop[0]


# ---------------------------------------------------------------------------------------------


def search_scheme(g: Graph, table: GainTable, budget: int, max_weight_ops: int = 8, reorder: bool = True,
                  planner: str = "tinymem", seed: int = 0, exact_limit: int = 20_000_000, generations: int = 12,
                  population: int = 16, max_pops: int = 50_000, lr: float = 0.05, qas: bool = True) -> SearchResult:
    """The scheme of most summed gain whose plan_training(...).train_peak_sram_bytes <= budget.
    Exact up to `exact_limit` schemes with reordering (per arena), EXHAUSTIVE_LIMIT without (the
    arena then depends on every ratio); evolutionary beyond.

    Options dominated by a cheaper one (no more gain for more SRAM) are left out first; that keeps
    the optimum whenever it gains anything. Only when nothing with a positive gain fits does the
    search look again among every option, dominated ones included."""
    args = (g, table, budget, max_weight_ops, reorder, planner, seed, exact_limit, generations, population,
            max_pops, lr, qas)
    try:
        result = _search(*args, prune=True)
        if result.gain > 0:
            return result
    except TinymemError:
        pass
    return _search(*args, prune=False)


def _search(g, table, budget, max_weight_ops, reorder, planner, seed, exact_limit, generations, population,
            max_pops, lr, qas, prune: bool) -> SearchResult:
    if planner not in PLANNERS:
        raise TinymemError(f"unknown planner '{planner}'; choose one of {', '.join(PLANNERS)}")
    if budget <= 0:
        raise TinymemError(f"the SRAM budget must be positive, got {budget} B")
    start = time.perf_counter()
    space = _Space(g, table, budget, max_weight_ops, reorder, planner, lr, qas, prune)
    if space.size == 0:
        raise TinymemError("the gain table offers no update (no bias k > 0 and no weight ratio)")
    if reorder and space.size <= exact_limit:
        best, exact, method = _best_by_arena(space), True, "exact"
    elif space.size <= min(exact_limit, EXHAUSTIVE_LIMIT):
        (best, exact), method = _first_fit_by_gain(space, float("-inf"), None), "exhaustive"
    else:
        method = "evolutionary"
        fitting = [x for x in space.minimal() if space.fits(x)]
        best, exact = None, False
        if fitting:
            rng = random.Random(seed)
            best = _greedy(space, max(fitting, key=lambda x: (space.gain(x), x)), max_checks=400)
            best = max(best, _evolve(space, best, rng, generations, population), key=lambda x: (space.gain(x), x))
            best = _polish(space, best)
            better, exact = _first_fit_by_gain(space, space.gain(best), max_pops)
            best = better or best
        else:
            exact = True  # the smallest schemes do not fit: nothing larger will either (reported below)
    if best is None:
        peaks = sorted((space.peak(x), space.describe(x)) for x in space.minimal())
        raise TinymemError(f"no training scheme fits in {budget:,} B of SRAM: the smallest, {peaks[0][1]}, needs "
                           f"{peaks[0][0]:,} B (--sram {peaks[0][0]} would fit it)")
    plan = plan_training(g, space.scheme(best), reorder, planner)
    assert plan.train_peak_sram_bytes <= budget, "the fit bounds disagree with the plan"
    return SearchResult(space.scheme(best), space.gain(best), plan, exact, method, space.size, len(space._arena),
                        space.planned, time.perf_counter() - start)


__all__ = ["SearchResult", "search_scheme"]
