"""`tinymem train-plan`: choose a sparse-update training scheme that fits the SRAM budget and plan its
memory (docs/training.md). Registered on the `cli` group of tinymem/cli.py. Thin: parse, call
tinymem.train, print."""
from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from .cli import _load, _print_json, cli, console, err_console
from .errors import TinymemError


def _gains(g, data: str | None, eval_data: str | None, gains_path: str | None, epochs: int, max_samples: int | None,
           max_weight_ops: int, lr: float, seed: int, quiet: bool):
    """(the contribution table, whether it was measured now): read from --gains when that file
    exists, else measured on --data (and cached to --gains when given)."""
    from .train.contrib import load_dataset, load_gains, measure_gains, save_gains, split_holdout, subsample

    if gains_path and Path(gains_path).exists():
        table = load_gains(gains_path)
        table.check(g)
        return table, False
    if data is None:
        if gains_path:
            raise TinymemError(f"{gains_path}: no such file; give --data to measure the gains and cache them there")
        raise click.UsageError("give --data (to measure the contribution of each update), --gains or --scheme")
    x, y = load_dataset(data, g)
    if eval_data is not None:
        train, val = (x, y), load_dataset(eval_data, g)
    else:
        train, val = split_holdout(x, y, seed)
    train, val = subsample(*train, max_samples, seed), subsample(*val, max_samples, seed + 1)
    table = measure_gains(g, train, val, epochs=epochs, max_weight_ops=max_weight_ops, lr=lr, seed=seed,
                          progress=not quiet)
    if gains_path:
        save_gains(table, gains_path)
    return table, True


def _report(name: str, g, plan, full, budget: int | None, table, result, planner: str) -> dict:
    from .plan import make_plan
    from .train.memory import plan_training

    ours, full_bytes = plan.train_peak_sram_bytes, full.train_peak_sram_bytes
    d = {**plan.as_dict(), "model": name,
         "budget_bytes": budget,
         "full_backprop_sram_bytes": full_bytes,
         "full_over_ours": round(full_bytes / ours, 2),
         "no_reorder_sram_bytes": (plan_training(g, plan.scheme, reorder=False, planner=planner).train_peak_sram_bytes
                                   if plan.reorder else ours),
         "inference_peak_sram_bytes": make_plan(g, planner).peak_sram_bytes}
    if result is not None:
        d["gain"] = result.gain
        d["search"] = result.as_dict()
    if table is not None:
        d["gains"] = table.as_dict()
    return d


def _scheme_lines(g, scheme) -> list[str]:
    from .train.scheme import out_channels, updated_channels

    lines = []
    if scheme.bias_ops:
        n = len(scheme.bias_ops)
        lines.append(f"biases of {n} layer{'s' * (n > 1)} (op {', '.join(map(str, sorted(scheme.bias_ops)))})")
    for i, r in sorted(scheme.weight_ratios.items()):
        op = g.ops[i]
        lines.append(f"weights of op {i} ({op.kind}) at {r:g}: {updated_channels(g, op, r)} of "
                     f"{out_channels(g, op)} output channels")
    return lines


def _layers_table(plan) -> Table:
    t = Table(title="training memory per layer", show_footer=True,
              caption="bytes: arena live in its forward and backward step, output kept for backward, backward "
                      "scratch, static parameters; totals: arena, static")
    cols = (("#", ""), ("op", "total"), ("fwd", ""), ("bwd", f"{plan.arena_bytes:,}"),
            ("saved", ""), ("scratch", ""), ("params", f"{plan.static_bytes:,}"), ("update", ""))
    for name, footer in cols:
        t.add_column(name, footer=footer, justify="left" if name in ("op", "update") else "right",
                     no_wrap=name in ("op", "update"))
    for row in plan.layers:
        update = "+".join(filter(None, ["b" if row["bias_updated"] else "",
                                        f"w{row['weight_ratio']:g}" if row["weight_ratio"] else ""]))
        bwd = row["backward_live_bytes"]
        t.add_row(str(row["index"]), row["op"], f"{row['forward_live_bytes']:,}", "" if bwd is None else f"{bwd:,}",
                  f"{row['saved_bytes']:,}" if row["saved_bytes"] else "",
                  f"{row['backward_scratch_bytes']:,}" if row["backward_scratch_bytes"] else "",
                  f"{row['param_bytes']:,}" if row["param_bytes"] else "", update)
    return t


def _gains_tables(table, scheme) -> list[Table]:
    chosen_k = len(scheme.bias_ops)
    bias = Table(title="gain: last k biases", caption=table.source)
    bias.add_column("k", justify="right")
    bias.add_column("layers")
    bias.add_column("gain", justify="right")
    for k, gain in sorted(table.bias.items()):
        mark = "[bold]" if k == chosen_k else ""
        ops = table.bias_ops[:k]
        bias.add_row(f"{mark}{k}", "-" if not ops else f"op {ops[0]}" if k == 1 else f"op {min(ops)} to {max(ops)}",
                     f"{mark}{gain:+.4f}")
    ratios = sorted({r for rs in table.weights.values() for r in rs})
    weights = Table(title="gain: one layer's weights per ratio", caption="bold: chosen")
    weights.add_column("op", justify="right")
    for r in ratios:
        weights.add_column(f"{r:g}", justify="right")
    for i, rs in sorted(table.weights.items()):
        pick = scheme.weight_ratios.get(i)
        weights.add_row(str(i), *(("" if r not in rs else (f"[bold]{rs[r]:+.4f}" if r == pick else f"{rs[r]:+.4f}"))
                                  for r in ratios))
    return [bias, weights]


