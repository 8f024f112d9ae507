"""TFLite Micro as the benchmark peer: its smallest working arena, its head/tail split, its outputs
and its invoke time, all through the pinned `tflite-micro` Python runtime (reference kernels).

The runtime only reports memory by printing from C++ (RecordingMicroAllocator via MicroPrintf,
which lands on stderr; allocation failures too), so we read it by swapping the process's file
descriptors for a temp file rather than sys.stdout/sys.stderr, which C code never sees.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import re
import statistics
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from tflite_micro.python.tflite_micro import runtime

from tinymem.sim.host import sample_shape

_LIBC = ctypes.CDLL(None)
_FORK = multiprocessing.get_context("fork")  # the child inherits the loaded model: no re-import
_ALLOC_LINE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")
MAX_ARENA = 64 << 20  # no zoo model comes near this; beyond it we stop doubling and give up


@contextmanager
def captured_fds(fds=(1, 2)):
    """Collect everything written to `fds` (C and Python alike) into the list the `with` yields."""
    box: list[str] = []
    _LIBC.fflush(None)
    saved = {fd: os.dup(fd) for fd in fds}
    with tempfile.TemporaryFile() as sink:
        try:
            for fd in fds:
                os.dup2(sink.fileno(), fd)
            yield box
        finally:
            _LIBC.fflush(None)
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            box.append(sink.read().decode(errors="replace"))


def _interpreter(model: bytes, arena: int, sample: list[np.ndarray] | None):
    """An interpreter that allocated and (given a sample) invoked within `arena` bytes, else None."""
    try:
        with captured_fds():  # failed allocations print; keep them out of the report
            it = runtime.Interpreter.from_bytes(model, arena_size=arena)
            if sample is not None:
                for i, x in enumerate(sample):
                    it.set_input(x[None], i)
                it.invoke()
        return it
    except RuntimeError:
        return None


def _works(model: bytes, arena: int, sample: list[np.ndarray]) -> bool:
    """Probe in a forked child: some too-small arenas make TFLM crash (SIGSEGV), not fail cleanly."""
    child = _FORK.Process(target=lambda: os._exit(0 if _interpreter(model, arena, sample) else 1))
    child.start()
    child.join()
    return child.exitcode == 0


def min_arena(model: bytes, sample: list[np.ndarray]) -> int:
    """Smallest arena_size (to the byte) with which TFLM both allocates and invokes the model."""
    hi = 4096
    while not _works(model, hi, sample):
        if hi >= MAX_ARENA:
            raise RuntimeError(f"TFLM cannot run the model even with a {MAX_ARENA} byte arena")
        hi *= 2
    lo = 0  # invariant: lo fails, hi works
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if not _works(model, mid, sample):
            lo = mid
        else:
            hi = mid
    return hi


@dataclass
class TflmResult:
    arena: int  # the smallest arena_size that works
    head: int  # non-persistent: the planned activations and scratch buffers
    tail: int  # persistent: tensor structs, op data, quantization params, allocator bookkeeping
    total: int  # head + tail as the allocator reports it
    outputs: list[np.ndarray]  # per output, [N, *shape[1:]]
    us_per_invoke: float  # median over every timed invoke


def run_tflm(model: bytes, inputs: list[np.ndarray], n_outputs: int, rounds: int = 3) -> TflmResult:
    """Measure the arena, then run every sample `rounds` times in an interpreter of exactly that size.

    inputs[i] is [N, *shape[1:]] like HostModel.run takes; outputs come back the same way."""
    arena = min_arena(model, [x[0] for x in inputs])
    it = _interpreter(model, arena, None)
    n = inputs[0].shape[0]
    outs, times = [], []
    for s in range(n):
        for i, x in enumerate(inputs):
            it.set_input(x[s][None], i)
        it.invoke()  # warm-up (and the output we compare): caches, lazy kernel init
        outs.append([np.array(it.get_output(k)) for k in range(n_outputs)])
        for _ in range(rounds):
            t0 = time.perf_counter()
            it.invoke()
            times.append(time.perf_counter() - t0)
    with captured_fds() as log:
        it.print_allocations()
    report = dict((k, int(v)) for k, v in _ALLOC_LINE.findall(log[0]))
    if set(report) != {"total", "head", "tail"}:
        raise RuntimeError(f"could not parse TFLM's allocation report:\n{log[0][:500]}")
    stacked = [np.stack([o[k].reshape(sample_shape(o[k].shape)) for o in outs]) for k in range(n_outputs)]
    return TflmResult(arena, report["head"], report["tail"], report["total"], stacked,
                      statistics.median(times) * 1e6)

