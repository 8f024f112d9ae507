"""The memory picture of a training step: per timeline step (forward, then backward), the bytes in
use stacked by kind, for the chosen scheme and for full back-propagation beside it.

matplotlib's object API on the Agg canvas, like tinymem/report/plots.py (headless, no pyplot).
"""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from ..report.plots import _unit
from .memory import ACTIVATION, GRADIENT, TrainPlan

KINDS = ("activations", "saved for backward", "gradients", "scratch", "static parameters")
COLORS = {"activations": "#1f77b4", "saved for backward": "#ff7f0e", "gradients": "#d62728",
          "scratch": "#bbbbbb", "static parameters": "#2ca02c"}


def _covered(spans: list[tuple[int, int]]) -> int:
    """Bytes covered by the union of [lo, hi) spans."""
    total, end = 0, 0
    for lo, hi in sorted(spans):
        if hi > end:
            total += hi - max(lo, end)
            end = hi
    return total


def memory_by_kind(plan: TrainPlan) -> dict[str, list[int]]:
    """Per timeline step, arena bytes in use by kind (plus the static parameters). An activation
    counts as "saved" past the step inference would have let it die. Bytes an in-place op shares
    between its input and output count once, for the kind listed first, so the stack's height is
    exactly the live bytes (TrainPlan.live_bytes)."""
    spans: dict[str, list[list[tuple[int, int]]]] = {k: [[] for _ in range(plan.steps)] for k in KINDS}
    for b in plan.lifetimes.buffers:
        span = (plan.offsets[b.id], plan.offsets[b.id] + b.size)
        for s in range(b.first, b.last + 1):
            if b.role == ACTIVATION:
                kind = "saved for backward" if s > b.forward_last else "activations"
            else:
                kind = "gradients" if b.role == GRADIENT else "scratch"
            spans[kind][s].append(span)
    out = {k: [0] * plan.steps for k in KINDS}
    for s in range(plan.steps):
        below: list[tuple[int, int]] = []
        for kind in KINDS[:-1]:
            before = _covered(below)
            below += spans[kind][s]
            out[kind][s] = _covered(below) - before
    out["static parameters"] = [plan.static_bytes] * plan.steps
    return out


def _panel(ax, plan: TrainPlan, title: str, budget: int | None) -> None:
    stacks = memory_by_kind(plan)
    top = max(plan.train_peak_sram_bytes, budget or 0, max(map(sum, zip(*stacks.values())), default=0), 1)
    u, unit = _unit(top)
    x = range(plan.steps)
    bottom = [0.0] * plan.steps
    for kind in ("static parameters", *KINDS[:-1]):  # static at the bottom: it never changes
        vals = [v / u for v in stacks[kind]]
        if any(vals):
            ax.bar(x, vals, bottom=bottom, width=0.85, color=COLORS[kind], label=kind)
            bottom = [b + v for b, v in zip(bottom, vals)]
    ax.axhline(plan.train_peak_sram_bytes / u, color="black", lw=1.2,
               label=f"train peak {plan.train_peak_sram_bytes:,} B (arena {plan.arena_bytes:,} + static {plan.static_bytes:,})")
    if budget is not None:
        ax.axhline(budget / u, color="black", lw=1, ls="--", label=f"budget {budget:,} B")
    n = len(plan.graph.ops)
    ax.axvline(n - 0.5, color="grey", lw=1, ls=":")
    ax.text(n - 0.5, top / u * 1.02, " backward →", fontsize=8, va="bottom", color="grey")
    ax.text(n - 0.5, top / u * 1.02, "← forward ", fontsize=8, va="bottom", ha="right", color="grey")
    ax.set_xlim(-0.6, plan.steps - 0.4)
    ax.set_ylim(0, top / u * 1.3)
    ax.set_ylabel(f"SRAM in use ({unit})")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=7, ncol=3)
    ax.grid(axis="y", alpha=0.3)


def plot_training_memory(plan: TrainPlan, path: str | Path, full: TrainPlan | None = None,
                         budget: int | None = None, name: str | None = None) -> Path:
    """Write a PNG: the chosen scheme's per-step memory by kind (top) and, if given, full
    back-propagation's on its own scale (bottom: it is many times larger)."""
    path = Path(path)
    rows = 2 if full is not None else 1
    steps = max(plan.steps, full.steps if full else 0)
    fig = Figure(figsize=(min(24.0, max(10.0, 6 + 0.12 * steps)), 4.5 * rows), dpi=110, layout="constrained")
    axes = fig.subplots(rows, 1, squeeze=False)[:, 0]
    s = plan.scheme
    what = ", ".join(filter(None, [f"biases of {len(s.bias_ops)} layer{'s' * (len(s.bias_ops) > 1)}" if s.bias_ops else "",
                                   *(f"op {i} weights {r:g}" for i, r in sorted(s.weight_ratios.items()))]))
    _panel(axes[0], plan, f"sparse update ({what}){'' if plan.reorder else ', no reordering'}", budget)
    title = f"{name or plan.graph.name}: training step {plan.train_peak_sram_bytes:,} B"
    if full is not None:
        _panel(axes[1], full, "full back-propagation (every layer, all channels, no reordering)", None)
        title += f" vs full back-propagation {full.train_peak_sram_bytes:,} B " \
                 f"({full.train_peak_sram_bytes / plan.train_peak_sram_bytes:.1f}x)"
    axes[-1].set_xlabel("timeline step (forward ops, then backward ops)")
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


__all__ = ["KINDS", "memory_by_kind", "plot_training_memory"]
