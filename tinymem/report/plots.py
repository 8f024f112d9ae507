"""The memory picture of a plan: per-layer live bytes against the arena, and the arena layout itself.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no display, no global state), so
it runs headless in CI and from the CLI alike.
"""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from ..plan.memory import MemoryPlan

OURS, BASE, INPLACE, SCRATCH = "#1f77b4", "#7f7f7f", "#d62728", "#bbbbbb"


def _unit(top: int) -> tuple[int, str]:
    """Plot KiB once bytes get unreadable; dividing the data (not relabelling ticks) keeps ticks round."""
    return (1024, "KiB") if top >= 8192 else (1, "B")


def _op_ticks(ax, plan: MemoryPlan) -> None:
    n = len(plan.layers)
    if n <= 40:  # room for names: "3 CONV_2D"
        ax.set_xticks(range(n), [f"{layer.index} {layer.op}" for layer in plan.layers], rotation=60,
                      ha="right", fontsize=7)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_xlabel("op")


def _live_panel(ax, plan: MemoryPlan, baseline: MemoryPlan | None) -> None:
    top = max(plan.arena_bytes, baseline.arena_bytes if baseline else 0, 1)
    u, unit = _unit(top)
    x = [layer.index for layer in plan.layers]
    live = [layer.live_bytes for layer in plan.layers]
    colors = [INPLACE if layer.in_place else OURS for layer in plan.layers]
    ax.bar(x, [v / u for v in live], color=colors, width=0.8)
    handles = [Patch(color=OURS, label=f"{plan.planner}: live bytes"), Patch(color=INPLACE, label="op runs in place")]
    handles.append(ax.axhline(plan.arena_bytes / u, color=OURS, lw=1.5,
                              label=f"{plan.planner} arena {plan.arena_bytes:,} B"))
    peak = max(live, default=0)
    if peak < plan.arena_bytes:  # the gap is fragmentation the planner could not avoid
        handles.append(ax.axhline(peak / u, color=OURS, lw=1, ls=":", label=f"peak live {peak:,} B"))
    if baseline is not None:
        handles.append(ax.step(x, [layer.live_bytes / u for layer in baseline.layers], where="mid", color=BASE,
                               lw=1.2, label=f"{baseline.planner}: live bytes")[0])
        handles.append(ax.axhline(baseline.arena_bytes / u, color=BASE, lw=1.5, ls="--",
                                  label=f"{baseline.planner} arena {baseline.arena_bytes:,} B"))
    ax.set_ylim(0, top / u * 1.35)  # headroom for the legend above the arena lines
    ax.set_ylabel(f"live while the op runs ({unit})")
    ax.legend(handles=handles, loc="upper right", fontsize=8, ncol=3)
    ax.grid(axis="y", alpha=0.3)


def _layout_panel(ax, plan: MemoryPlan) -> None:
    lt, off = plan.lifetimes, plan.offsets
    arena = max(plan.arena_bytes, 1)
    u, unit = _unit(arena)
    palette = [f"C{k}" for k in range(10) if k != 7]  # C7 is the grey of scratch
    for b in lt.buffers:
        scratch = b.scratch_of is not None
        rect = Rectangle((b.first - 0.4, off[b.id] / u), b.last - b.first + 0.8, b.size / u, alpha=0.55,
                         facecolor=SCRATCH if scratch else palette[b.id % len(palette)],
                         edgecolor="black", lw=0.5, hatch="//" if scratch else None)
        ax.add_patch(rect)
        if b.size >= 0.06 * arena and not scratch:  # name the tensors big enough to matter, at the
            # top of the column of their last reader, clear of in-place hatching (usually lower)
            ax.text(b.last, (off[b.id] + b.size) / u, f"t{b.tensors[0]}", ha="center", va="top", fontsize=7,
                    bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.7))
    for p in lt.permits:  # bytes an output shares with the input it overwrites, at that op
        i, o = lt.buffers[p.inp], lt.buffers[p.out]
        lo, hi = max(off[i.id], off[o.id]), min(off[i.id] + i.size, off[o.id] + o.size)
        if hi > lo:
            ax.add_patch(Rectangle((p.op - 0.4, lo / u), 0.8, (hi - lo) / u, facecolor="none", edgecolor=INPLACE,
                                   hatch="xxx", lw=1))
    ax.axhline(plan.arena_bytes / u, color=OURS, lw=1.5)
    ax.set_ylim(0, arena / u * 1.12)
    ax.set_ylabel(f"arena offset ({unit})")
    ax.legend(handles=[Patch(color="C0", alpha=0.55, label="tensor (t = index): ops it lives x its bytes"),
                       Patch(facecolor=SCRATCH, hatch="//", label="scratch"),
                       Patch(facecolor="none", edgecolor=INPLACE, hatch="xxx", label="bytes shared in place")],
              loc="upper right", fontsize=8, ncol=3)


