"""The training firmware on the host: build it, drive it, read its state (docs/training.md).

`build_host_training` compiles the bundle of tinymem/train/codegen.py with the stock host driver
of `tinymem sim`, or with the probe driver that also dumps every SRAM parameter array after each
sample, which the tests compare with the numpy reference.
"""
from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TinymemError
from ..model.boundary import sample_shape
from ..model.graph import Graph
from ..sim.host import SANITIZE_FLAGS, WARN_FLAGS, host_cc, run_binary
from .codegen import CONTROL_BYTES, MODES, STATUS_BYTES, _render
from .forward import layer_params, wrap32
from .layers import LayerSpec, channel_rows, train_graph


def control(mode: int | str, label: int = 0, lr: float = 0.0) -> np.ndarray:
    """Input 1 of the training firmware: [mode, label, 0, 0, lr float32 LE] (lr <= 0: the scheme's)."""
    if isinstance(mode, str) and mode not in MODES:
        raise TinymemError(f"unknown training mode '{mode}'; choose one of {', '.join(MODES)}")
    code = MODES[mode] if isinstance(mode, str) else int(mode)
    if not (0 <= code < 256 and 0 <= int(label) < 256):
        raise TinymemError(f"mode {code} and label {label} must each fit a byte")
    return np.frombuffer(bytes([code, int(label), 0, 0]) + np.float32(lr).astype("<f4").tobytes(), np.int8).copy()


@dataclass
class StepOutput:
    """Per sample: the int8 logits, the loss, predicted class and status byte (0: ok)."""

    logits: np.ndarray
    loss: np.ndarray
    pred: np.ndarray
    status: np.ndarray
    params: list | None = None  # probe builds: per sample, op -> {"weights", "folded", "w_master", "b_master"}


