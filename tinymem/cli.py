"""The `tinymem` command line: parse arguments, call the stages, print. No computing here."""
from __future__ import annotations

import functools
import json
import sys

import click
import numpy as np
from rich.console import Console

from .errors import TinymemError

console = Console()
err_console = Console(stderr=True)


def _load(model: str):
    from .model import load_tflite

    return load_tflite(model)


def _plan(g, planner: str):
    from .plan import make_plan

    return make_plan(g, planner)


def _patch_choice(g, planner: str, patch: str, sram: str | None, max_overhead: float, stream_input: bool = False):
    """The plan for --patch auto|off|RxC@K (and --sram / --max-overhead / --stream-input): a
    PatchChoice, or None when none of them is given (plain layer by layer)."""
    from .plan.patch_search import parse_patch, parse_size, search

    if patch == "off" and not sram and not stream_input:
        return None
    if not 0 <= max_overhead:
        raise TinymemError(f"--max-overhead must be >= 0, got {max_overhead}")
    return search(g, parse_patch(patch), sram=parse_size(sram) if sram is not None else None,
                  max_overhead=max_overhead, planner=planner, stream=True if stream_input else None)


def _patch_options(f):
    """--patch, --sram, --max-overhead and --stream-input, shared by plan, sim and run."""
    f = click.option("--stream-input", is_flag=True,
                     help="With --patch: never hold the input whole; each patch fetches its window through "
                          "tinymem_read_input() (--patch auto with --sram streams only when nothing else fits).")(f)
    f = click.option("--max-overhead", type=float, default=0.15, show_default=True,
                     help="--patch auto without --sram: the most extra MACs (fraction) the schedule may cost.")(f)
    f = click.option("--sram", help="SRAM budget, e.g. 64KiB or 65536: --patch auto picks the fewest MACs that fit.")(f)
    f = click.option("--patch", default="off", show_default=True,
                     help="Patch-based inference: auto (search split point and grid), off (layer by layer), "
                          "or RxC@K (an R x C grid over the output of op K).")(f)
    return f


def _kernels_option(f):
    """--kernels: the kernel set to plan and generate for, the command running under it
    (tinymem/ops/isa.py). auto: the board's (the DSP kernels on Cortex-M4/M7), portable without one."""
    @functools.wraps(f)
    def under_isa(*args, kernels: str, **kwargs):
        from .ops.isa import PORTABLE, core_isa, kernel_isa

        if kernels == "auto":
            board = kwargs.get("board_name") or kwargs.get("board")
            if board:
                from .build.boards import load_board

                kernels = core_isa(load_board(board).core)
            else:
                kernels = PORTABLE
        with kernel_isa(kernels):
            return f(*args, **kwargs)

    return click.option("--kernels", type=click.Choice(["auto", "portable", "armv7em"]), default="auto",
                        show_default=True, help="Kernel set: portable C99, or the Armv7E-M DSP kernels (their C "
                        "fallbacks off Arm); auto = the board's, portable without --board.")(under_isa)


def _patch_line(choice) -> str:
    d = choice.as_dict()
    if choice.schedule is None:
        return (f"patch: layer by layer ({d['peak_sram_bytes']:,} B) is best here; searched "
                f"{d['schedules_considered']} schedules in {d['search_seconds']:.2f} s")
    return (f"patch {d['label']}{' (input streamed)' if d['input'] == 'streamed' else ''}: peak SRAM {d['peak_sram_bytes']:,} B vs {d['layerwise_peak_sram_bytes']:,} B layer by layer "
            f"({d['layerwise_peak_sram_bytes'] / d['peak_sram_bytes']:.2f}x less), {d['extra_macs_ratio']:+.1%} MACs; "
            f"searched {d['schedules_considered']} schedules ({d['schedules_planned']} planned) in {d['search_seconds']:.2f} s")


