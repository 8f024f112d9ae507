"""`tinymem demo`: the main job end to end on the bundled digits CNN, on the host.

inspect -> plan (ours vs TFLite Micro's greedy planner) -> generate C -> compile -> run the held-out
digits through it -> accuracy, and bit-exactness against LiteRT BUILTIN_REF when it is installed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console

from .errors import TinymemError

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "models" / "digits_cnn.tflite"
DEMO_DIR = REPO / "build" / "demo"


def digits_test_split() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits scaled to [0, 1], the held-out split examples/make_zoo.py did not train on."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise TinymemError("the demo needs scikit-learn for its data: pip install scikit-learn") from None
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    _, x_test, _, y_test = train_test_split(x, d.target, test_size=0.25, random_state=0, stratify=d.target)
    return x_test, y_test


def quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)


def run_demo(console: Console) -> None:
    from codegen import render_model

    from .model import load_tflite
    from .plan import make_plan
    from .report.inspect import model_summary, ops_table
    from .report.plots import plot_plan
    from .report.tables import plan_table
    from .sim import build_host

    if not DEMO_MODEL.exists():
        raise TinymemError(f"bundled model {DEMO_MODEL} is missing (run `make zoo` to rebuild the zoo)")
    console.rule(f"[bold]1. inspect[/bold] {DEMO_MODEL.relative_to(REPO)}")
    g = load_tflite(DEMO_MODEL)
    console.print(ops_table(g, model_summary(g)))

    console.rule("[bold]2. plan[/bold] static arena, ours vs TFLite Micro's greedy-by-size planner")
    plan, greedy = make_plan(g, "tinymem"), make_plan(g, "greedy")
    console.print(plan_table(plan))
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    plot_plan(plan, DEMO_DIR / "memory.png", baseline=greedy)
    console.print(f"peak SRAM {plan.peak_sram_bytes:,} B vs greedy {greedy.peak_sram_bytes:,} B "
                  f"({plan.peak_sram_bytes / greedy.peak_sram_bytes:.2f}x); flash {plan.flash_bytes:,} B; "
                  f"plot: {(DEMO_DIR / 'memory.png').relative_to(REPO)}")

    console.rule("[bold]3. codegen + host build[/bold] (-O2 -Wall -Wextra -Werror)")
    files = render_model(g, plan, DEMO_DIR / "c")
    with console.status("compiling"):
        host = build_host(g, plan, DEMO_DIR / "sim")
    console.print(f"{len(files)} files in {(DEMO_DIR / 'c').relative_to(REPO)}; binary {host.exe.relative_to(REPO)}")

    console.rule("[bold]4. run[/bold] held-out sklearn digits through the generated C")
    x, y = digits_test_split()
    scale, zp = g.t(g.inputs[0]).quant.scalar()
    xq = quantize(x, scale, zp)
    out = host.run([xq], repeat=3)[0]
    accuracy = float(np.mean(out.reshape(len(y), -1).argmax(axis=1) == y))
    console.print(f"{len(y)} digits, accuracy {accuracy:.1%}, {host.us_per_invoke():.1f} us per inference on this host")
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        console.print("LiteRT not installed: skipping the bit-exactness check")
        return
    it = Interpreter(model_path=str(DEMO_MODEL), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    i_in, i_out = it.get_input_details()[0], it.get_output_details()[0]
    ref = []
    for sample in xq:
        it.set_tensor(i_in["index"], sample[None])
        it.invoke()
        ref.append(it.get_tensor(i_out["index"])[0].copy())
    same = int(np.sum(np.all(np.stack(ref).reshape(out.shape) == out, axis=tuple(range(1, out.ndim)))))
    verdict = "[green]bit-exact[/green]" if same == len(y) else f"[red]{len(y) - same} samples differ[/red]"
    console.print(f"LiteRT BUILTIN_REF vs tinymem: {verdict} on {same}/{len(y)} samples")
    if same != len(y):
        raise TinymemError("the generated C disagrees with LiteRT BUILTIN_REF")