@cli.command(name="train-plan")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", type=click.Path(dir_okay=False), help="Training set .npz: x int8 [N, *input_shape[1:]], y labels.")
@click.option("--eval", "eval_data", type=click.Path(dir_okay=False),
              help="Evaluation set .npz (default: a quarter of --data held out).")
@click.option("--sram", help="SRAM budget of the training step, e.g. 256KiB.")
@click.option("--epochs", type=int, default=1, show_default=True, help="Fine-tuning epochs per candidate.")
@click.option("--max-samples", type=int, help="Use at most this many training (and evaluation) samples.")
@click.option("--max-weight-ops", type=int, default=8, show_default=True,
              help="Weight tensors of the last this many updatable layers are candidates.")
@click.option("--lr", type=float, default=0.05, show_default=True, help="SGD learning rate.")
@click.option("--no-reorder", is_flag=True, help="Plan without operator reordering (whole weight gradients kept).")
@click.option("--planner", type=click.Choice(["tinymem", "greedy"]), default="tinymem", show_default=True)
@click.option("--scheme", "scheme_path", type=click.Path(dir_okay=False),
              help="Plan this scheme (JSON; a train-plan output works) instead of searching one.")
@click.option("--gains", "gains_path", type=click.Path(dir_okay=False),
              help="Contribution table JSON: reused if it exists, else measured on --data and written there.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write the per-step memory plot (PNG).")
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="Write the plan JSON (what --json prints).")
def train_plan(model: str, data: str | None, eval_data: str | None, sram: str | None, epochs: int,
               max_samples: int | None, max_weight_ops: int, lr: float, no_reorder: bool, planner: str,
               scheme_path: str | None, gains_path: str | None, seed: int, as_json: bool, plot: str | None,
               out: str | None) -> None:
    """Choose which biases and weights to train on the device within --sram, and plan the memory of
    the training step: train peak SRAM vs full back-propagation, per layer."""
    from .plan.patch_search import parse_size
    from .train.memory import full_backprop_plan, plan_training
    from .train.scheme import load_scheme
    from .train.search import search_scheme

    if scheme_path and (gains_path or data):
        raise click.UsageError("--scheme plans a given scheme: it takes no --data or --gains")
    if max_samples is not None and max_samples < 1:
        raise click.UsageError(f"--max-samples must be >= 1, got {max_samples}")
    if max_weight_ops < 0:
        raise click.UsageError(f"--max-weight-ops must be >= 0, got {max_weight_ops}")
    budget = parse_size(sram) if sram is not None else None
    g = _load(model)
    reorder = not no_reorder
    table = result = None
    measured = False
    if scheme_path:
        plan = plan_training(g, load_scheme(scheme_path), reorder, planner)
        if budget is not None and plan.train_peak_sram_bytes > budget:
            raise TinymemError(f"the scheme of {scheme_path} needs {plan.train_peak_sram_bytes:,} B of SRAM, "
                               f"more than --sram {budget:,} B")
    else:
        if budget is None:
            raise click.UsageError("--sram is needed to choose a scheme (or plan a given one with --scheme)")
        table, measured = _gains(g, data, eval_data, gains_path, epochs, max_samples, max_weight_ops, lr, seed, as_json)
        with err_console.status("searching the scheme"):
            result = search_scheme(g, table, budget, max_weight_ops, reorder, planner, seed, lr=lr)
        plan = result.plan
    full = full_backprop_plan(g, planner)
    report = _report(Path(model).stem, g, plan, full, budget, table, result, planner)
    if out:
        try:
            Path(out).write_text(json.dumps(report, indent=2) + "\n")
        except OSError as exc:
            raise TinymemError(f"cannot write {out}: {exc.strerror}") from None
    if plot:
        from .train.plot import plot_training_memory

        plot_training_memory(plan, plot, full=full, budget=budget, name=Path(model).stem)
    if as_json:
        _print_json(report)
        return
    if table is not None:
        for t in _gains_tables(table, plan.scheme):
            console.print(t)
    console.print(_layers_table(plan))
    console.print("scheme: " + "; ".join(_scheme_lines(g, plan.scheme)))
    ours = plan.train_peak_sram_bytes
    console.print(f"train peak SRAM {ours:,} B (arena {plan.arena_bytes:,} B + static parameters "
                  f"{plan.static_bytes:,} B){f' of {budget:,} B' if budget else ''}; without operator reordering "
                  f"{report['no_reorder_sram_bytes']:,} B; inference alone {report['inference_peak_sram_bytes']:,} B")
    console.print(f"full back-propagation {report['full_backprop_sram_bytes']:,} B = {report['full_over_ours']:.1f}x ours")
    if result is not None:
        console.print(f"gain {result.gain:+.4f} ({table.source}); {result.method} search over {result.space:,} schemes, "
                      f"{'proven optimal' if result.exact else 'best found'} in {result.seconds:.2f} s")
    for path, what in ((out, "plan"), (plot, "plot"), (gains_path if measured else None, "contribution table")):
        if path:
            console.print(f"{what} written to {path}")



