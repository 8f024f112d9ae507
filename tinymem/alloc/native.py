"""The host replay driver: rendered from codegen/templates/alloc/replay_host.c.j2, compiled once
with the allocator, the replay engine and the newlib-nano model, and cached by a hash of all
of them (so an edit to any rebuilds it)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path

from ..errors import TinymemError
from ..sim.host import WARN_FLAGS, host_cc
from . import C_SOURCES
from . import HEADERS as ALLOC_HEADERS
from .trace import Trace

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
SOURCES = [FIRMWARE / "runtime" / n for n in C_SOURCES] + [FIRMWARE / "alloc" / "tm_replay.c",
                                                           FIRMWARE / "alloc" / "nano_model.c"]
HEADERS = [FIRMWARE / "runtime" / n for n in ALLOC_HEADERS] + [FIRMWARE / "alloc" / "tm_replay.h",
                                                               FIRMWARE / "alloc" / "nano_model.h"]
FLAGS = WARN_FLAGS + ["-O2"]


def replay_binary() -> Path:
    from codegen.render import environment

    from ..build.platformio import cache_dir

    driver = environment().get_template("alloc/replay_host.c.j2").render()
    digest = hashlib.sha256(driver.encode() + " ".join(FLAGS + [host_cc()]).encode())
    for path in SOURCES + HEADERS:
        digest.update(path.read_bytes())
    exe = cache_dir() / f"alloc-replay-{digest.hexdigest()[:16]}"
    if exe.exists():
        return exe
    exe.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tinymem-alloc-") as tmp:
        src = Path(tmp) / "replay_host.c"
        src.write_text(driver)
        out = Path(tmp) / "replay"
        cmd = [host_cc(), *FLAGS, "-I", str(FIRMWARE / "runtime"), "-I", str(FIRMWARE / "alloc"), str(src),
               *map(str, SOURCES), "-o", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise TinymemError(f"compiling the host replay driver failed: {proc.stderr.strip()[-2000:]}")
        os.replace(out, exe)  # atomic: a concurrent build either wins or finds it done
    return exe


class _TraceFile:
    """The packed trace in a temporary file, for as long as the `with` lasts."""

    def __init__(self, trace: Trace):
        self.trace = trace

    def __enter__(self) -> str:
        fd, self.path = tempfile.mkstemp(prefix="tinymem-trace-", suffix=".bin")
        with os.fdopen(fd, "wb") as f:
            f.write(self.trace.pack())
        return self.path

    def __exit__(self, *exc) -> None:
        os.unlink(self.path)


def _run(args: list[str], stdin: str | None = None, timeout: float = 600) -> str:
    try:
        proc = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TinymemError(f"the host replay took over {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise TinymemError(f"the host replay failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc.stdout


def replay(trace: Trace, allocator: str, config=None, repeat: int = 3) -> dict:
    """One allocator on the host: 'tm_alloc' (needs config), 'glibc' or 'newlib' (the model)."""
    exe = replay_binary()
    with _TraceFile(trace) as path:
        args = [str(exe), path, str(trace.n_slots), allocator]
        if allocator == "tm_alloc":
            args += [config.classes_arg(), str(config.granule), str(int(config.canaries)), str(config.heap_bytes)]
        return json.loads(_run(args + [str(repeat)]))


def search(trace: Trace, configs: list) -> list[tuple[int, int, int, int, int] | None]:
    """(peak owned, failed allocs, large-region peak, largest large block, large-region high-water
    bytes) per config, untimed; None for a config tm_alloc rejects."""
    if not configs:
        return []
    with _TraceFile(trace) as path:
        lines = "".join(f"{c.classes_arg()} {c.granule} {int(c.canaries)} {c.heap_bytes}\n" for c in configs)
        out = _run([str(replay_binary()), path, str(trace.n_slots), "search"], stdin=lines).split("\n")
    return [tuple(map(int, line.split())) if line and line != "invalid" else None for line in out[:len(configs)]]
