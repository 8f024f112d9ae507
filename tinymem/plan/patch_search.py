"""Choosing a patch schedule: enumerate split points x grids, bound, plan the promising ones.

Every schedule (split op K, R x C grid, up to MAX_GRID per axis) gets its exact MACs (halo
recompute included) and a lower bound on its peak SRAM in closed form: max(the patch stage's
live bytes minus what in-place ops may share, the rest of the graph's per-step bound, which is
the layer-wise one and does not depend on the grid). Only schedules whose bound can still win
are planned for real (the overlap-aware planner, its local search off), so the choice is exact
with respect to that planner:
- with an SRAM budget: the fewest MACs among the plans that fit (layer by layer included);
- without: the lowest peak among the plans whose extra MACs stay within `max_overhead`.
The final schedule is then planned with the full planner. The Pareto front (peak vs MACs) of the
considered schedules is reported with real peaks.

Input streaming (`stream`): True searches only schedules that fetch the input window by window
(--stream-input); False never streams; None (the default) streams only when a budget needs it:
with `sram`, schedules that keep the input in the arena are tried first, streamed ones only if none
of those fits (streaming changes the model's interface: the application must serve
tinymem_read_input()).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace

from ..errors import TinymemError
from ..model.graph import Graph
from .arena import align_up
from .lifetimes import compute_lifetimes
from .memory import MemoryPlan, make_plan
from .patch import (
    MAX_GRID, Analysis, Schedule, make_patch_plan, quick_peak, stage_estimate, stage_plan, step_lower_bounds,
)

DEFAULT_MAX_OVERHEAD = 0.15
MAX_REAL_PLANS = 60  # real plans the search may make beyond the front (a bound on its time)


@dataclass
class Candidate:
    schedule: Schedule | None  # None: layer by layer
    macs: int
    bound: int  # lower bound on the peak SRAM
    peak: int | None = None  # the planned peak (quick planner), once planned

    def as_dict(self, layerwise_macs: int) -> dict:
        s = self.schedule
        return {"split_op": None if s is None else s.split_op, "grid": None if s is None else [s.rows, s.cols],
                "label": "layer-wise" if s is None else s.label, "input": "arena" if s is None else s.input_mode,
                "peak_sram_bytes": self.peak, "macs": self.macs,
                "extra_macs_ratio": (self.macs - layerwise_macs) / layerwise_macs if layerwise_macs else 0.0}


@dataclass
class PatchChoice:
    plan: MemoryPlan  # the chosen plan (a patch plan, or the layer-wise one)
    layerwise: MemoryPlan
    considered: int = 0  # schedules evaluated
    planned: int = 0  # schedules planned for real
    pareto: list[Candidate] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def schedule(self) -> Schedule | None:
        return None if self.plan.patch is None else self.plan.patch.schedule

    def as_dict(self) -> dict:
        lw = self.layerwise
        s = self.schedule
        return {
            "split_op": None if s is None else s.split_op,
            "grid": None if s is None else [s.rows, s.cols],
            "label": "layer-wise" if s is None else s.label,
            "input": "arena" if s is None else s.input_mode,
            "peak_sram_bytes": self.plan.peak_sram_bytes,
            "layerwise_peak_sram_bytes": lw.peak_sram_bytes,
            "macs": self.plan.macs,
            "layerwise_macs": lw.macs,
            "extra_macs_ratio": (self.plan.macs - lw.macs) / lw.macs if lw.macs else 0.0,
            "schedules_considered": self.considered,
            "schedules_planned": self.planned,
            "search_seconds": round(self.seconds, 3),
        }


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from '65536', '64K', '64KB', '64KiB', '0.5MiB' (K/KB/KiB = 1024 bytes, as MCU RAM is sold)."""
    m = _SIZE.match(str(text))
    if not m:
        raise TinymemError(f"cannot read '{text}' as a size; write e.g. 65536, 64KiB or 1MiB")
    unit = (m.group(2) or "b").lower()
    return int(float(m.group(1)) * {"b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1 << 20, "mb": 1 << 20,
                                     "mib": 1 << 20}[unit])


