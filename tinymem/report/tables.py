"""What `tinymem plan` prints: the per-layer account of a MemoryPlan as a rich table."""
from __future__ import annotations

from rich.table import Table

from ..plan.memory import MemoryPlan


def plan_table(plan: MemoryPlan) -> Table:
    """One row per op (MACs, arena bytes live while it runs, in place or not, flash bytes), then a
    total row: MACs and flash summed, and the arena the plan reserves in the live-bytes column
    (live bytes are not additive; the arena is what they add up to on the chip)."""
    layers = plan.layers
    peak = max((layer.live_bytes for layer in layers), default=0)
    table = Table(title=f"{plan.graph.name}: {plan.planner} plan, {len(layers)} ops", show_footer=True)
    columns = (
        ("#", "right", "total"),
        ("op", "left", ""),
        ("MACs", "right", f"{plan.macs:,}"),
        ("live B", "right", f"{plan.arena_bytes:,} arena"),
        ("in place", "center", f"{sum(layer.in_place for layer in layers)} of {len(layers)}"),
        ("flash B", "right", f"{plan.flash_bytes:,}"),
    )
    for name, justify, footer in columns:
        table.add_column(name, footer=footer, justify=justify)
    for layer in layers:
        live = f"{layer.live_bytes:,}"
        table.add_row(
            str(layer.index), layer.op, f"{layer.macs:,}",
            f"[bold]{live}[/bold]" if layer.live_bytes == peak else live,  # where the arena is set
            "yes" if layer.in_place else "",
            f"{layer.flash_bytes:,}",
        )
    return table