def plot_plan(plan: MemoryPlan, path: str | Path, baseline: MemoryPlan | None = None) -> Path:
    """Write a PNG: per-layer live bytes (bars; the baseline plan's as a line) with each arena and
    the peak, over the arena layout in time (one rectangle per buffer: the ops it lives x its bytes)."""
    path = Path(path)
    n = len(plan.layers)
    fig = Figure(figsize=(min(24.0, max(9.0, 6 + 0.22 * n)), 9), dpi=110, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2, 3])
    title = f"{plan.graph.name}: {plan.planner} arena {plan.arena_bytes:,} B"
    if baseline is not None and baseline.arena_bytes:
        title += f" vs {baseline.planner} {baseline.arena_bytes:,} B ({plan.arena_bytes / baseline.arena_bytes:.2f}x)"
    fig.suptitle(title)
    _live_panel(top, plan, baseline)
    _layout_panel(bottom, plan)
    _op_ticks(bottom, plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


PATCH = "#2ca02c"


def plot_patch(choice, path: str | Path) -> Path:
    """Write a PNG for a patch-based plan (tinymem.plan.patch_search.PatchChoice): per-layer live
    bytes layer by layer (grey) and patch-based (green: while the stage runs, the whole inputs and
    split tensor plus one patch's buffers) with both arenas, the patch stage shaded; beside it the
    Pareto front of the schedules considered (peak SRAM vs MACs)."""
    path = Path(path)
    plan, lw = choice.plan, choice.layerwise
    sp = plan.patch
    n = len(plan.layers)
    fig = Figure(figsize=(min(24.0, max(12.0, 8 + 0.22 * n)), 6.5), dpi=110, layout="constrained")
    ax, front = fig.subplots(1, 2, width_ratios=[3, 1])
    top = max(lw.arena_bytes, plan.arena_bytes, 1)
    u, unit = _unit(top)
    x = [layer.index for layer in plan.layers]
    stage = sp.stage.split_op if sp is not None else -1
    if sp is not None:
        ax.axvspan(-0.5, stage + 0.5, color=PATCH, alpha=0.08)
        ax.text(stage / 2, top / u * 1.02, f"patch stage: {sp.schedule.rows}x{sp.schedule.cols} patches"
                + (", input streamed" if sp.streamed else ""),
                ha="center", va="bottom", fontsize=8, color=PATCH)
    ax.bar(x, [layer.live_bytes / u for layer in lw.layers], color=BASE, width=0.8, alpha=0.6,
           label="layer by layer: live bytes")
    ax.bar(x, [layer.live_bytes / u for layer in plan.layers], color=PATCH, width=0.5,
           label=f"{'patch-based' if sp is not None else 'chosen'}: live bytes")
    ax.axhline(lw.arena_bytes / u, color=BASE, lw=1.5, ls="--", label=f"layer-by-layer arena {lw.arena_bytes:,} B")
    ax.axhline(plan.arena_bytes / u, color=PATCH, lw=1.5, label=f"patch-based arena {plan.arena_bytes:,} B")
    ax.set_ylim(0, top / u * 1.3)
    ax.set_ylabel(f"live while the op runs ({unit})")
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_xlabel("op")
    if n <= 40:
        ax.set_xticks(range(n), [f"{layer.index} {layer.op}" for layer in plan.layers], rotation=60, ha="right", fontsize=7)
    ax.legend(loc="upper right", fontsize=8, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    # The front: peak vs MACs of every planned schedule that no other beats on both.
    pts = [(c.macs / 1e6, c.peak / u, c) for c in choice.pareto if c.peak is not None]
    if pts:
        front.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=OURS, ms=4, lw=1)
        for mx, pk, c in pts:
            label = "layer-wise" if c.schedule is None else c.schedule.label + (" s" if c.schedule.stream else "")
            front.annotate(label, (mx, pk), fontsize=6,
                           xytext=(3, 3), textcoords="offset points")
    chosen = (plan.macs / 1e6, plan.peak_sram_bytes / u)
    front.plot(*chosen, "*", color=PATCH, ms=14, label="chosen")
    front.set_xlabel("MMACs")
    front.set_ylabel(f"peak SRAM ({unit})")
    front.set_title("Pareto front" + (" (s: input streamed)" if any(
        c.schedule is not None and c.schedule.stream for _, _, c in pts) else ""), fontsize=9)
    front.legend(fontsize=8)
    front.grid(alpha=0.3)
    s = choice.schedule
    fig.suptitle(f"{plan.graph.name}: " + (f"patch {s.label}{' (input streamed)' if s.stream else ''}: {plan.peak_sram_bytes:,} B vs {lw.peak_sram_bytes:,} B "
                                            f"layer by layer ({lw.peak_sram_bytes / plan.peak_sram_bytes:.2f}x), "
                                            f"{(plan.macs - lw.macs) / lw.macs:+.1%} MACs" if s else
                                            f"layer by layer ({lw.peak_sram_bytes:,} B)"))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
