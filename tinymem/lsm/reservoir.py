"""The liquid: a fixed, random, sparsely connected reservoir of leaky integrate-and-fire neurons.

`LsmConfig` (saved as lsm.json by `tinymem lsm make`) is everything that defines a reservoir: the
weights are not stored, they follow from (seed, cycle, device model) through device.py. Defaults
are the paper's N-MNIST settings: 256 inputs, 200 neurons, decay 0.9, threshold 5.0, 50 steps.

Dynamics, per time step t (x = binary input frame, s = spikes; the same in both modes):
    v ← decay(v)                               leak (v is 0 after a spike: reset to zero)
    v ← v + W_inᵀ x[t] + W_recᵀ s[t−1]         synaptic input, recurrent input from last step
    s[t] = v ≥ θ;  v ← 0 where s[t]            fire, reset
Encoding = spike count of each neuron over the T steps (u8: T ≤ 255), or over each of `windows`
equal windows (step t counts in window t·windows // T); with `membrane`, also the mean membrane
potential of each neuron (v after input, before reset; fixed mode: the int64 sum over the steps
divided by T, truncated toward zero, as C's `/`).

Weights: w = gain · (G+ − G−) / (g_max − g_min) for a connected pair, i.e. gain / (levels − 1)
per conductance level; input synapses exist with probability p_in, recurrent ones with p_rec
(no self-connections).

Float mode: v is float64, decay a multiply, weights the unquantized conductance differences.

Fixed-point mode (what the generated C computes, bit for bit):
    membrane v: int32, Q(31−F).F with F = frac_bits: v_q = v · 2^F
    weight:     (L+ − L−) · A,  A = round(gain / (levels − 1) · 2^F)  (A_in, A_rec)
    leak:       v ← (v · D + 2^15) >> 16,  D = round(decay · 2^16)   (int64 product, arithmetic
                shift: round half up)
    fire:       v ≥ θ_q,  θ_q = round(θ · 2^F)
Addition order cannot matter (integers), so the C may be event-driven (add a source's outgoing
synapses when it spikes) while numpy multiplies matrices: float64 products of these integers
stay far below 2^53 and are exact.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from ..errors import TinymemError
from .device import DeviceParams, connected, pair_weights

FORMAT = "tinymem-lsm-v1"
INPUT, RECURRENT = 0, 1


@dataclass(frozen=True)
class LsmConfig:
    inputs: int = 256
    neurons: int = 200
    seed: int = 7
    decay: float = 0.9
    threshold: float = 5.0
    steps: int = 50
    p_in: float = 0.2        # input → neuron connection probability
    p_rec: float = 0.1       # neuron → neuron connection probability
    gain_in: float = 8.0     # weight of a full-scale input pair (G+ = g_max, G− = g_min)
    gain_rec: float = 4.0
    cycle: int = 0           # programming cycle (cycle-to-cycle variation, device.py)
    frac_bits: int = 12      # fixed point: fractional bits of the membrane
    windows: int = 1         # spike counts per equal time window (1 = over all steps, the paper's)
    membrane: bool = False   # also encode each neuron's mean membrane potential
    device: DeviceParams = field(default_factory=DeviceParams)

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.inputs <= 4096, "inputs must be 1..4096"),
            (1 <= self.neurons <= 255 * 16, "neurons must be 1..4080"),
            (1 <= self.steps <= 255, "steps must be 1..255 (spike counts are u8)"),
            (0 < self.decay < 1, "decay must be in (0, 1)"),
            (self.threshold > 0, "threshold must be > 0"),
            (0 < self.p_in <= 1 and 0 <= self.p_rec <= 1, "p_in must be in (0, 1], p_rec in [0, 1]"),
            (self.gain_in > 0 and self.gain_rec >= 0, "gains must be positive"),
            (0 <= self.seed <= 0xFFFFFFFF and 0 <= self.cycle < 1 << 23, "seed must be u32, cycle < 2^23"),
            (4 <= self.frac_bits <= 16, "frac_bits must be 4..16"),
            (1 <= self.windows <= self.steps, "windows must be 1..steps"),
        ]
        for ok, why in checks:
            if not ok:
                raise TinymemError(f"lsm config: {why}")
        q = self.fixed()
        if q["a_in"] < 1:
            raise TinymemError("lsm config: gain_in is below one fixed-point step: raise gain_in or frac_bits")
        # |v| after the leak stays below (the largest possible input of one step) / (1 − decay)
        step = (self.inputs * q["a_in"] + self.neurons * q["a_rec"]) * (self.device.levels - 1)
        if step / (1 - self.decay) + q["theta_q"] >= 2 ** 31:
            raise TinymemError("lsm config: the membrane could overflow int32: lower frac_bits or the gains")

    def fixed(self) -> dict:
        """The integer constants of the fixed-point mode (emitted into C as they are)."""
        f, lv = self.frac_bits, self.device.levels - 1
        return {"decay_q16": round(self.decay * 65536), "theta_q": round(self.threshold * (1 << f)),
                "a_in": round(self.gain_in / lv * (1 << f)), "a_rec": round(self.gain_rec / lv * (1 << f))}

    def as_dict(self) -> dict:
        d = asdict(self)
        d["device"] = self.device.as_dict()
        return {"format": FORMAT, **d}

    def save(self, path: str | Path) -> None:
        try:
            Path(path).write_text(json.dumps(self.as_dict(), indent=2) + "\n")
        except OSError as exc:
            raise TinymemError(f"cannot write {path}: {exc.strerror}") from None

    @classmethod
    def from_dict(cls, d: dict, where: str = "lsm config") -> "LsmConfig":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise TinymemError(f"{where}: not a tinymem LSM file (no \"format\": \"{FORMAT}\"; make one with `tinymem lsm make`)")
        known = {f.name for f in fields(cls)}
        body = {k: v for k, v in d.items() if k != "format"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise TinymemError(f"{where}: unknown field '{unknown[0]}'")
        dev = DeviceParams.from_dict(body.pop("device", {}), f"{where}: device")
        ints = {"inputs", "neurons", "seed", "steps", "cycle", "frac_bits", "windows"}
        conv = lambda k, v: bool(v) if k == "membrane" else int(v) if k in ints else float(v)  # noqa: E731
        try:
            return cls(device=dev, **{k: conv(k, v) for k, v in body.items()})
        except (TypeError, ValueError) as exc:
            raise TinymemError(f"{where}: {exc}") from None

    def with_(self, **changes) -> "LsmConfig":
        return replace(self, **changes)


def load_lsm(path: str | Path) -> LsmConfig:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TinymemError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TinymemError(f"{path}: not valid JSON ({exc})") from None
    return LsmConfig.from_dict(data, str(path))


@dataclass
class Weights:
    """Dense views of the sparse reservoir: int levels (L+ − L−, 0 where unconnected) and float."""
    w_in: np.ndarray     # int64 [inputs, neurons]
    w_rec: np.ndarray    # int64 [neurons, neurons], source × target
    f_in: np.ndarray     # float64 level differences, same shapes
    f_rec: np.ndarray
    mask_in: np.ndarray  # bool
    mask_rec: np.ndarray


def _matrix(cfg: LsmConfig, matrix: int, sources: int, p: float):
    n = cfg.neurons
    index = (np.arange(sources, dtype=np.uint32)[:, None] * np.uint32(n) + np.arange(n, dtype=np.uint32)[None, :])
    mask = connected(cfg.seed, matrix, p, index)
    if matrix == RECURRENT:
        np.fill_diagonal(mask, False)
    w, f = pair_weights(cfg.device, cfg.seed, matrix, cfg.cycle, index)
    return np.where(mask, w, 0), np.where(mask, f, 0.0), mask


def weights(cfg: LsmConfig) -> Weights:
    w_in, f_in, m_in = _matrix(cfg, INPUT, cfg.inputs, cfg.p_in)
    w_rec, f_rec, m_rec = _matrix(cfg, RECURRENT, cfg.neurons, cfg.p_rec)
    return Weights(w_in, w_rec, f_in, f_rec, m_in, m_rec)


@dataclass
class Encoding:
    counts: np.ndarray                  # uint8 [N, windows · neurons], window-major
    membrane: np.ndarray | None = None  # mean membrane [N, neurons]: int32 Q.F (fixed) or float
    spikes: np.ndarray | None = None    # bool [N, steps, neurons] when recorded
    trace: np.ndarray | None = None     # membrane [N, steps, neurons] before reset, when recorded


def run(cfg: LsmConfig, frames: np.ndarray, mode: str = "fixed", record: bool = False,
        w: Weights | None = None, batch: int = 256, progress=None) -> Encoding:
    """Encode binary input frames bool/uint8 [N, steps, inputs] in `mode` ("fixed" or "float")."""
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.shape[1:] != (cfg.steps, cfg.inputs):
        raise TinymemError(f"frames of shape {list(frames.shape)}, expected [N, {cfg.steps}, {cfg.inputs}]")
    if mode not in ("fixed", "float"):
        raise TinymemError(f"mode must be 'fixed' or 'float', got {mode!r}")
    w = w or weights(cfg)
    parts = []
    for k in range(0, len(frames), batch):
        parts.append(_run_batch(cfg, frames[k:k + batch], mode, record, w))
        if progress:
            progress(min(k + batch, len(frames)), len(frames))
    if not parts:
        parts = [_run_batch(cfg, frames, mode, record, w)]
    cat = lambda name: None if getattr(parts[0], name) is None else np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    return Encoding(cat("counts"), cat("membrane"), cat("spikes"), cat("trace"))


def _run_batch(cfg: LsmConfig, frames: np.ndarray, mode: str, record: bool, w: Weights) -> Encoding:
    n_samples, n = len(frames), cfg.neurons
    x = frames.astype(np.float64)
    if mode == "fixed":
        q = cfg.fixed()
        w_in, w_rec = (w.w_in * q["a_in"]).astype(np.float64), (w.w_rec * q["a_rec"]).astype(np.float64)
        v = np.zeros((n_samples, n), np.int64)
    else:
        lv = cfg.device.levels - 1
        w_in, w_rec = w.f_in * (cfg.gain_in / lv), w.f_rec * (cfg.gain_rec / lv)
        v = np.zeros((n_samples, n), np.float64)
    s = np.zeros((n_samples, n), bool)
    counts = np.zeros((n_samples, cfg.windows, n), np.int64)
    vsum = np.zeros_like(v)
    spikes = np.zeros((n_samples, cfg.steps, n), bool) if record else None
    trace = np.zeros((n_samples, cfg.steps, n), v.dtype) if record else None
    for t in range(cfg.steps):
        drive = x[:, t] @ w_in + s.astype(np.float64) @ w_rec
        if mode == "fixed":
            v = ((v * q["decay_q16"] + 32768) >> 16) + np.rint(drive).astype(np.int64)
            s = v >= q["theta_q"]
        else:
            v = v * cfg.decay + drive
            s = v >= cfg.threshold
        if record:
            trace[:, t] = v
            spikes[:, t] = s
        vsum += v
        counts[:, t * cfg.windows // cfg.steps] += s
        v = np.where(s, 0, v)
    membrane = None
    if cfg.membrane:
        membrane = (np.sign(vsum) * (np.abs(vsum) // cfg.steps)).astype(np.int32) if mode == "fixed" else vsum / cfg.steps
    return Encoding(counts.reshape(n_samples, -1).astype(np.uint8), membrane, spikes, trace)
