"""Encode event frames with an LSM on a chosen back end, and report what it cost.

    numpy   the reference model (reservoir.py), float or fixed point
    host    the generated C (codegen.py) compiled with the host compiler: fixed point
    <board> a board from boards/*.json: the generated C in a PlatformIO firmware; an emulated
            board boots in QEMU. Frames go over the UART, bit-packed (steps · ⌈inputs/8⌉ bytes a
            sample: 1.6 KB for the paper's 50 × 256), and the spike counts come back
            (windows · neurons bytes). The firmware is the tinymem board firmware
            (codegen/templates/board/main.c.j2, same framing, same Session on the host) with the
            LSM in place of a model: the LSM C has a model's API.

Every back end returns the same `Encoded`: counts (and mean membrane) per sample, bit-exact
between fixed numpy, host C and board, plus a profile (time per sample, RAM, flash).
"""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import TinymemError
from ..npz import read_npz, write_npz
from .codegen import build_host_lsm, context, pack_frames, render_lsm, unpack_outputs
from .reservoir import LsmConfig, run



@dataclass
class Encoded:
    counts: np.ndarray
    membrane: np.ndarray | None
    profile: dict = field(default_factory=dict)


def render_lsm_project(cfg: LsmConfig, board, out_dir: str | Path, storage: str = "flash",
                       name: str = "lsm") -> tuple:
    """A PlatformIO project that serves the LSM over the UART: the board firmware of
    tinymem/build/platformio.py with the LSM's tinymem_model.{c,h}. Returns (Project, context)."""
    from ..build import platformio as pio
    from ..build.boards import load_board

    board = load_board(board) if isinstance(board, str) else board
    ctx = context(cfg, storage, name=name)
    need = ctx["state_bytes"] + pio.RUNTIME_RAM_BYTES + board.stack_bytes
    if board.sram_bytes is not None and need > board.sram_bytes:
        raise TinymemError(f"LSM '{name}' does not fit board '{board.id}': state {ctx['state_bytes']:,} B + runtime "
                           f"and minimum stack = {need:,} B > {board.sram_bytes:,} B")
    extra = {"lsm": cfg.as_dict(), "storage": storage, "state_bytes": ctx["state_bytes"],
             "weight_bytes": ctx["weight_bytes"]}
    project = pio.render_app_project(board, out_dir, lambda src: render_lsm(cfg, src, storage, name=name),
                                     ctx["inputs"], ctx["outputs"], name, extra)
    return project, ctx


def _board_encode(cfg: LsmConfig, frames: np.ndarray, board, storage: str, project_dir: Path, port: str | None,
                  timeout: float, progress, stage) -> Encoded:
    from ..build.platformio import build
    from ..link.run import clock_units, serve_on_board
    from ..link.session import Session

    stage(f"generating the {board.id} project in {project_dir}")
    project, ctx = render_lsm_project(cfg, board, project_dir, storage)
    stage("building with PlatformIO")
    built = build(project)
    packed = pack_frames(frames).view(np.int8)

    def serve(link) -> tuple:
        session = Session(link, timeout=timeout, progress=progress)
        hello = session.hello()
        return session, (session, hello, session.run([packed]))

    session, hello, runs = serve_on_board(board, project, built.elf, serve, port, timeout=timeout, stage=stage,
                                          what="LSM firmware")
    outputs = [np.stack([np.frombuffer(r.outputs[k], np.uint8) for r in runs]) for k in range(len(ctx["outputs"]))]
    counts, membrane = unpack_outputs(cfg, outputs)
    unit, per_tick, note = clock_units(board, hello)
    ticks = [r.ticks for r in runs]
    high = max(r.stack_high_water for r in runs)
    per_sample = round(statistics.median(ticks) * per_tick) if ticks else None
    profile = {
        "backend": board.id, "storage": storage, "samples": len(runs), "unit": unit, "clock_note": note,
        f"{unit}_per_sample": per_sample,
        # emulated: instructions at one per cycle of the board's clock (an estimate); real: cycles
        "ms_per_sample_at_clock": round(per_sample / hello.clock_hz * 1e3, 3) if ticks else None,
        "clock_hz": hello.clock_hz, "ram_static_bytes": built.ram_static_bytes, "stack_high_water_bytes": high,
        "peak_sram_measured_bytes": built.ram_static_bytes + high, "ram_limit_bytes": board.sram_bytes,
        "flash_bytes": built.flash_bytes, "lsm_state_bytes": ctx["state_bytes"], "weight_bytes": ctx["weight_bytes"],
        "input_bytes_per_sample": int(packed.shape[1]), "output_bytes_per_sample": int(sum(len(o[0]) for o in outputs)),
        "link": session.stats.as_dict(),
    }
    return Encoded(counts, membrane, profile)


