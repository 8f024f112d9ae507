"""Host simulation: generate C, compile it with the host compiler, stream samples through it."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TinymemError
from ..model.boundary import model_inputs, model_outputs, sample_shape
from ..model.graph import Graph
from ..plan.memory import MemoryPlan

WARN_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-Wshadow", "-Wdouble-promotion"]
SANITIZE_FLAGS = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]


def host_cc() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise TinymemError("no host C compiler found (install gcc, or set CC)")
    return cc


def run_binary(exe: Path, payload: bytes, what: str, repeat: int = 0, timeout: float = 600):
    """Run a host build of generated C (samples on stdin, outputs on stdout); a timeout or a
    non-zero exit is one line naming `what` with the end of its stderr."""
    args = [str(exe)] + ([str(repeat)] if repeat else [])
    try:
        proc = subprocess.run(args, input=payload, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TinymemError(f"{what} timed out after {timeout:.0f} s") from None
    if proc.returncode != 0:
        why = proc.stderr.decode(errors="replace").strip()[-2000:] or "no message"
        raise TinymemError(f"{what} failed (exit {proc.returncode}): {why}")
    return proc


@dataclass
class HostModel:
    graph: Graph
    plan: MemoryPlan
    exe: Path
    workdir: Path

    def run(self, inputs: list[np.ndarray] | np.ndarray, repeat: int = 0, timeout: float = 600) -> list[np.ndarray]:
        """Run N samples; inputs[i] is [N, *input_shape[1:]] (int8, or float for a float-I/O model).
        Returns outputs [N, *out_shape[1:]] (int8, or float32 for a float-I/O model)."""
        g = self.graph
        arrays, n = model_inputs(g, [inputs] if isinstance(inputs, np.ndarray) else list(inputs))
        per_sample = [np.ascontiguousarray(a).reshape(n, -1) for a in arrays]
        payload = b"".join(b"".join(a[i].tobytes() for a in per_sample) for i in range(n))
        proc = run_binary(self.exe, payload, "host simulation", repeat, timeout)
        self.last_stderr = proc.stderr.decode(errors="replace")
        outs = []
        raw = np.frombuffer(proc.stdout, dtype=np.int8)
        sizes = [g.t(t).size for t in g.outputs]
        if raw.size != n * sum(sizes):
            raise TinymemError(f"host simulation wrote {raw.size} bytes, expected {n * sum(sizes)}")
        per = raw.reshape(n, sum(sizes))
        at = 0
        for t, size in zip(g.outputs, sizes):
            outs.append(per[:, at:at + size].reshape((n,) + sample_shape(g.t(t).shape)).copy())
            at += size
        return model_outputs(g, outs)

    def us_per_invoke(self) -> float:
        for line in getattr(self, "last_stderr", "").splitlines():
            if line.startswith("us_per_invoke"):
                return float(line.split()[1])
        raise TinymemError("no timing: run with repeat > 0")


def build_host(g: Graph, plan: MemoryPlan, workdir: str | Path | None = None, sanitize: bool = False,
               opt: str = "-O2") -> HostModel:
    """Render the model and compile it for the host (warnings are errors)."""
    from codegen import render_model  # codegen depends on tinymem, not the other way round at import

    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="tinymem-sim-"))
    files = render_model(g, plan, workdir, host_main=True)
    sources = sorted(str(f) for f in files if f.suffix == ".c")
    exe = workdir / ("model_asan" if sanitize else "model")
    flags = WARN_FLAGS + (SANITIZE_FLAGS if sanitize else [opt])
    cmd = [host_cc(), *flags, "-I", str(workdir), *sources, "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise TinymemError(f"compiling the generated C failed:\n{proc.stderr[-4000:]}")
    return HostModel(g, plan, exe, workdir)
