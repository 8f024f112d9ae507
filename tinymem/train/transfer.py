"""`make transfer`: on-device transfer learning on the bundled task, end to end.

models/transfer_digits.tflite was pretrained on digits 0-4 only (examples/make_transfer.py, with
TensorFlow; its 10-way head never saw 5-9). Here, without TensorFlow:
  1. the sparse-update scheme: the search (tinymem/train/search.py) over the bundled contribution
     table (measured by `tinymem train-plan --data ... --gains`, or again with --measure-gains)
     under the SRAM budget; it must reproduce the bundled plan JSON, which `tinymem train` reads;
  2. fine-tuning on digits 5-9 on the emulated board (mps2_an386 in QEMU), then evaluation on the
     held-out 5-9 digits there, with the parameters the training left in the board's SRAM;
  3. the same scheme on the host build in the same sample order (it must match the board step for
     step) and in other orders (how much batch-1 SGD depends on the order);
  4. the table: before / sparse update on the board / full float fine-tuning on the host (Keras,
     numbers and settings from models/transfer_digits.json), and the training memory.

    python -m tinymem.train.transfer [--board mps2_an386] [--sram 256KiB] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import TinymemError

MODELS = Path(__file__).resolve().parents[2] / "models"
NAME = "transfer_digits"
BOARD = "mps2_an386"
BUDGET = "256KiB"
GAIN_EPOCHS = 2  # `tinymem train-plan --epochs` the bundled contribution table was measured with


NO_QAS_DECADES = (0, 2, 4, 6)  # without QAS, learning rates of 1x, 100x, 10^4x, 10^6x the QAS one


def bundled(suffix: str) -> Path:
    return MODELS / f"{NAME}{suffix}"


@dataclass
class TransferReport:
    board: str
    baselines: dict  # models/transfer_digits.json: settings and accuracies from TensorFlow
    plan: dict  # the chosen scheme's plan (TrainPlan.as_dict) and the search
    regenerated: bool | None  # the search reproduced the bundled plan (None: another budget, not compared)
    board_run: dict  # TrainResult.as_dict of the board run
    host_runs: list[dict]  # the host build, one per order seed (seed 0 = the board's order)
    board_vs_host: dict  # compare_runs of the board run and the host run in the same order
    no_qas_runs: list[dict]  # the host build, order seed 0, the same scheme without QAS, per learning rate
    full_backprop_sram_bytes: int
    inference_peak_sram_bytes: int
    order_seeds: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def compare_runs(a, b) -> dict:
    """How far two runs in the same order agree. The C libraries' expf/logf (newlib on the board,
    glibc on the host) may differ in the last bit, so losses agree to float32 rounding; the int8
    logits are equal until a master weight lands within that rounding of a .5 boundary and one
    side rounds it the other way (docs/training.md, Agreement). From there the runs drift apart."""
    differ = np.flatnonzero(np.any(a.logits != b.logits, axis=1) | (a.preds != b.preds))
    same = int(differ[0]) if differ.size else len(a.logits)
    rel = np.abs(a.losses[:same] - b.losses[:same]) / np.maximum(np.abs(b.losses[:same]), 1e-30)
    return {"steps": int(len(a.logits)), "identical_steps": same,
            "max_loss_rel_diff_while_identical": float(rel.max()) if same else 0.0,
            "eval_prediction_agreement": float(np.mean(a.eval_preds == b.eval_preds))}


def choose_plan(g, budget: int, measure: tuple | None, lr: float, progress: bool):
    """(search result, table): the search over the bundled gains, or over gains measured now on
    `measure` = (train, holdout) as `tinymem train-plan --data` does."""
    from .contrib import load_gains, measure_gains
    from .search import search_scheme

    if measure is None:
        table = load_gains(bundled(".gains.json"))
        table.check(g)
    else:
        table = measure_gains(g, *measure, epochs=GAIN_EPOCHS, lr=lr, progress=progress)
    return search_scheme(g, table, budget, lr=lr), table


def run_transfer(board: str = BOARD, budget: str = BUDGET, epochs: int | None = None, lr: float | None = None,
                 order_seeds: int = 3, measure_gains: bool = False, progress=None, on_stage=None,
                 project_dir: str | Path | None = None) -> TransferReport:
    from ..model import load_tflite
    from ..plan import make_plan
    from ..plan.patch_search import parse_size
    from .contrib import load_dataset, split_holdout
    from .memory import full_backprop_plan, plan_training
    from .run import load_train_plan, train

    stage = on_stage or (lambda _msg: None)
    try:
        baselines = json.loads(bundled(".json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TinymemError(f"{bundled('.json')}: cannot read the baselines ({exc}); rebuild with "
                           "examples/make_transfer.py") from None
    g = load_tflite(bundled(".tflite"))
    xs, ys = load_dataset(bundled(".train.npz"), g)
    test = load_dataset(bundled(".test.npz"), g)
    shipped = load_train_plan(bundled(".plan.json"), g)
    lr = shipped.scheme.lr if lr is None else lr
    epochs = baselines["finetune"]["epochs"] if epochs is None else epochs
    stage("choosing the sparse update: " + ("measuring the contribution of each update" if measure_gains
                                            else "search over the bundled contribution table"))
    result, _ = choose_plan(g, parse_size(budget), split_holdout(xs, ys, 0) if measure_gains else None, lr,
                            progress is None)
    plan = result.plan
    regenerated = None
    if parse_size(budget) == json.loads(bundled(".plan.json").read_text()).get("budget_bytes"):
        regenerated = (plan.scheme.as_dict() == shipped.scheme.as_dict()
                       and plan.train_peak_sram_bytes == shipped.train_peak_sram_bytes)
    board_run = train(g, plan, xs, ys, board, epochs, lr, test, 0, progress, stage, project_dir)
    host_runs = []
    for seed in range(order_seeds):
        stage(f"the same scheme on the host build, order seed {seed}")
        host_runs.append(train(g, plan, xs, ys, "host", epochs, lr, test, seed))
    # Without QAS each channel's effective step is scaled by its s^2 (docs/training.md): no single
    # learning rate suits every layer; sweep four decades above the QAS one and keep them all.
    no_qas_plan = plan_training(g, replace(plan.scheme, qas=False))
    no_qas = []
    for rate in (lr * 10 ** k for k in NO_QAS_DECADES):
        stage(f"the same scheme without QAS on the host build, lr {rate:g}")
        no_qas.append({"lr": rate, **train(g, no_qas_plan, xs, ys, "host", epochs, rate, test, 0).as_dict()})
    return TransferReport(
        board, baselines, {**plan.as_dict(), "search": result.as_dict(), "budget": budget}, regenerated,
        board_run.as_dict(), [r.as_dict() for r in host_runs], compare_runs(board_run, host_runs[0]) if host_runs else {},
        no_qas,
        full_backprop_plan(g).train_peak_sram_bytes, make_plan(g, "tinymem").peak_sram_bytes, list(range(order_seeds)))


# ---------------------------------------------------------------------------------------------
# printing


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def print_report(rep: TransferReport, console) -> None:
    from rich.table import Table

    from ..cli_train import memory_line

    acc, ft = rep.baselines["accuracy"], rep.baselines["finetune"]
    board, hosts = rep.board_run, rep.host_runs
    epochs = Table(title=f"sparse update on {rep.board}: digits 5-9, {ft['train_samples']} samples, "
                         f"lr {board['epochs'][0]['lr']:g}", caption="running accuracy: each step's prediction, "
                                                                      "made before its update")
    for name in ("epoch", "mean loss", "running accuracy"):
        epochs.add_column(name, justify="right")
    for e in board["epochs"]:
        epochs.add_row(str(e["epoch"]), f"{e['mean_loss']:.4f}", _pct(e["accuracy"]))
    console.print(epochs)

    spread = " / ".join(_pct(h["eval_accuracy"]) for h in hosts)
    t = Table(title=f"accuracy on the {ft['test_samples']} held-out digits 5-9 ({ft['epochs']} epochs, "
                    f"batch 1, order seed 0 unless said)")
    t.add_column("model")
    t.add_column("accuracy", justify="right")
    t.add_row("before fine-tuning (int8; the head never saw 5-9)", _pct(acc["before_int8"]))
    t.add_row(f"[bold]sparse update on {rep.board}[/bold] (int8 forward, float32 backward)",
              f"[bold]{_pct(board['eval_accuracy'])}[/bold]")
    if hosts:
        t.add_row(f"  same, host build, order seeds {', '.join(map(str, rep.order_seeds))}", spread)
    t.add_row("  same scheme without QAS, host build, lr " + " / ".join(f"{r['lr']:g}" for r in rep.no_qas_runs),
              " / ".join(_pct(r["eval_accuracy"]) for r in rep.no_qas_runs))
    t.add_row(f"full float fine-tuning, host (Keras SGD, lr {ft['lr']:g})", _pct(acc["full_float_finetune"]))
    t.add_row("  same, order seeds " + ", ".join(map(str, ft.get("order_seeds", [0]))),
              " / ".join(_pct(v) for v in acc.get("full_float_finetune_by_order_seed", [])))
    t.add_row("last layer only, float (Keras)", _pct(acc["last_layer_float_finetune"]))
    console.print(t)
    gap = board["eval_accuracy"] - acc["full_float_finetune"]
    console.print(f"sparse update on {rep.board} - full float fine-tuning: {100 * gap:+.1f} points "
                  f"({'within' if gap >= -0.01 else 'not within'} 1 point)")

    plan = rep.plan
    bundled_note = {True: f"; reproduces the bundled {NAME}.plan.json", None: "",
                    False: f"; [red]differs from the bundled {NAME}.plan.json[/red]"}[rep.regenerated]
    console.print(f"scheme ({plan['search']['method']} search under {plan['budget']}{bundled_note}): "
                  f"biases of ops {plan['scheme']['bias_ops']}, weights "
                  + ", ".join(f"op {i} at {r:g}" for i, r in plan["scheme"]["weight_ratios"].items()))
    console.print(memory_line(board["memory"]))
    console.print(f"full back-propagation would need {rep.full_backprop_sram_bytes:,} B "
                  f"({rep.full_backprop_sram_bytes / plan['train_peak_sram_bytes']:.1f}x this plan); "
                  f"inference alone {rep.inference_peak_sram_bytes:,} B")
    timing = board["timing"]
    if timing.get("unit"):
        unit = timing["unit"]
        console.print(f"{timing[f'train_step_{unit}']:,} {unit} per training step, "
                      f"{timing[f'eval_step_{unit}']:,} per evaluation (median); {timing['wall_seconds']} s "
                      f"on {rep.board} for {board['train_steps'] + board['eval_samples']:,} samples")
    c = rep.board_vs_host
    if c:
        console.print(f"board vs host build, same order: identical int8 logits and predictions for "
                      f"{c['identical_steps']:,} of {c['steps']:,} training steps (losses within "
                      f"{c['max_loss_rel_diff_while_identical']:.1e} relative: the C libraries' expf/logf)"
                      + ("" if c["identical_steps"] == c["steps"] else
                         "; then one side rounds a master weight the other way and the runs drift apart")
                      + f"; evaluation predictions agree on {c['eval_prediction_agreement']:.1%}")


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from ..cli_lsm import _progress

    ap = argparse.ArgumentParser(prog="python -m tinymem.train.transfer", description=__doc__.splitlines()[0])
    ap.add_argument("--board", default=BOARD, help="a board id (default %(default)s) or host")
    ap.add_argument("--sram", default=BUDGET, help="SRAM budget of the training step (default %(default)s)")
    ap.add_argument("--epochs", type=int, help="default: the float baselines' (models/transfer_digits.json)")
    ap.add_argument("--lr", type=float, help="default: the bundled plan's")
    ap.add_argument("--order-seeds", type=int, default=3, help="host-build runs in other orders (default 3)")
    ap.add_argument("--measure-gains", action="store_true",
                    help="measure the contribution table again instead of reading the bundled one (slow)")
    ap.add_argument("--keep", help="keep the board project in this directory")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    console, err = Console(), Console(stderr=True)
    try:
        with _progress("on-device transfer learning", args.json) as progress:
            rep = run_transfer(args.board, args.sram, args.epochs, args.lr, args.order_seeds, args.measure_gains,
                               progress, getattr(progress, "describe", None), args.keep)
    except TinymemError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 1
    if args.json:
        print(json.dumps(rep.as_dict(), indent=2))
    else:
        print_report(rep, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