def _print_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tinymem")
def cli() -> None:
    """tinymem: run int8 neural networks on microcontrollers with 256 KB of SRAM or less."""


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--tensors", is_flag=True, help="Also list every tensor with its quantization.")
def inspect(model: str, as_json: bool, tensors: bool) -> None:
    """Ops, tensors, shapes, quantization, MACs and weight bytes of MODEL."""
    from .report.inspect import model_summary, ops_table, tensors_table

    g = _load(model)
    summary = model_summary(g)
    if as_json:
        _print_json(summary)
        return
    console.print(ops_table(g, summary))
    if tensors:
        console.print(tensors_table(g))
    console.print(f"inputs {summary['inputs']}  outputs {summary['outputs']}  "
                  f"{'all ops supported' if summary['supported'] else '[red]some ops are not supported[/red]'}")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a per-layer memory plot (PNG).")
@click.option("--planner", type=click.Choice(["tinymem", "greedy"]), default="tinymem", show_default=True,
              help="greedy = TFLite Micro's greedy-by-size planner (the baseline).")
@_patch_options
@_kernels_option
def plan(model: str, as_json: bool, plot: str | None, planner: str, patch: str, sram: str | None,
         max_overhead: float, stream_input: bool) -> None:
    """Static memory plan of MODEL: arena offsets, peak SRAM, flash, MACs, per-layer live bytes."""
    g = _load(model)
    choice = _patch_choice(g, planner, patch, sram, max_overhead, stream_input)
    p = choice.plan if choice else _plan(g, planner)
    baseline = _plan(g, "greedy") if planner != "greedy" else None
    if plot:
        from .report.plots import plot_patch, plot_plan

        if choice is not None and choice.schedule is not None:
            plot_patch(choice, plot)
        else:
            plot_plan(p, plot, baseline=baseline)
    if as_json:
        d = p.as_dict()
        if baseline is not None:
            d["baseline"] = {"planner": "greedy", "peak_sram_bytes": baseline.peak_sram_bytes,
                             "arena_bytes": baseline.arena_bytes}
        if choice is not None:
            d["patch"] = choice.as_dict()
            d["pareto"] = [c.as_dict(choice.layerwise.macs) for c in choice.pareto]
        _print_json(d)
        return
    from .report.tables import plan_table

    console.print(plan_table(p))
    line = f"peak SRAM {p.peak_sram_bytes:,} B (arena {p.arena_bytes:,} B), flash {p.flash_bytes:,} B, {p.macs:,} MACs"
    if baseline is not None:
        line += f"; greedy-by-size (TFLM's planner) {baseline.arena_bytes:,} B = {p.arena_bytes / baseline.arena_bytes:.2f}x"
    console.print(line)
    if choice is not None:
        console.print(_patch_line(choice))
    if plot:
        console.print(f"plot written to {plot}")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--planner", type=click.Choice(["tinymem", "greedy"]), default="tinymem", show_default=True)
@click.option("--board", help="Write a PlatformIO project for this board (see `tinymem boards`) instead of a bare C bundle.")
@click.option("--no-profile", is_flag=True, help="With --board: build without the per-layer timing hooks.")
@click.option("--train", "train_plan", type=click.Path(dir_okay=False),
              help="Generate the training firmware of this `tinymem train-plan` JSON instead of inference.")
@_kernels_option
def codegen(model: str, out_dir: str, planner: str, board: str | None, no_profile: bool,
            train_plan: str | None) -> None:
    """Generate C for MODEL into OUT: tinymem_model.{c,h} + kernels, or a whole PlatformIO project with --board."""
    if no_profile and not board:
        raise click.UsageError("--no-profile applies to board projects: add --board")
    g = _load(model)
    if train_plan:
        from .ops.isa import PORTABLE, kernel_isa
        from .train.codegen import render_training
        from .train.run import load_train_plan, render_training_project

        with kernel_isa(PORTABLE):  # the training firmware's forward runs the portable kernels
            tp = load_train_plan(train_plan, g)
            if board:
                render_training_project(g, tp, board, out_dir)
            else:
                render_training(g, tp, out_dir)
        console.print(f"wrote the training firmware ({'a PlatformIO project for ' + board if board else 'C'}) to "
                      f"{out_dir}: train peak SRAM {tp.train_peak_sram_bytes:,} B (arena {tp.arena_bytes:,} B + "
                      f"static {tp.static_bytes + tp.io_bytes:,} B)")
        return
    p = _plan(g, planner)
    if board:
        from .build.platformio import render_project

        render_project(g, p, board, out_dir, profile=not no_profile)
        console.print(f"wrote a PlatformIO project for {board} to {out_dir} (arena {p.arena_bytes:,} B, "
                      f"flash {p.flash_bytes:,} B{', no profile hooks' if no_profile else ''}); "
                      f"build and flash it with `tinymem flash {out_dir}`")
        return
    from codegen import render_model

    files = render_model(g, p, out_dir)
    console.print(f"wrote {len(files)} files to {out_dir} (arena {p.arena_bytes:,} B, flash {p.flash_bytes:,} B)")


