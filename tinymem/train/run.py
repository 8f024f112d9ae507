"""Train on a device: stream labelled samples through the training firmware, then evaluate there.

    host    the training firmware (tinymem/train/codegen.py) compiled with the host compiler
    <board> a board from boards/*.json: the same C in the tinymem board firmware; an emulated board
            boots in QEMU. The training firmware has a model's API (docs/training.md), so the board
            firmware and serial protocol of `tinymem run` serve it unchanged, as for the LSM
            (tinymem/lsm/encode.py): input 0 the sample, input 1 the control
            [mode, label, 0, 0, lr f32 LE]; output 0 the logits, output 1 [loss f32, pred u8, status u8].

One stream per run: every epoch (mode 1, a seeded permutation each: `epoch_orders`) and then the
evaluation set (mode 0), all through the same running firmware, so the evaluation sees the
parameters the training left in SRAM. The serial link checks CRC and sequence numbers on every
frame (tinymem/link/session.py). It may redo a sample after a damaged frame, which is harmless for
an evaluation but not for a training step: the damaged frame may have been an answer to an INVOKE
that already updated the parameters. So training samples are sent with no retry (a link fault
ends the run with its error), evaluation samples with the caller's retries: no step is ever
applied twice, skipped or reordered.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import TinymemError
from ..model.graph import Graph
from .codegen import render_training, training_io
from .host import control, parse_status
from .memory import TrainPlan, plan_training
from .scheme import Scheme, logits_op, read_json_object

STATUS_TEXT = {1: "unknown mode", 2: "label out of range"}


def epoch_orders(n: int, epochs: int, seed: int) -> list[np.ndarray]:
    """The sample order of each epoch: one seeded generator, a fresh permutation per epoch (the
    order examples/make_transfer.py and tinymem/train/contrib.py use, so runs compare step for step)."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(n) for _ in range(epochs)]


def load_train_plan(path: str | Path, g: Graph) -> TrainPlan:
    """The plan of a `tinymem train-plan` JSON (its scheme, reorder and planner), replanned for `g`;
    a plan whose recorded peak differs from the replanned one was made for another model."""
    d = read_json_object(path)
    scheme = Scheme.from_dict(d.get("scheme", d))
    plan = plan_training(g, scheme, bool(d.get("reorder", True)), str(d.get("planner", "tinymem")))
    recorded = d.get("train_peak_sram_bytes")
    if recorded is not None and recorded != plan.train_peak_sram_bytes:
        raise TinymemError(f"{path} says {recorded:,} B of training SRAM but its scheme needs "
                           f"{plan.train_peak_sram_bytes:,} B on {g.name}: was it made for another model? "
                           "Run `tinymem train-plan` again")
    return plan


def check_samples(g: Graph, xs, ys, what: str) -> tuple[np.ndarray, np.ndarray]:
    """int8 samples of the model's input shape and labels within its logits, as arrays."""
    xs, ys = np.asarray(xs), np.asarray(ys)
    want = tuple(g.t(g.inputs[0]).shape[1:])
    if xs.dtype != np.int8 or tuple(xs.shape[1:]) != want:
        raise TinymemError(f"{what}: samples must be int8 [N, {', '.join(map(str, want))}], got {xs.dtype} "
                           f"{list(xs.shape)}")
    if ys.ndim != 1 or len(ys) != len(xs) or not np.issubdtype(ys.dtype, np.integer):
        raise TinymemError(f"{what}: need {len(xs)} integer labels, got {ys.dtype} {list(ys.shape)}")
    if len(xs) == 0:
        raise TinymemError(f"{what}: no samples")
    classes = g.t(logits_op(g).outputs[0]).size
    if ys.min() < 0 or ys.max() >= classes:
        bad = int(ys[(ys < 0) | (ys >= classes)][0])
        raise TinymemError(f"{what}: label {bad} is out of range for {classes} classes")
    return xs, ys.astype(np.int64)


@dataclass
class Epoch:
    epoch: int
    samples: int
    mean_loss: float
    accuracy: float  # running: predictions of the forward pass of each step, before its update
    lr: float

    def as_dict(self) -> dict:
        return {"epoch": self.epoch, "samples": self.samples, "mean_loss": self.mean_loss,
                "accuracy": self.accuracy, "lr": self.lr}


@dataclass
class TrainResult:
    backend: str
    epochs: list[Epoch]
    order: list[np.ndarray]  # per epoch, the sample indices in the order they were trained on
    losses: np.ndarray  # float32 per training step, stream order
    preds: np.ndarray  # predicted class per training step (forward pass before the update)
    logits: np.ndarray  # int8 logits per training step
    eval_preds: np.ndarray | None = None
    eval_logits: np.ndarray | None = None
    eval_losses: np.ndarray | None = None
    eval_labels: np.ndarray | None = None
    memory: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)

    @property
    def eval_accuracy(self) -> float | None:
        return None if self.eval_preds is None else float(np.mean(self.eval_preds == self.eval_labels))

    def as_dict(self) -> dict:
        d = {"backend": self.backend, "epochs": [e.as_dict() for e in self.epochs],
             "train_steps": int(len(self.losses)), "eval_accuracy": self.eval_accuracy}
        if self.eval_preds is not None:
            d["eval_samples"] = int(len(self.eval_preds))
            d["eval_mean_loss"] = float(np.mean(self.eval_losses))
        return d | {"memory": self.memory, "timing": self.timing}