def encode(cfg: LsmConfig, frames: np.ndarray, backend: str = "numpy", mode: str = "fixed", storage: str = "flash",
           project_dir: str | Path | None = None, port: str | None = None, timeout: float = 30.0,
           progress=None, on_stage=None) -> Encoded:
    """Encode bool frames [N, steps, inputs] on `backend` (numpy, host or a board id)."""
    stage = on_stage or (lambda _msg: None)
    frames = np.asarray(frames, bool)
    if frames.ndim != 3 or frames.shape[1:] != (cfg.steps, cfg.inputs):
        raise TinymemError(f"frames of shape {list(frames.shape)}, expected [N, {cfg.steps}, {cfg.inputs}]")
    if len(frames) == 0:
        raise TinymemError("no samples to encode (check --split and --limit against the event file)")
    if backend != "numpy" and mode != "fixed":
        raise TinymemError(f"backend '{backend}' runs the fixed-point LSM; float mode is numpy only")
    start = time.perf_counter()
    if backend == "numpy":
        enc = run(cfg, frames, mode, progress=progress)
        seconds = time.perf_counter() - start
        return Encoded(enc.counts, enc.membrane, {"backend": "numpy", "mode": mode, "samples": len(frames),
                                                  "host_ms_per_sample": round(1e3 * seconds / max(len(frames), 1), 4)})
    if backend == "host":
        with tempfile.TemporaryDirectory(prefix="tinymem-lsm-") as tmp:
            stage("compiling the generated C for the host")
            host = build_host_lsm(cfg, project_dir or tmp, storage)
            stage(f"encoding {len(frames)} samples")
            start = time.perf_counter()
            counts, membrane = host.run(frames)
            seconds = time.perf_counter() - start
        ctx = context(cfg, storage)
        return Encoded(counts, membrane, {"backend": "host", "storage": storage, "samples": len(frames),
                                          "host_ms_per_sample": round(1e3 * seconds / max(len(frames), 1), 4),
                                          "lsm_state_bytes": ctx["state_bytes"], "weight_bytes": ctx["weight_bytes"]})
    from ..build.boards import load_board

    board = load_board(backend)
    if project_dir is None:
        with tempfile.TemporaryDirectory(prefix=f"tinymem-lsm-{board.id}-") as tmp:
            return _board_encode(cfg, frames, board, storage, Path(tmp), port, timeout, progress, stage)
    return _board_encode(cfg, frames, board, storage, Path(project_dir), port, timeout, progress, stage)


# ---------------------------------------------------------------------------------------------
# The encodings file

ENC_FORMAT = "tinymem-encodings-v1"


@dataclass
class EncodingFile:
    """What `tinymem lsm encode` writes (`.npz`):
    counts uint8 [N, windows·neurons] spike counts (window-major); membrane [N, neurons] when the LSM
    has `membrane` (int32 Q.F, or float in float mode); input_counts int64 [N, 2·inputs] events per
    input pixel (OFF then ON: the raw-count baseline's features); labels, split as in the event
    file; lsm and profile as JSON text; backend and mode."""
    counts: np.ndarray
    input_counts: np.ndarray
    lsm: dict
    profile: dict
    membrane: np.ndarray | None = None
    labels: np.ndarray | None = None
    split: np.ndarray | None = None

    def features(self) -> np.ndarray:
        """The readout's input: counts, and the mean membrane (in units of the threshold) if present."""
        if self.membrane is None:
            return self.counts.astype(np.float64)
        cfg = LsmConfig.from_dict(self.lsm)
        m = self.membrane.astype(np.float64)
        m = m / (1 << cfg.frac_bits) if self.profile.get("mode", "fixed") == "fixed" else m
        return np.concatenate([self.counts, m / cfg.threshold], axis=1)

    def save(self, path: str | Path) -> None:
        d = {"format": np.array(ENC_FORMAT), "counts": self.counts, "input_counts": self.input_counts,
             "lsm": np.array(json.dumps(self.lsm)), "profile": np.array(json.dumps(self.profile))}
        for name in ("membrane", "labels", "split"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        write_npz(path, d)


def load_encoding(path: str | Path) -> EncodingFile:
    d = read_npz(path)
    if str(d.get("format", "")) != ENC_FORMAT:
        raise TinymemError(f"{path}: not a tinymem encodings file (make one with `tinymem lsm encode`)")
    for name in ("counts", "input_counts", "lsm", "profile"):
        if name not in d:
            raise TinymemError(f"{path}: missing field '{name}'")
    n = len(d["counts"])
    for name in ("input_counts", "membrane", "labels", "split"):
        if name in d and len(d[name]) != n:
            raise TinymemError(f"{path}: field '{name}' has {len(d[name])} rows for {n} samples")
    try:
        lsm, profile = json.loads(str(d["lsm"])), json.loads(str(d["profile"]))
    except json.JSONDecodeError:
        raise TinymemError(f"{path}: fields 'lsm' and 'profile' must hold JSON") from None
    return EncodingFile(d["counts"], d["input_counts"], lsm, profile, d.get("membrane"), d.get("labels"), d.get("split"))