def _load_npy(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise TinymemError(f"{path}: no such file") from None
    except (ValueError, OSError, EOFError) as exc:
        raise TinymemError(f"{path}: not a readable .npy array ({exc})") from None


def _save_outputs(path: str, outputs: list[np.ndarray]) -> None:
    try:
        if len(outputs) == 1:
            np.save(path, outputs[0])
        elif path.endswith(".npz"):
            np.savez(path, **{f"output_{k}": o for k, o in enumerate(outputs)})
        else:
            raise TinymemError(f"the model has {len(outputs)} outputs: give an --output ending in .npz")
    except OSError as exc:
        raise TinymemError(f"cannot write {path}: {exc.strerror}") from None


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--input", "inputs", required=True, multiple=True, type=click.Path(dir_okay=False),
              help="int8 .npy [N, *input_shape[1:]]; repeat for each model input.")
@click.option("--output", required=True, type=click.Path(dir_okay=False), help="Where to write int8 outputs (.npy).")
@click.option("--sanitize", is_flag=True, help="Build with ASan/UBSan.")
@click.option("--keep", type=click.Path(file_okay=False), help="Keep the generated C and binary in this directory.")
@click.option("--planner", type=click.Choice(["tinymem", "greedy"]), default="tinymem", show_default=True)
@_patch_options
@_kernels_option
def sim(model: str, inputs: tuple[str, ...], output: str, sanitize: bool, keep: str | None, planner: str,
        patch: str, sram: str | None, max_overhead: float, stream_input: bool) -> None:
    """Generate C, compile it for the host, run every input sample through it."""
    from .sim import build_host

    g = _load(model)
    arrays = [_load_npy(p) for p in inputs]
    choice = _patch_choice(g, planner, patch, sram, max_overhead, stream_input)
    p = choice.plan if choice else _plan(g, planner)
    if choice is not None:
        console.print(_patch_line(choice))
    with console.status("compiling the generated C for the host"):
        host = build_host(g, p, keep, sanitize=sanitize)
    outs = host.run(arrays)
    _save_outputs(output, outs)
    console.print(f"ran {arrays[0].shape[0]} sample(s); wrote {output}")


@cli.command()
def demo() -> None:
    """The main job on a bundled model: inspect, plan (vs TFLM's planner), generate C, run on the host
    and on the emulated Cortex-M4 board (mps2_an386, 256 KB RAM limit)."""
    from .demo import run_demo

    run_demo(console)


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="tinymem", standalone_mode=False)
    except TinymemError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 1
    except click.exceptions.Abort:
        err_console.print("aborted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except MemoryError:
        err_console.print("[red]error:[/red] out of memory")
        return 1
    return 0


from . import cli_board  # noqa: E402,F401  (registers boards, flash, run on the group above)
from . import cli_alloc  # noqa: E402,F401  (registers alloc-config, alloc-replay)
from . import cli_lsm  # noqa: E402,F401  (registers the lsm group)
from . import cli_train  # noqa: E402,F401  (registers train-plan)

if __name__ == "__main__":
    # Run as `python -m tinymem.cli`, this file is `__main__`, but cli_board registers its commands on
    # the `cli` of the real module `tinymem.cli`: dispatch through that one.
    from tinymem.cli import main as _main

    sys.exit(_main())
