"""C for an LSM, from the templates in codegen/templates/lsm/ (no C is written here).

`render_lsm` writes `tinymem_model.{c,h}` with the same API as a tinymem model, so the existing
drivers serve it unchanged: codegen/templates/tinymem_host_main.c.j2 on the host (samples on
stdin, encodings on stdout) and codegen/templates/board/main.c.j2 on a board (frames over the
UART). Two weight storages:
  flash  CSR by source in `const` arrays: (inputs + neurons + 2) pointers, one target byte and
         one int8 level difference per synapse;
  seed   nothing stored: every weight is recomputed from the seed with device.py's hash each
         time its source spikes (flash for time: ~12 hashes per synapse visited).
"""
from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TinymemError
from ..sim.host import SANITIZE_FLAGS, WARN_FLAGS, host_cc, run_binary
from .reservoir import LsmConfig, Weights, weights

STORAGES = ("flash", "seed")


def frame_bytes(cfg: LsmConfig) -> int:
    return (cfg.inputs + 7) // 8


def pack_frames(frames: np.ndarray) -> np.ndarray:
    """bool [N, steps, inputs] -> uint8 [N, steps · ⌈inputs/8⌉], input i = bit i % 8 (LSB first)."""
    f = np.asarray(frames, bool)
    return np.packbits(f, axis=2, bitorder="little").reshape(len(f), -1)


def output_sizes(cfg: LsmConfig) -> list[int]:
    return [cfg.windows * cfg.neurons] + ([4 * cfg.neurons] if cfg.membrane else [])


def unpack_outputs(cfg: LsmConfig, outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw output bytes per output [N, bytes] -> (counts uint8, mean membrane int32 or None)."""
    counts = np.asarray(outputs[0]).view(np.uint8).reshape(-1, cfg.windows * cfg.neurons)
    membrane = np.ascontiguousarray(outputs[1]).view("<i4").reshape(-1, cfg.neurons) if cfg.membrane else None
    return counts.copy(), None if membrane is None else membrane.astype(np.int32)


def _csr(mask: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    src, dst = np.nonzero(mask)  # row-major: sorted by source, then target
    ptr = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=mask.shape[0]))])
    return ptr, dst, w[src, dst]


def context(cfg: LsmConfig, storage: str = "flash", name: str = "lsm", w: Weights | None = None) -> dict:
    """Everything the templates need, and the sizes the board report uses."""
    if storage not in STORAGES:
        raise TinymemError(f"weight storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    q = cfg.fixed()
    matrices, weight_bytes = [], 0
    if storage == "flash":
        w = w or weights(cfg)
        for mid, label, mask, wm, a in (("lsm_in", "input", w.mask_in, w.w_in, q["a_in"]),
                                        ("lsm_rec", "recurrent", w.mask_rec, w.w_rec, q["a_rec"])):
            ptr, dst, vals = _csr(mask, wm)
            ptr_type = "uint16_t" if ptr[-1] < 1 << 16 else "uint32_t"
            matrices.append({"id": mid, "name": label, "sources": mask.shape[0], "nnz": int(ptr[-1]), "a": a,
                             "ptr": ptr, "dst": dst, "w": vals, "ptr_type": ptr_type})
            weight_bytes += len(ptr) * (2 if ptr_type == "uint16_t" else 4) + len(dst) * (1 + (cfg.neurons > 256))
            weight_bytes += len(vals)
    fb = frame_bytes(cfg)
    state = (cfg.steps * fb + cfg.windows * cfg.neurons + 4 * cfg.neurons + 2 * ((cfg.neurons + 7) // 8)
             + (12 * cfg.neurons if cfg.membrane else 0) + (0 if storage == "flash" else 2 * 2 * 6 * 4 + 1))
    return {
        "name": name, "storage": storage, "inputs_n": cfg.inputs, "neurons": cfg.neurons, "steps": cfg.steps,
        "windows": cfg.windows, "membrane": cfg.membrane, "frame_bytes": fb, "frac_bits": cfg.frac_bits,
        "seed": cfg.seed, "cycle": cfg.cycle, "q": q, "dev": cfg.device.integer_params(),
        "p_t": [round(cfg.p_in * (1 << 24)), round(cfg.p_rec * (1 << 24))],
        "matrices": matrices, "dst_type": "uint8_t" if cfg.neurons <= 256 else "uint16_t",
        "weight_bytes": weight_bytes, "state_bytes": state,
        # what the drivers (host main, board main) read
        "model": name,
        "inputs": [{"name": "frames", "bytes": cfg.steps * fb}],
        "outputs": [{"name": n, "bytes": b} for n, b in zip(("counts", "membrane"), output_sizes(cfg))],
    }


def render_lsm(cfg: LsmConfig, out_dir: str | Path, storage: str = "flash", host_main: bool = False,
               name: str = "lsm", w: Weights | None = None) -> tuple[list[Path], dict]:
    """Write tinymem_model.{c,h} (+ the host driver) for the LSM into out_dir; returns (files, context)."""
    from codegen.render import environment

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    ctx = context(cfg, storage, name, w)
    written = []
    for target, template in (("tinymem_model.h", "lsm/tinymem_model.h.j2"), ("tinymem_model.c", "lsm/tinymem_model.c.j2"),
                             *((("tinymem_host_main.c", "tinymem_host_main.c.j2"),) if host_main else ())):
        path = out / target
        path.write_text(env.get_template(template).render(ctx))
        written.append(path)
    return written, ctx


@dataclass
class HostLsm:
    """The generated C compiled for the host: the `host` board of `tinymem lsm encode`."""
    cfg: LsmConfig
    exe: Path

    def run(self, frames: np.ndarray, timeout: float = 600) -> tuple[np.ndarray, np.ndarray | None]:
        packed = pack_frames(frames)
        proc = run_binary(self.exe, packed.tobytes(), "the host LSM build", timeout=timeout)
        sizes = output_sizes(self.cfg)
        raw = np.frombuffer(proc.stdout, np.uint8)
        if raw.size != len(packed) * sum(sizes):
            raise TinymemError(f"the host LSM build wrote {raw.size} bytes, expected {len(packed) * sum(sizes)}")
        per = raw.reshape(len(packed), sum(sizes))
        return unpack_outputs(self.cfg, [per[:, :sizes[0]], per[:, sizes[0]:]])


def build_host_lsm(cfg: LsmConfig, workdir: str | Path | None = None, storage: str = "flash",
                   sanitize: bool = False) -> HostLsm:
    """Render and compile the LSM C with the host compiler (warnings are errors)."""
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="tinymem-lsm-"))
    files, _ = render_lsm(cfg, work, storage, host_main=True)
    exe = work / ("lsm_asan" if sanitize else "lsm")
    cmd = [host_cc(), *WARN_FLAGS, *(SANITIZE_FLAGS if sanitize else ["-O2"]), "-I", str(work),
           *(str(f) for f in files if f.suffix == ".c"), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["no output"]
        first = next((ln for ln in lines if "error" in ln), lines[-1])
        raise TinymemError(f"compiling the generated LSM C failed: {first.strip()}")
    return HostLsm(cfg, exe)