_GRID = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*@\s*(\d+)\s*$")


def parse_patch(text: str) -> str | Schedule:
    """'auto', 'off', or 'RxC@K' (a forced grid ending after op K)."""
    t = str(text).strip().lower()
    if t in ("auto", "off"):
        return t
    m = _GRID.match(t)
    if not m:
        raise TinymemError(f"--patch must be auto, off or RxC@K (e.g. 3x3@12), got '{text}'")
    r, c, k = (int(v) for v in m.groups())
    if r < 1 or c < 1:
        raise TinymemError(f"--patch {text}: the grid needs at least one row and one column")
    return Schedule(k, r, c)


def enumerate_schedules(an: Analysis, max_grid: int = MAX_GRID, stream: bool = False):
    for k, st in sorted(an.stages.items()):
        if stream and st.stream_blocker:
            continue
        t = an.g.t(st.split)
        for r in range(1, min(max_grid, int(t.shape[1])) + 1):
            for c in range(1, min(max_grid, int(t.shape[2])) + 1):
                if r * c >= 2:
                    yield Schedule(k, r, c, stream)


def pareto_front(cands: list[Candidate], key) -> list[Candidate]:
    """Candidates not dominated in (key(c), macs): sorted by peak, MACs strictly falling."""
    out: list[Candidate] = []
    for c in sorted(cands, key=lambda c: (key(c), c.macs)):
        if not out or c.macs < out[-1].macs:
            out.append(c)
    return out


def search(g: Graph, mode: str | Schedule = "auto", sram: int | None = None,
           max_overhead: float = DEFAULT_MAX_OVERHEAD, planner: str = "tinymem", max_grid: int = MAX_GRID,
           stream: bool | None = None) -> PatchChoice:
    """Plan `g` per `mode` ('off', 'auto' or a forced Schedule) and `stream`; see the module docstring."""
    t0 = time.perf_counter()
    layerwise = make_plan(g, planner)
    if mode == "off":
        if stream:
            raise TinymemError("--stream-input needs a patch stage: use it with --patch auto or --patch RxC@K")
        choice = PatchChoice(layerwise, layerwise)
        _check_budget(choice.plan, sram, "layer by layer", hint=True)
        choice.seconds = time.perf_counter() - t0
        return choice
    an = Analysis(g)
    lw_cand = Candidate(None, layerwise.macs, layerwise.peak_sram_bytes, layerwise.peak_sram_bytes)
    if isinstance(mode, Schedule):
        mode = replace(mode, stream=bool(stream))
        plan = make_patch_plan(g, mode, planner, an=an)
        cand = Candidate(mode, plan.macs, plan.peak_sram_bytes, plan.peak_sram_bytes)
        choice = PatchChoice(plan, layerwise, 1, 1, pareto_front([lw_cand, cand], lambda c: c.peak))
        _check_budget(plan, sram, f"schedule {mode.label}" + (" with the input streamed" if mode.stream else ""))
        choice.seconds = time.perf_counter() - t0
        return choice

    # Bounds: the rest of the graph after split K is the layer-wise plan's steps K+1.. exactly.
    n = len(g.ops)
    steps = step_lower_bounds(an.base_lifetimes() if planner != "greedy" else compute_lifetimes(g, use_overlaps=False), n)
    rest = [0] * (n + 1)
    for s in range(n - 1, -1, -1):
        rest[s] = max(rest[s + 1], steps[s])

    def candidates(streamed: bool) -> list[Candidate]:
        out = [] if streamed else [lw_cand]  # layer by layer holds the input whole
        for sched in enumerate_schedules(an, max_grid, streamed):
            sp = stage_plan(an, sched, exact=False)
            if sp is None:
                continue
            bound = max(stage_estimate(g, sp, an=an), rest[sched.split_op + 1])
            macs = layerwise.macs - sum(an.op_macs(s) for s in sp.stage.ops) + sum(sp.macs.values())
            out.append(Candidate(sched, macs, align_up(bound, 4)))
        return out

    planned = 0

    def real(c: Candidate) -> int:
        nonlocal planned
        if c.peak is None:
            c.peak = quick_peak(an, c.schedule, planner)
            planned += 1
        return c.peak

    lw_macs = layerwise.macs
    modes = [True] if stream else [False] + ([True] if stream is None and sram is not None else [])
    considered: list[Candidate] = []
    best = None
    for streamed in modes:
        cands = candidates(streamed)
        if stream and not cands:
            why = next((st.stream_blocker for st in an.stages.values() if st.stream_blocker), None)
            raise TinymemError("--stream-input: no patch stage can stream this model's input" + (f" ({why})" if why else ""))
        considered += cands
        if sram is not None:
            best = _fewest_macs_that_fit(cands, sram, real)
        else:
            allowed = [c for c in cands if c.macs <= lw_macs * (1 + max_overhead)]
            if not allowed:
                raise TinymemError(f"no streamed schedule stays within {max_overhead:.0%} extra MACs; "
                                   "raise --max-overhead")
            best = _smallest_peak(allowed, real)
        if best is not None:
            break
    if best is None:
        smallest = _smallest_peak(considered, real)
        raise TinymemError(
            f"no schedule fits {sram:,} B of SRAM: the smallest peak any schedule reaches is "
            f"{smallest.peak:,} B ({_describe(smallest)}, {(smallest.macs - lw_macs) / lw_macs:+.1%} MACs); "
            f"layer by layer needs {layerwise.peak_sram_bytes:,} B")
    front = [c for c in pareto_front(considered, lambda c: c.bound)]
    for c in front[:MAX_REAL_PLANS]:
        real(c)
    front = pareto_front([c for c in considered if c.peak is not None], lambda c: c.peak)
    if best.schedule is None:
        plan = layerwise
    else:
        plan = make_patch_plan(g, best.schedule, planner, an=an)
        if sram is not None and plan.peak_sram_bytes > sram:  # the full planner never does worse, but be sure
            plan = make_patch_plan(g, best.schedule, planner, an=an, quick=True)
        best.peak = min(best.peak, plan.peak_sram_bytes)
    return PatchChoice(plan, layerwise, len(considered) - (0 if stream else 1), planned, front,
                       time.perf_counter() - t0)