# ---------------------------------------------------------------------------------------------
# back ends: each takes segments and returns per segment (logits [n, classes], status [n, 8])


@dataclass
class Segment:
    name: str  # what the progress bar says while it runs
    xs: np.ndarray
    controls: np.ndarray
    training: bool  # mode 1: changes the parameters, so never redone after a link fault


def _host_stream(g: Graph, plan: TrainPlan, segments: list[Segment], workdir, progress, stage):
    from .host import build_host_training

    with tempfile.TemporaryDirectory(prefix="tinymem-train-") as tmp:
        stage("compiling the training firmware for the host")
        host = build_host_training(g, plan, workdir or tmp)
        stage(f"training and evaluating on the host ({sum(len(s.xs) for s in segments)} samples)")
        start = time.perf_counter()
        # One process for the whole stream: the parameters live in its memory, as on a board.
        logits, status = host.run([np.concatenate([s.xs for s in segments]),
                                   np.concatenate([s.controls for s in segments])])
        seconds = time.perf_counter() - start
    if progress:
        progress(len(logits), len(logits))
    cuts = np.cumsum([len(s.xs) for s in segments])[:-1]
    outs = list(zip(np.split(logits.reshape(len(logits), -1), cuts), np.split(status, cuts)))
    return outs, {"host_seconds": round(seconds, 3)}, {}


def render_training_project(g: Graph, plan: TrainPlan, board, out_dir: str | Path):
    """A PlatformIO project that serves the training firmware over the UART: the board firmware of
    tinymem/build/platformio.py around the training C. Returns the Project."""
    from ..build import platformio as pio
    from ..build.boards import load_board

    board = load_board(board) if isinstance(board, str) else board
    need = plan.train_peak_sram_bytes + pio.RUNTIME_RAM_BYTES + board.stack_bytes
    if board.sram_bytes is not None and need > board.sram_bytes:
        raise TinymemError(f"training {g.name} does not fit board '{board.id}': train peak SRAM "
                           f"{plan.train_peak_sram_bytes:,} B + runtime and minimum stack = {need:,} B > "
                           f"{board.sram_bytes:,} B")
    inputs, outputs = training_io(g, plan)
    return pio.render_app_project(board, out_dir, lambda src: render_training(g, plan, src), inputs, outputs, g.name,
                                  {"training": plan.as_dict()})


def _board_stream(g: Graph, plan: TrainPlan, board, segments: list[Segment], project_dir: Path, port, timeout,
                  retries, progress, stage):
    from ..build.platformio import RUNTIME_RAM_BYTES, build
    from ..link.run import clock_units, serve_on_board
    from ..link.session import Session

    stage(f"generating the {board.id} project in {project_dir}")
    project = render_training_project(g, plan, board, project_dir)
    stage("building with PlatformIO")
    built = build(project)
    total = sum(len(s.xs) for s in segments)

    def serve(link):
        session = Session(link, timeout=timeout)
        hello = session.hello()
        runs, done = [], 0
        for seg in segments:
            stage(seg.name)
            session.retries = 0 if seg.training else retries
            session.progress = (lambda k, _n, at=done: progress(at + k, total)) if progress else None
            runs.append(session.run([seg.xs, seg.controls]))
            done += len(seg.xs)
        return session, (session, hello, runs)

    start = time.perf_counter()
    session, hello, runs = serve_on_board(board, project, built.elf, serve, port, timeout=timeout, stage=stage,
                                          what="training firmware")
    seconds = time.perf_counter() - start
    flat = [r for seg in runs for r in seg]
    first = flat[0]
    ram_static = built.ram_static_bytes
    if (first.ram_static, first.arena_bytes) != (ram_static, plan.arena_bytes):
        raise TinymemError(f"the firmware on the board is not the one just built: it reports {first.ram_static:,} B "
                           f"static and a {first.arena_bytes:,} B arena; the build has {ram_static:,} B "
                           f"and {plan.arena_bytes:,} B")
    high = max(r.stack_high_water for r in flat)
    unit, per_tick, note = clock_units(board, hello)
    outs = [(np.stack([np.frombuffer(r.outputs[0], np.int8) for r in seg]).reshape((len(seg), -1)),
             np.stack([np.frombuffer(r.outputs[1], np.int8) for r in seg])) for seg in runs]
    budget = RUNTIME_RAM_BYTES + board.stack_bytes  # the plan counts the I/O buffers already
    measured = ram_static + high
    memory = {"ram_static_bytes": ram_static, "stack_high_water_bytes": high,
              "peak_sram_measured_bytes": measured, "runtime_budget_bytes": budget,
              "within_plan_bound": plan.train_peak_sram_bytes <= measured <= plan.train_peak_sram_bytes + budget,
              "ram_limit_bytes": board.sram_bytes, "flash_bytes": built.flash_bytes}

    def median(seg_runs) -> int | None:
        return round(statistics.median(r.ticks for r in seg_runs) * per_tick) if seg_runs else None

    train_runs = [r for seg, done in zip(segments, runs) if seg.training for r in done]
    eval_runs = [r for seg, done in zip(segments, runs) if not seg.training for r in done]
    timing = {"unit": unit, "clock_note": note, f"train_step_{unit}": median(train_runs),
              f"eval_step_{unit}": median(eval_runs), "wall_seconds": round(seconds, 1),
              "link": session.stats.as_dict() | {"rx_window": hello.window}}
    return outs, timing, memory


