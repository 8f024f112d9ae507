"""On-device training memory: the sparse-update scheme the search picks within a budget vs the
same scheme without operator reordering vs full back-propagation, per zoo model.

    .venv/bin/python benchmarks/bench_train.py [--json] [--budget 256KiB 200KiB 128KiB] [--models NAME|PATH.tflite ...]

Gains: no data set is run here, so the contribution table is the Tiny Training paper's fallback,
gains proportional to the parameters each update touches (tinymem.train.contrib.param_count_gains),
labelled as such in every output. With it the search fills the budget with as many updated
parameters as fit; a measured table (`tinymem train-plan --data`) picks by accuracy instead.
Goal (issue #5): train peak <= 256 KiB and full back-propagation >= 20x ours. Since the search
spends the whole budget, the ratio is set by the budget: full back-propagation of MobileNetV2-0.35
needs 4.44 MB, so 20x needs a scheme of at most 222 KB; each budget is its own row.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tinymem.errors import TinymemError  # noqa: E402
from tinymem.model import load_tflite  # noqa: E402
from tinymem.plan import make_plan  # noqa: E402
from tinymem.plan.patch_search import parse_size  # noqa: E402
from tinymem.train.contrib import PARAM_HEURISTIC, param_count_gains  # noqa: E402
from tinymem.train.memory import full_backprop_sram_bytes, plan_training  # noqa: E402
from tinymem.train.search import search_scheme  # noqa: E402

DEFAULT = ["mobilenetv2_035_96", "mcunet_like", "dscnn_kws", "digits_cnn"]
GOAL_RATIO = 20.0


@dataclass
class Row:
    model: str
    budget: int
    train_peak: int
    arena: int
    static: int
    no_reorder: int
    full_backprop: int
    inference_peak: int
    scheme: dict
    search: dict

    @property
    def full_over_ours(self) -> float:
        return self.full_backprop / self.train_peak

    @property
    def no_reorder_over_ours(self) -> float:
        return self.no_reorder / self.train_peak

    def as_dict(self) -> dict:
        return {**asdict(self), "full_over_ours": round(self.full_over_ours, 2),
                "no_reorder_over_ours": round(self.no_reorder_over_ours, 2),
                "goal_met": self.train_peak <= self.budget and self.full_over_ours >= GOAL_RATIO}


def measure(path: Path, budget: int) -> Row:
    g = load_tflite(path)
    result = search_scheme(g, param_count_gains(g), budget)
    plan = result.plan
    return Row(model=path.stem, budget=budget, train_peak=plan.train_peak_sram_bytes, arena=plan.arena_bytes,
               static=plan.static_bytes,
               no_reorder=plan_training(g, plan.scheme, reorder=False).train_peak_sram_bytes,
               full_backprop=full_backprop_sram_bytes(g), inference_peak=make_plan(g).peak_sram_bytes,
               scheme=plan.scheme.as_dict(), search=result.as_dict())


def _scheme_text(s: dict) -> str:
    parts = [f"biases of the last {len(s['bias_ops'])} layers"] if s["bias_ops"] else []
    parts += [f"op {i} weights at {r:g}" for i, r in s["weight_ratios"].items()]
    return ", ".join(parts)


def table(rows: list[Row]) -> Table:
    t = Table(title="training step SRAM (KiB) at the scheme searched within the budget",
              caption=f"gains: {PARAM_HEURISTIC}")
    for col in ("model", "budget", "ours", "arena+static", "no reorder", "full BP", "full/ours", "inference"):
        t.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    for r in rows:
        t.add_row(r.model, f"{r.budget / 1024:g}", f"{r.train_peak / 1024:.1f}", f"{r.arena / 1024:.0f}+{r.static / 1024:.0f}",
                  f"{r.no_reorder / 1024:.1f}", f"{r.full_backprop / 1024:.0f}",
                  f"{'[green]' if r.full_over_ours >= GOAL_RATIO else ''}{r.full_over_ours:.1f}x",
                  f"{r.inference_peak / 1024:.1f}")
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--budget", nargs="+", default=["256KiB", "200KiB", "128KiB"],
                    help="SRAM budgets of the training step, a row each (default 256KiB 200KiB 128KiB)")
    ap.add_argument("--models", nargs="+", default=DEFAULT, help="zoo names or .tflite paths")
    args = ap.parse_args()
    console = Console(stderr=args.json)
    try:
        budgets = [parse_size(b) for b in args.budget]
        rows = []
        for name in args.models:
            path = Path(name) if name.endswith(".tflite") else ROOT / "models" / f"{name}.tflite"
            for budget in budgets:
                with console.status(f"{path.stem}: searching and planning within {budget:,} B"):
                    start = time.perf_counter()
                    rows.append(measure(path, budget))
                console.print(f"{path.stem} at {budget:,} B: {time.perf_counter() - start:.1f} s")
    except TinymemError as e:
        Console(stderr=True).print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        return 1
    if args.json:
        print(json.dumps({"gains": PARAM_HEURISTIC, "goal_full_over_ours": GOAL_RATIO,
                          "rows": [r.as_dict() for r in rows]}, indent=2))
        return 0
    console.print(table(rows))
    for r in rows:
        s = r.search
        verdict = "met" if r.as_dict()["goal_met"] else "not met"
        console.print(f"{r.model}: {_scheme_text(r.scheme)} ({s['method']} search, "
                      f"{'proven optimal' if s['exact'] else 'best found'}, {s['seconds']:.1f} s); ours {r.train_peak:,} B "
                      f"of {r.budget:,} B, full back-propagation {r.full_backprop:,} B = {r.full_over_ours:.1f}x "
                      f"(goal >= {GOAL_RATIO:g}x within the budget: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