def _fewest_macs_that_fit(cands: list[Candidate], sram: int, real) -> Candidate | None:
    """Walk by MACs, plan what the bound does not rule out; None if nothing within reach fits."""
    tries = 0
    for c in sorted(cands, key=lambda c: (c.macs, _patches(c), c.bound)):
        if c.bound > sram:
            continue
        if real(c) <= sram:
            return c
        tries += 1
        if tries >= MAX_REAL_PLANS:
            break
    return None


def _describe(c: Candidate) -> str:
    if c.schedule is None:
        return "layer by layer"
    return c.schedule.label + (" with the input streamed" if c.schedule.stream else "")


def _smallest_peak(cands: list[Candidate], real) -> Candidate:
    """Branch and bound over the lower bounds: the candidate with the smallest planned peak."""
    best = None
    for c in sorted(cands, key=lambda c: (c.bound, c.macs)):
        if best is not None and c.bound > best.peak:
            break
        if best is not None and c.bound == best.peak and (c.macs, _patches(c)) >= (best.macs, _patches(best)):
            continue  # at best a tie on peak, with more MACs or patches
        real(c)
        if best is None or (c.peak, c.macs, _patches(c)) < (best.peak, best.macs, _patches(best)):
            best = c
    return best


def _patches(c: Candidate) -> int:
    """Ties go to fewer patches (layer by layer counts as one)."""
    return 1 if c.schedule is None else c.schedule.patches


def _check_budget(plan: MemoryPlan, sram: int | None, what: str, hint: bool = False) -> None:
    if sram is not None and plan.peak_sram_bytes > sram:
        raise TinymemError(f"{what}, the model needs {plan.peak_sram_bytes:,} B of SRAM, more than {sram:,} B"
                           + ("; try --patch auto" if hint else ""))
