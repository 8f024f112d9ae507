"""Resistive-memory (RRAM) device model: where the reservoir's random weights come from.

In the paper's hardware the LSM's weights are not stored, they are *grown*: each cell of a
resistive-memory array is SET once, and the stochasticity of filament formation leaves it at a
random conductance. A signed weight is a differential pair, w ∝ G+ − G−. This module draws those
conductances in software, with integer arithmetic only, so a microcontroller can regenerate every
weight from the seed bit for bit instead of storing it (see reservoir.py).

Model of one device (all parameters in `DeviceParams`, physical units in µS):

    G = clip(mean + d2d · z_device + c2c · z_cycle, g_min, g_max)   then quantized to `levels`
        z_device  ~ N(0, 1), fixed per device (device-to-device variation: which cell it is)
        z_cycle   ~ N(0, 1), redrawn per programming cycle (cycle-to-cycle variation: reprogramming
                    the same array with another `cycle` moves every cell a little)
    with probability stuck_on the cell is stuck at g_max (a filament that cannot be RESET),
    with probability stuck_off it is stuck at g_min (a cell that never formed).

`levels` is the number of conductance states the read-out can resolve (a 4- or 5-bit ADC on a
macro): level L = round((G − g_min) / (g_max − g_min) · (levels − 1)). The weight of a pair is then
the integer L+ − L− (fixed-point mode), or the unquantized (G+ − G−) in level units (float mode).

Randomness is counter-based: a draw is a hash of (seed, stream, index), so any weight can be
computed on its own, in any order, vectorised in numpy or one at a time in C. The hash is
`lowbias32` (C. Wellons' integer hash, a bijection on 32 bits). A normal deviate is Irwin–Hall of
four 16-bit uniforms (two hashes): g = Σ u_k − 131070, which has standard deviation
65536/√3 exactly, so z = g·√3/65536 (light tails: |z| ≤ 3.46, as a clipped device distribution is).

Integer pipeline (the one both numpy and the generated C compute; all shifts are arithmetic, i.e.
floor division by a power of two):
    level_q16 = mean_q16 + (g_dev · M_d2d >> 16) + (g_cyc · M_c2c >> 16)     (int64 products)
    L = clamp((level_q16 + 32768) >> 16, 0, levels − 1), then stuck cells override L
where mean_q16 = round(mean_level · 2^16) and M = round(sigma_level · √3 · 2^16).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from ..errors import TinymemError

GOLDEN = 0x9E3779B9
MASK32 = 0xFFFFFFFF
IH4_MEAN = 2 * 65535  # mean of four 16-bit uniforms
# Streams (what a draw is for). A stream id also carries the matrix and the cycle, see key().
CONNECT, DEV_A, DEV_B, CYC_A, CYC_B, STUCK = range(6)


def mix32(x):
    """lowbias32 on uint32 (numpy array or int): the one hash every draw goes through."""
    if isinstance(x, np.ndarray):
        x = x.astype(np.uint32, copy=True)
        x ^= x >> np.uint32(16)
        x *= np.uint32(0x7FEB352D)
        x ^= x >> np.uint32(15)
        x *= np.uint32(0x846CA68B)
        x ^= x >> np.uint32(16)
        return x
    x &= MASK32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & MASK32
    x ^= x >> 15
    x = (x * 0x846CA68B) & MASK32
    return x ^ (x >> 16)


def key(seed: int, matrix: int, purpose: int, member: int = 0, cycle: int = 0) -> int:
    """Key of one stream: (seed, matrix 0=input 1=recurrent, purpose, pair member 0=G+ 1=G−, cycle)."""
    stream = (matrix & 0xF) | ((purpose & 0xF) << 4) | ((member & 1) << 8) | ((cycle & 0x7FFFFF) << 9)
    return mix32(mix32(seed & MASK32) ^ ((stream * GOLDEN) & MASK32))


def draw(k: int, index: np.ndarray) -> np.ndarray:
    """uint32 draws of stream key k at the given indices (uint32)."""
    return mix32(np.uint32(k) ^ np.asarray(index, dtype=np.uint32))


def gauss_ih4(k_a: int, k_b: int, index: np.ndarray) -> np.ndarray:
    """Irwin–Hall(4) normal deviates as int64 g (std 65536/√3) from two hashes per index."""
    a, b = draw(k_a, index).astype(np.int64), draw(k_b, index).astype(np.int64)
    return (a & 0xFFFF) + (a >> 16) + (b & 0xFFFF) + (b >> 16) - IH4_MEAN


@dataclass(frozen=True)
class DeviceParams:
    """One RRAM technology. Defaults: a HfOx-like 1T1R cell SET once with a compliance current
    that leaves it mid-window, read with a 5-bit converter."""
    g_min_us: float = 1.0      # high-resistance state floor
    g_max_us: float = 100.0    # low-resistance state ceiling
    mean_us: float = 40.0      # mean conductance after one stochastic SET
    d2d_sigma_us: float = 15.0  # device-to-device spread of that conductance
    c2c_sigma_us: float = 3.0  # cycle-to-cycle spread when the array is reprogrammed
    levels: int = 32           # distinguishable conductance levels (read-out resolution)
    stuck_on: float = 0.002    # fraction of cells stuck at g_max
    stuck_off: float = 0.002   # fraction of cells stuck at g_min

    def __post_init__(self) -> None:
        checks = [
            (self.g_max_us > self.g_min_us >= 0, "g_max_us must exceed g_min_us >= 0"),
            (self.g_min_us <= self.mean_us <= self.g_max_us, "mean_us must lie in [g_min_us, g_max_us]"),
            (self.d2d_sigma_us >= 0 and self.c2c_sigma_us >= 0, "sigmas must be >= 0"),
            (2 <= self.levels <= 128, "levels must be 2..128 (a weight L+ - L- must fit int8)"),
            (0 <= self.stuck_on and 0 <= self.stuck_off and self.stuck_on + self.stuck_off <= 0.5,
             "stuck_on + stuck_off must be in [0, 0.5]"),
        ]
        for ok, why in checks:
            if not ok:
                raise TinymemError(f"device model: {why}")

    # --- level units (what the arithmetic uses) --------------------------------------------
    @property
    def us_per_level(self) -> float:
        return (self.g_max_us - self.g_min_us) / (self.levels - 1)

    @property
    def mean_level(self) -> float:
        return (self.mean_us - self.g_min_us) / self.us_per_level

    def integer_params(self) -> dict:
        """The integers of the fixed-point pipeline (emitted into C as they are)."""
        root3 = math.sqrt(3.0)
        return {
            "levels": self.levels,
            "mean_q16": round(self.mean_level * 65536),
            "m_d2d": round(self.d2d_sigma_us / self.us_per_level * root3 * 65536),
            "m_c2c": round(self.c2c_sigma_us / self.us_per_level * root3 * 65536),
            # stuck tests compare the top 24 bits of one hash against these
            "stuck_on_t": round(self.stuck_on * (1 << 24)),
            "stuck_off_t": round((self.stuck_on + self.stuck_off) * (1 << 24)),
        }

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "device") -> "DeviceParams":
        if not isinstance(d, dict):
            raise TinymemError(f"{where}: must be a JSON object of device parameters")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TinymemError(f"{where}: unknown device parameter '{unknown[0]}' (known: {', '.join(sorted(known))})")
        try:
            return cls(**{k: (int(v) if k == "levels" else float(v)) for k, v in d.items()})
        except (TypeError, ValueError) as exc:
            raise TinymemError(f"{where}: {exc}") from None


def load_device(path: str | Path) -> DeviceParams:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TinymemError(f"{path}: no such device file") from None
    except json.JSONDecodeError as exc:
        raise TinymemError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return DeviceParams.from_dict(data, str(path))


def device_levels(dev: DeviceParams, seed: int, matrix: int, member: int, cycle: int,
                  index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(integer level int64, float level) of the devices at `index` of one pair member.

    Both come from the same draws, so float mode is the same array read with an ideal converter."""
    ip = dev.integer_params()
    g_dev = gauss_ih4(key(seed, matrix, DEV_A, member), key(seed, matrix, DEV_B, member), index)
    g_cyc = gauss_ih4(key(seed, matrix, CYC_A, member, cycle), key(seed, matrix, CYC_B, member, cycle), index)
    q16 = ip["mean_q16"] + ((g_dev * ip["m_d2d"]) >> 16) + ((g_cyc * ip["m_c2c"]) >> 16)
    level = np.clip((q16 + 32768) >> 16, 0, dev.levels - 1)
    z = math.sqrt(3.0) / 65536
    lf = np.clip(dev.mean_level + g_dev * z * (dev.d2d_sigma_us / dev.us_per_level)
                 + g_cyc * z * (dev.c2c_sigma_us / dev.us_per_level), 0.0, dev.levels - 1.0)
    u = draw(key(seed, matrix, STUCK, member), index) >> np.uint32(8)
    on, off = u < ip["stuck_on_t"], (u >= ip["stuck_on_t"]) & (u < ip["stuck_off_t"])
    level = np.where(on, dev.levels - 1, np.where(off, 0, level))
    lf = np.where(on, dev.levels - 1.0, np.where(off, 0.0, lf))
    return level.astype(np.int64), lf


