"""What a board run measured, for people: a per-layer table, a memory summary, and a plot.

Reads only the profile dict of run.profile_report (the JSON `tinymem run --profile` writes), so
anything shown here is also in that file. The plot uses matplotlib's object API on Agg (headless).
"""
from __future__ import annotations

from pathlib import Path

from rich.table import Table


def layers_table(profile: dict, title: str | None = None) -> Table:
    unit = profile["unit"]
    total = sum(layer[unit] or 0 for layer in profile["layers"]) or 1
    table = Table(title=title or f"per layer on {profile['board']} ({unit}, clock {profile['clock']})")
    for col in ("#", "op", "MACs", unit, "share", f"{unit}/MAC"):
        table.add_column(col, justify="left" if col == "op" else "right")
    for layer in profile["layers"]:
        n = layer[unit] or 0
        table.add_row(str(layer["index"]), layer["op"], f"{layer['macs']:,}", f"{n:,}", f"{n / total:.1%}",
                      f"{n / layer['macs']:.1f}" if layer["macs"] else "-")
    stage = profile.get("patch_stage")
    if stage and stage.get(unit) is not None:
        macs = sum(layer["macs"] for layer in profile["layers"][stage["ops"][0]:stage["ops"][1] + 1])
        table.add_row(f"{stage['ops'][0]}..{stage['ops'][1]}", f"patch stage, {stage['patches']} patches (sum)",
                      f"{macs:,}", f"{stage[unit]:,}", f"{stage[unit] / total:.1%}",
                      f"{stage[unit] / macs:.1f}" if macs else "-", end_section=True)
    table.add_row("", "invoke (median)", "", f"{profile[f'total_{unit}']:,}", "", "", end_section=True)
    read = profile.get("input_read")
    if read:
        table.add_row("", f"+ waiting for {read['windows_per_invoke']} input windows (link)", "",
                      f"{read[f'median_{unit}']:,}", "", "")
    return table


def memory_lines(profile: dict) -> list[str]:
    plan = profile["plan"]
    measured, limit = profile["peak_sram_measured_bytes"], profile["ram_limit_bytes"]
    return [
        f"planned peak SRAM {plan['peak_sram_bytes']:,} B (arena {plan['arena_bytes']:,} B)",
        f"measured peak SRAM {measured:,} B = {profile['ram_static_bytes']:,} B .data+.bss (linked ELF) + "
        f"{profile['stack_high_water_bytes']:,} B stack high water (painted)",
        f"measured - planned = {measured - plan['peak_sram_bytes']:,} B of runtime and stack; allowed "
        f"{plan['runtime_budget_bytes']:,} B: {'within' if profile['within_plan_bound'] else 'OVER'} the "
        f"plan's bound {plan['bound_bytes']:,} B",
        f"board RAM limit {limit:,} B: {measured / limit:.1%} used",
    ]


def plot_profile(profile: dict, path: str | Path) -> Path:
    """Two panels: per-layer clock counts, and planned vs measured SRAM (split into its parts)."""
    from matplotlib.figure import Figure

    unit, layers = profile["unit"], profile["layers"]
    fig = Figure(figsize=(10, 7), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1.3])
    names = [f"{layer['index']} {layer['op']}" for layer in layers]
    top.bar(range(len(layers)), [layer[unit] or 0 for layer in layers], color="#1f77b4")
    if len(layers) <= 40:
        top.set_xticks(range(len(layers)), names, rotation=60, ha="right", fontsize=7)
    top.set_ylabel(f"{unit} (median of {profile['samples']})")
    top.set_title(f"{profile['model']} on {profile['board']}: {profile[f'total_{unit}']:,} {unit} per inference "
                  f"(clock {profile['clock']})", fontsize=10)
    top.grid(axis="y", alpha=0.3)

    plan = profile["plan"]
    arena, static, stack = plan["arena_bytes"], profile["ram_static_bytes"], profile["stack_high_water_bytes"]
    bottom.barh([1], [plan["peak_sram_bytes"]], color="#1f77b4", label="plan: peak SRAM")
    parts = [(arena, "arena (in .bss)", "#1f77b4"), (static - arena, "runtime + C library statics", "#ff7f0e"),
             (stack, "stack high water", "#2ca02c")]
    left = 0
    for width, label, color in parts:
        bottom.barh([0], [width], left=left, color=color, alpha=0.8 if label.startswith("arena") else 1,
                    label=f"measured: {label}")
        left += width
    bottom.axvline(plan["bound_bytes"], color="k", ls="--", lw=1,
                   label=f"plan + runtime budget {plan['bound_bytes']:,} B")
    bottom.set_yticks([0, 1], ["measured", "planned"])
    bottom.set_xlabel(f"bytes (board RAM limit {profile['ram_limit_bytes']:,} B: "
                      f"{profile['peak_sram_measured_bytes'] / profile['ram_limit_bytes']:.1%} used)")
    bottom.legend(loc="lower right", fontsize=7)
    bottom.set_xlim(0, plan["bound_bytes"] * 1.45)  # room for the legend
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