# ---------------------------------------------------------------------------------------------
# `tinymem train`: run the training firmware on the host or a board (tinymem/train/run.py)


def memory_line(mem: dict) -> str:
    plan = (f"plan: train peak SRAM {mem['train_peak_sram_bytes']:,} B (arena {mem['arena_bytes']:,} B + "
            f"static parameters {mem['static_bytes']:,} B + I/O {mem['io_bytes']:,} B)")
    if "peak_sram_measured_bytes" not in mem:
        return plan + "; measured RAM: run on a board (--board) to measure it"
    verdict = "within" if mem["within_plan_bound"] else "[red]outside[/red]"
    return (plan + f"\nmeasured peak SRAM {mem['peak_sram_measured_bytes']:,} B = {mem['ram_static_bytes']:,} B "
            f".data+.bss (linked ELF) + {mem['stack_high_water_bytes']:,} B stack high water (painted); "
            f"{verdict} the plan's bound {mem['train_peak_sram_bytes'] + mem['runtime_budget_bytes']:,} B "
            f"(plan + runtime and minimum stack); board RAM limit {mem['ram_limit_bytes']:,} B")


def epochs_table(result, title: str) -> Table:
    t = Table(title=title, caption="running accuracy: each step's prediction, made before its update")
    for name in ("epoch", "samples", "mean loss", "running accuracy"):
        t.add_column(name, justify="right")
    for e in result.epochs:
        t.add_row(str(e.epoch), f"{e.samples:,}", f"{e.mean_loss:.4f}", f"{e.accuracy:.1%}")
    return t


@cli.command(name="train")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--plan", "plan_path", required=True, type=click.Path(dir_okay=False),
              help="Training plan JSON (`tinymem train-plan ... -o plan.json`): which layers are updated.")
@click.option("--board", default="host", show_default=True,
              help="host (the training C compiled for this machine) or a board id (see `tinymem boards`).")
@click.option("--data", required=True, type=click.Path(dir_okay=False),
              help="Training set .npz: x int8 [N, *input_shape[1:]], y labels.")
@click.option("--eval", "eval_data", type=click.Path(dir_okay=False),
              help="Evaluation set .npz, run on the same board after training.")
@click.option("--epochs", type=int, default=5, show_default=True)
@click.option("--lr", type=float, help="SGD learning rate (default: the plan's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the per-epoch shuffles.")
@click.option("--keep", "project_dir", type=click.Path(file_okay=False), help="Keep the generated project here.")
@click.option("--port", help="Serial port of a real board's UART.")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait on the board.")
@click.option("--retries", type=int, default=2, show_default=True,
              help="Redo an evaluation sample after a link fault this many times (training steps are never redone).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def train_cmd(model: str, plan_path: str, board: str, data: str, eval_data: str | None, epochs: int, lr: float | None,
              seed: int, project_dir: str | None, port: str | None, timeout: float, retries: int, as_json: bool) -> None:
    """Fine-tune MODEL on the device: stream --data through the training firmware for --epochs, then
    evaluate --eval on the same firmware; per-epoch loss and accuracy, and the RAM it took."""
    from .cli_lsm import _progress
    from .train.contrib import load_dataset
    from .train.run import load_train_plan, train

    if epochs < 1:
        raise click.UsageError(f"--epochs must be >= 1, got {epochs}")
    if retries < 0:
        raise click.UsageError(f"--retries must be >= 0, got {retries}")
    g = _load(model)
    plan = load_train_plan(plan_path, g)
    xs, ys = load_dataset(data, g)
    evaluation = load_dataset(eval_data, g) if eval_data else None
    with _progress(f"training on {board}", as_json) as progress:
        result = train(g, plan, xs, ys, board, epochs, lr, evaluation, seed, progress,
                       getattr(progress, "describe", None), project_dir, port, timeout, retries)
    if as_json:
        _print_json({"model": Path(model).stem, "plan": plan_path, "scheme": plan.scheme.as_dict(), "seed": seed,
                     **result.as_dict()})
        return
    console.print(epochs_table(result, f"training {Path(model).stem} on {board}, lr {result.epochs[0].lr:g}"))
    if result.eval_accuracy is not None:
        console.print(f"accuracy on {eval_data} after training: {result.eval_accuracy:.1%} "
                      f"({len(result.eval_preds):,} samples, on {board})")
    console.print(memory_line(result.memory))
    timing = result.timing
    unit = timing.get("unit")
    if unit:
        per_eval = timing[f"eval_step_{unit}"]
        console.print(f"{timing[f'train_step_{unit}']:,} {unit} per training step"
                      + (f", {per_eval:,} per evaluation" if per_eval is not None else "")
                      + f" (median; {timing['clock_note'].split(';')[0]})")