def pair_weights(dev: DeviceParams, seed: int, matrix: int, cycle: int,
                 index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Differential pair weights at `index`: (int L+ − L−, float G+ − G− in level units)."""
    lp, fp = device_levels(dev, seed, matrix, 0, cycle, index)
    ln, fn = device_levels(dev, seed, matrix, 1, cycle, index)
    return lp - ln, fp - fn


def connected(seed: int, matrix: int, p: float, index: np.ndarray) -> np.ndarray:
    """Bernoulli(p) connectivity: the top 24 bits of one hash below round(p · 2^24)."""
    return (draw(key(seed, matrix, CONNECT), index) >> np.uint32(8)) < round(p * (1 << 24))


def device_stats(dev: DeviceParams, seed: int = 0, n: int = 100_000) -> dict:
    """Measured statistics of n devices against the parameters (µS): what `tinymem lsm device`
    prints and what the tests hold the model to."""
    index = np.arange(n, dtype=np.uint32)
    lv0, f0 = device_levels(dev, seed, 0, 0, 0, index)
    _, f1 = device_levels(dev, seed, 0, 0, 1, index)
    u = draw(key(seed, 0, STUCK, 0), index) >> np.uint32(8)
    ip = dev.integer_params()
    free = u >= ip["stuck_off_t"]
    g = dev.g_min_us + f0[free] * dev.us_per_level
    w, wf = pair_weights(dev, seed, 0, 0, index)
    return {
        "devices": n,
        "levels_used": int(len(np.unique(lv0))),
        "level_histogram": np.bincount(lv0, minlength=dev.levels).tolist(),
        "mean_us": float(g.mean()),
        "sigma_us": float(g.std()),
        "c2c_sigma_us": float(((f1 - f0)[free]).std() / np.sqrt(2) * dev.us_per_level),
        "stuck_on": float(np.mean(u < ip["stuck_on_t"])),
        "stuck_off": float(np.mean((u >= ip["stuck_on_t"]) & ~free)),
        "weight_mean_levels": float(w.mean()),
        "weight_sigma_levels": float(w.std()),
        "weight_range_levels": [int(w.min()), int(w.max())],
        "float_vs_int_weight_rms": float(np.sqrt(np.mean((wf - w) ** 2))),
    }