# ---------------------------------------------------------------------------------------------


def train(g: Graph, plan: TrainPlan, xs, ys, backend: str = "host", epochs: int = 1, lr: float | None = None,
          eval: tuple | None = None, seed: int = 0, progress=None, on_stage=None, project_dir: str | Path | None = None,
          port: str | None = None, timeout: float = 30.0, retries: int = 2) -> TrainResult:
    """`epochs` of batch-1 SGD over (xs, ys) on `backend`, then the accuracy on `eval` = (xs, ys)
    on the same backend with the trained parameters. lr None: the scheme's. progress(done, total)
    counts samples over the whole stream; on_stage(text) says what is happening."""
    stage = on_stage or (lambda _msg: None)
    xs, ys = check_samples(g, xs, ys, "training set")
    if eval is not None:
        ex, ey = check_samples(g, *eval, "evaluation set")
    if epochs < 1:
        raise TinymemError(f"epochs must be >= 1, got {epochs}")
    lr = plan.scheme.lr if lr is None else lr
    if not (np.isfinite(lr) and lr > 0):
        raise TinymemError(f"the learning rate must be a positive number, got {lr}")
    orders = epoch_orders(len(xs), epochs, seed)
    segments = [Segment(f"epoch {k + 1}/{epochs}", xs[o], np.stack([control("train", int(y), lr) for y in ys[o]]), True)
                for k, o in enumerate(orders)]
    if eval is not None:
        segments.append(Segment(f"evaluating {len(ex)} samples", ex,
                                np.stack([control("eval", int(y)) for y in ey]), False))
    memory = {"train_peak_sram_bytes": plan.train_peak_sram_bytes, "arena_bytes": plan.arena_bytes,
              "static_bytes": plan.static_bytes, "io_bytes": plan.io_bytes}
    if backend == "host":
        outs, timing, measured = _host_stream(g, plan, segments, project_dir, progress, stage)
    else:
        from ..build.boards import load_board

        board = load_board(backend)
        if not board.emulated and not port:  # before minutes of building
            raise TinymemError(f"board '{board.id}' is real hardware: give --port, the serial port of its UART")
        if project_dir is None:
            with tempfile.TemporaryDirectory(prefix=f"tinymem-train-{board.id}-") as tmp:
                outs, timing, measured = _board_stream(g, plan, board, segments, Path(tmp), port, timeout, retries,
                                                       progress, stage)
        else:
            outs, timing, measured = _board_stream(g, plan, board, segments, Path(project_dir), port, timeout,
                                                   retries, progress, stage)
    parsed = [(logits, *parse_status(status)) for logits, status in outs]
    for (_, _, _, flags), seg in zip(parsed, segments):
        if flags.any():
            k = int(np.flatnonzero(flags)[0])
            raise TinymemError(f"the training firmware reported '{STATUS_TEXT.get(int(flags[k]), flags[k])}' "
                               f"at sample {k} of {seg.name}")
    records = []
    for k, (order, (_, loss, pred, _)) in enumerate(zip(orders, parsed)):
        records.append(Epoch(k + 1, len(order), float(np.mean(loss)), float(np.mean(pred == ys[order])), float(lr)))
    train_parts = parsed[:epochs]
    result = TrainResult(backend, records, orders, np.concatenate([p[1] for p in train_parts]),
                         np.concatenate([p[2] for p in train_parts]), np.concatenate([p[0] for p in train_parts]),
                         memory=memory | measured, timing=timing)
    if eval is not None:
        logits, loss, pred, _ = parsed[-1]
        result.eval_logits, result.eval_losses, result.eval_preds, result.eval_labels = logits, loss, pred, ey
    return result


__all__ = ["Epoch", "TrainResult", "check_samples", "epoch_orders", "load_train_plan", "render_training_project",
           "train"]