def parse_status(status: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Output 1 bytes [N, 8] -> (loss float32 [N], predicted class [N], status byte [N])."""
    raw = np.ascontiguousarray(status, np.int8).view(np.uint8).reshape(-1, STATUS_BYTES)
    return raw[:, :4].copy().view("<f4").reshape(-1).astype(np.float32), raw[:, 4].astype(int), raw[:, 5].astype(int)


def probe_state(g: Graph, layers: dict[int, LayerSpec], dump: dict) -> dict:
    """A probe build's SRAM dump (op -> {"weights", "folded", "w_master", "b_master"}) as
    Trainer.state() has it: model layouts, bias = folded + input_zp * sum(weights), wrapped."""
    out = {}
    for i, spec in layers.items():
        d = dump[i]
        w0, b0 = layer_params(g, spec.op)
        weights = d["weights"].view(np.int8)[:w0.size].reshape(w0.shape) if "weights" in d else w0
        sums = channel_rows(spec.op.kind, weights).astype(np.int64).sum(axis=1)
        taps = w0.size // spec.channels
        out[i] = {"weights": weights.copy(), "folded_bias": d["folded"].astype(np.int32),
                  "bias": wrap32(d["folded"].astype(np.int64) + spec.in_zp * sums).astype(np.int32),
                  "w_master": d["w_master"].reshape(spec.n_w, taps) if "w_master" in d else np.zeros((0, taps), np.float32),
                  "b_master": d["b_master"] if "b_master" in d else b0.astype(np.float32)}
    return out


@dataclass
class TrainHostModel:
    graph: Graph
    plan: object
    exe: Path
    workdir: Path
    probe: list | None = None  # the SRAM arrays a probe build dumps after each sample
    last_params: list | None = None

    def run(self, inputs: list[np.ndarray], repeat: int = 0, timeout: float = 600) -> list[np.ndarray]:
        """Like HostModel.run: inputs [samples [N, *input shape], controls [N, 8]] -> outputs
        [logits [N, *logits shape], status [N, 8]] (int8). A probe build also sets last_params."""
        g = self.graph
        x = g.t(g.inputs[0])
        if len(inputs) != 2 or len(inputs[0]) != len(inputs[1]):
            raise TinymemError("the training firmware takes [samples [N, ...], controls [N, 8]] with the same N")
        xs, cs = np.asarray(inputs[0]), np.asarray(inputs[1])
        if xs.dtype != np.int8 or xs[0].size != x.size or cs.size != len(cs) * CONTROL_BYTES:
            raise TinymemError(f"samples must be int8 [N, {', '.join(map(str, sample_shape(x.shape)))}] and controls "
                               f"[N, {CONTROL_BYTES}] bytes; got {xs.dtype} {list(xs.shape)} and {list(cs.shape)}")
        xs, cs = xs.reshape(len(xs), -1), cs.astype(np.int8).reshape(len(xs), CONTROL_BYTES)
        payload = b"".join(x.tobytes() + c.tobytes() for x, c in zip(xs, cs))
        proc = run_binary(self.exe, payload, "the host training build", repeat, timeout)
        logits = g.t(self.plan.path.logits.outputs[0])
        per = logits.nbytes + STATUS_BYTES
        dumps = [(a, np.dtype(a["dtype"]).itemsize * a["count"]) for a in (self.probe or [])]
        per += sum(n for _, n in dumps)
        raw = np.frombuffer(proc.stdout, np.uint8)
        if raw.size != len(xs) * per:
            raise TinymemError(f"the host training build wrote {raw.size} bytes, expected {len(xs) * per}")
        rows = raw.reshape(len(xs), per)
        self.last_params = None
        if self.probe is not None:
            self.last_params = []
            for row in rows:
                at, params = logits.nbytes + STATUS_BYTES, {}
                for a, n in dumps:
                    params.setdefault(a["op"], {})[a["key"]] = row[at:at + n].copy().view(a["dtype"])
                    at += n
                self.last_params.append(params)
        return [rows[:, :logits.nbytes].view(np.int8).reshape((len(xs),) + sample_shape(logits.shape)).copy(),
                rows[:, logits.nbytes:logits.nbytes + STATUS_BYTES].view(np.int8).copy()]

    def states(self) -> list[dict]:
        """A probe build's training state after each sample of the last run, as Trainer.state()."""
        if self.last_params is None:
            raise TinymemError("no parameter dumps: build with probe=True and run first")
        layers = train_graph(self.graph, self.plan.scheme).layers
        return [probe_state(self.graph, layers, p) for p in self.last_params]

    def steps(self, xs: np.ndarray, labels, mode: int | str = "train", lr: float = 0.0) -> StepOutput:
        """Run samples in order, one training firmware invoke each, with the same mode and lr."""
        labels = np.broadcast_to(np.asarray(labels, int), (len(xs),))
        ctl = np.stack([control(mode, int(y), lr) for y in labels])
        logits, status = self.run([xs, ctl])
        loss, pred, flags = parse_status(status)
        return StepOutput(logits, loss, pred, flags, self.last_params)


def build_host_training(g: Graph, train_plan, workdir: str | Path | None = None, sanitize: bool = False,
                        probe: bool = False) -> TrainHostModel:
    """Render the training firmware with the host driver (or, with `probe`, the test driver that
    dumps SRAM parameters) and compile it with the host compiler, warnings as errors."""

    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="tinymem-train-"))
    files, ctx = _render(g, train_plan, work, host_main=not probe, probe=probe)
    exe = work / ("train_asan" if sanitize else "train")
    flags = WARN_FLAGS + (SANITIZE_FLAGS if sanitize else ["-O2"]) + (["-DTINYMEM_TRAIN_PROBE=1"] if probe else [])
    cmd = [host_cc(), *flags, "-I", str(work), *sorted(str(f) for f in files if f.suffix == ".c"), "-o", str(exe), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["no output"]
        first = next((ln for ln in lines if "error" in ln), lines[-1])
        raise TinymemError(f"compiling the generated training C failed: {first.strip()}")
    return TrainHostModel(g, train_plan, exe, work, ctx["probe"] if probe else None)


__all__ = ["StepOutput", "TrainHostModel", "build_host_training", "control", "parse_status", "probe_state"]
