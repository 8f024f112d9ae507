"""Event-camera data: the `.npz` event format, a saccade simulator for digit images, binning.

Event file format (`tinymem-events-v1`, a numpy `.npz`; bring your own camera's data in it):
    format     str   "tinymem-events-v1"
    t          int64 [E]  microseconds since the start of the sample's recording
    x, y       int16 [E]  pixel column and row, 0 ≤ x < width, 0 ≤ y < height
    p          int8  [E]  polarity: 1 = ON (brighter), 0 = OFF (darker)
    offsets    int64 [N+1] sample i owns events offsets[i] : offsets[i+1] (sorted by t within)
    width, height, duration_us   int scalars: sensor size, length of every recording
    labels     int64 [N]  class of each sample (optional, needed by `lsm fit`)
    split      uint8 [N]  0 = train, 1 = test (optional)
Alternatively a file may hold pre-binned `frames` uint8 [N, T, H, W] (any polarity merged) instead
of t/x/y/p/offsets. N-MNIST converts with `tinymem lsm events nmnist --root DIR` (`nmnist_events`):
its 34×34 recordings (~300 ms, 3 saccades) are centre-cropped to the reservoir's input square when
binned, as the paper does (16×16).

Binning: T equal time bins over duration_us; an input is 1 in a bin if its pixel fired at least
one event of the selected polarity there (binary frames: the LIF input is a spike or nothing).

Simulator (`digits_events`): N-MNIST was recorded by moving an ATIS camera in three saccades (an
isosceles triangle, 100 ms each) in front of a screen showing a static MNIST digit. We do the
same to scikit-learn's 8×8 digits (the ones that ship with the package: no download): upsample
bilinearly to `digit_px` (12 by default: a 16×16 sensor keeps the whole digit in view through the
2-pixel saccades, whereas a full 16×16 digit would leave the sensor), paint it on a black screen,
and move the sensor window along the triangle with a smooth (cosine) velocity profile. Each pixel
is a DVS pixel: it keeps a reference log intensity and emits ON/OFF events each time the log
intensity moves a contrast threshold C away from it (C varies per pixel: fixed-pattern mismatch).
Background activity (shot noise) adds random events at `noise_hz` per pixel. Timestamps are
jittered within the 1 ms simulation step. Every random draw is seeded: the same arguments give
the same file.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import TinymemError
from ..npz import read_npz, write_npz

FORMAT = "tinymem-events-v1"


@dataclass
class EventSet:
    """A set of recordings: events of sample i are t/x/y/p[offsets[i]:offsets[i+1]]."""
    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    p: np.ndarray
    offsets: np.ndarray
    width: int
    height: int
    duration_us: int
    labels: np.ndarray | None = None
    split: np.ndarray | None = None
    frames: np.ndarray | None = None  # pre-binned instead of t/x/y/p, [N, T, H, W]

    def __len__(self) -> int:
        return len(self.frames) if self.frames is not None else len(self.offsets) - 1

    def sample(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.t[a:b], self.x[a:b], self.y[a:b], self.p[a:b]

    def subset(self, index: np.ndarray) -> "EventSet":
        index = np.asarray(index, dtype=np.int64)
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        if self.frames is not None:
            return EventSet(*(np.zeros(0, dt) for dt in (np.int64, np.int16, np.int16, np.int8)), np.zeros(1, np.int64),
                            self.width, self.height, self.duration_us, pick(self.labels), pick(self.split),
                            self.frames[index])
        parts = [self.sample(int(i)) for i in index]
        sizes = np.array([len(p[0]) for p in parts], np.int64)
        cat = lambda k, dt: np.concatenate([p[k] for p in parts]).astype(dt) if parts else np.zeros(0, dt)  # noqa: E731
        return EventSet(cat(0, np.int64), cat(1, np.int16), cat(2, np.int16), cat(3, np.int8),
                        np.concatenate([[0], np.cumsum(sizes)]), self.width, self.height, self.duration_us,
                        pick(self.labels), pick(self.split))

    def save(self, path: str | Path) -> None:
        d = {"format": np.array(FORMAT), "width": np.array(self.width), "height": np.array(self.height),
             "duration_us": np.array(self.duration_us)}
        if self.frames is not None:
            d["frames"] = self.frames
        else:
            d.update(t=self.t, x=self.x, y=self.y, p=self.p, offsets=self.offsets)
        for name in ("labels", "split"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        write_npz(path, d)


def load_events(path: str | Path) -> EventSet:
    """Read and check an event file; every problem is one line naming the field."""
    d = read_npz(path)
    if str(d.get("format", "")) != FORMAT:
        raise TinymemError(f"{path}: not a tinymem event file (field 'format' must be \"{FORMAT}\")")

    def need(name: str):
        if name not in d:
            raise TinymemError(f"{path}: missing field '{name}'")
        return d[name]

    try:
        width, height, duration = int(need("width")), int(need("height")), int(need("duration_us"))
    except (TypeError, ValueError):
        raise TinymemError(f"{path}: width, height and duration_us must be integers") from None
    if width <= 0 or height <= 0 or duration <= 0:
        raise TinymemError(f"{path}: width, height and duration_us must be positive")
    if "frames" in d:
        frames = d["frames"]
        if frames.ndim != 4 or frames.shape[2:] != (height, width):
            raise TinymemError(f"{path}: field 'frames' has shape {list(frames.shape)}, expected [N, T, {height}, {width}]")
        n = len(frames)
        ev = EventSet(*(np.zeros(0, dt) for dt in (np.int64, np.int16, np.int16, np.int8)), np.zeros(1, np.int64),
                      width, height, duration, frames=frames.astype(np.uint8))
    else:
        t, x, y, p, offsets = (need(k) for k in ("t", "x", "y", "p", "offsets"))
        e = len(t)
        for name, a in (("x", x), ("y", y), ("p", p)):
            if a.shape != (e,):
                raise TinymemError(f"{path}: field '{name}' has {a.size} entries, 't' has {e}")
        if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != e or np.any(np.diff(offsets) < 0):
            raise TinymemError(f"{path}: field 'offsets' must rise from 0 to the number of events ({e})")
        if e and (x.min() < 0 or x.max() >= width or y.min() < 0 or y.max() >= height):
            raise TinymemError(f"{path}: an event lies outside the {width}×{height} sensor")
        if e and (t.min() < 0 or t.max() >= duration):
            raise TinymemError(f"{path}: an event time lies outside [0, duration_us = {duration})")
        if e and not np.isin(p, (0, 1)).all():
            raise TinymemError(f"{path}: field 'p' must be 0 (OFF) or 1 (ON)")
        n = len(offsets) - 1
        ev = EventSet(t.astype(np.int64), x.astype(np.int16), y.astype(np.int16), p.astype(np.int8),
                      offsets.astype(np.int64), width, height, duration)
    for name in ("labels", "split"):
        if name in d:
            a = d[name]
            if a.shape != (n,):
                raise TinymemError(f"{path}: field '{name}' has {a.size} entries for {n} samples")
            setattr(ev, name, a.astype(np.int64 if name == "labels" else np.uint8))
    return ev


def _crop(width: int, height: int, side: int) -> tuple[int, int]:
    if width < side or height < side:
        raise TinymemError(f"a {width}×{height} sensor is smaller than the {side}×{side} input square of the reservoir")
    return (width - side) // 2, (height - side) // 2


def bin_events(ev: EventSet, steps: int, inputs: int, polarity: str = "both") -> np.ndarray:
    """Binary input frames bool [N, steps, inputs]: the centred √inputs square, pixel index y·side + x."""
    side = int(round(inputs ** 0.5))
    if side * side != inputs:
        raise TinymemError(f"binning events needs a square number of reservoir inputs, got {inputs}")
    x0, y0 = _crop(ev.width, ev.height, side)
    if ev.frames is not None:
        f = ev.frames[:, :, y0:y0 + side, x0:x0 + side]
        if f.shape[1] != steps:
            raise TinymemError(f"the file holds {f.shape[1]} pre-binned frames per sample, the reservoir runs {steps} steps")
        return (f > 0).reshape(len(f), steps, inputs)
    keep = {"both": np.ones(len(ev.p), bool), "on": ev.p == 1, "off": ev.p == 0}.get(polarity)
    if keep is None:
        raise TinymemError(f"polarity must be both, on or off, got {polarity!r}")
    sample = np.repeat(np.arange(len(ev)), np.diff(ev.offsets))
    xs, ys = ev.x.astype(np.int64) - x0, ev.y.astype(np.int64) - y0
    keep &= (xs >= 0) & (xs < side) & (ys >= 0) & (ys < side)
    b = np.minimum(ev.t * steps // ev.duration_us, steps - 1)
    out = np.zeros((len(ev), steps, inputs), bool)
    out[sample[keep], b[keep], (ys * side + xs)[keep]] = True
    return out


def event_counts(ev: EventSet, inputs: int) -> np.ndarray:
    """Events per input pixel and polarity, [N, 2·inputs] (OFF then ON): the raw-count baseline."""
    side = int(round(inputs ** 0.5))
    x0, y0 = _crop(ev.width, ev.height, side)
    if ev.frames is not None:
        f = ev.frames[:, :, y0:y0 + side, x0:x0 + side].astype(np.int64).sum(1).reshape(len(ev), inputs)
        return np.concatenate([f, np.zeros_like(f)], axis=1)
    sample = np.repeat(np.arange(len(ev)), np.diff(ev.offsets))
    xs, ys = ev.x.astype(np.int64) - x0, ev.y.astype(np.int64) - y0
    keep = (xs >= 0) & (xs < side) & (ys >= 0) & (ys < side)
    out = np.zeros((len(ev), 2, inputs), np.int64)
    np.add.at(out, (sample[keep], ev.p[keep].astype(np.int64), (ys * side + xs)[keep]), 1)
    return out.reshape(len(ev), 2 * inputs)


# ---------------------------------------------------------------------------------------------
# The saccade simulator

@dataclass(frozen=True)
class SaccadeParams:
    size: int = 16              # sensor is size × size
    digit_px: int = 12          # the 8×8 digit is upsampled to this
    amplitude: float = 2.0      # saccade triangle side, pixels
    duration_us: int = 300_000  # three saccades of a third each (N-MNIST: 3 × 100 ms)
    dt_us: int = 1000           # simulation step (events get random times within it)
    contrast: float = 0.2       # DVS contrast threshold, log intensity
    contrast_sigma: float = 0.03  # per-pixel threshold mismatch
    noise_hz: float = 1.0       # background events per pixel per second
    eps: float = 0.1            # log(I + eps): the screen's black is not infinitely dark
    reverse: bool = False       # run the triangle backwards (the same path, time-reversed)


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8×8 digits (1797 images, 0..16), scaled to [0, 1].

    Read straight from the CSV that ships inside the scikit-learn package: importing sklearn
    itself costs seconds and is not needed for 1797 rows of numbers."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise TinymemError("the digits data ships with scikit-learn: pip install scikit-learn "
                           "(it is in tinymem's test extras: pip install -e '.[test]')")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    try:
        data = np.loadtxt(path, delimiter=",", dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise TinymemError(f"cannot read scikit-learn's digits from {path}: {exc}") from None
    return data[:, :64].reshape(-1, 8, 8) / 16.0, data[:, 64].astype(np.int64)


def _upsample(images: np.ndarray, px: int) -> np.ndarray:
    """Bilinear resize of [N, h, w] to [N, px, px] (pixel centres aligned)."""
    n, h, w = images.shape
    ys, xs = (np.arange(px) + 0.5) * h / px - 0.5, (np.arange(px) + 0.5) * w / px - 0.5
    return _sample(images, ys[:, None] + 0 * xs[None, :], xs[None, :] + 0 * ys[:, None])


def _sample(images: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear samples of [N, h, w] at float coordinates ys, xs (same shape); outside = 0."""
    n, h, w = images.shape
    pad = np.zeros((n, h + 2, w + 2))
    pad[:, 1:-1, 1:-1] = images
    yf, xf = np.clip(ys + 1, 0, h + 0.999), np.clip(xs + 1, 0, w + 0.999)
    y0, x0 = np.floor(yf).astype(int), np.floor(xf).astype(int)
    y1, x1 = np.minimum(y0 + 1, h + 1), np.minimum(x0 + 1, w + 1)
    fy, fx = yf - y0, xf - x0
    return (pad[:, y0, x0] * (1 - fy) * (1 - fx) + pad[:, y0, x1] * (1 - fy) * fx
            + pad[:, y1, x0] * fy * (1 - fx) + pad[:, y1, x1] * fy * fx)


def saccade_path(sp: SaccadeParams) -> tuple[np.ndarray, np.ndarray]:
    """Sensor offset (dy, dx) at each simulation step: three cosine-eased legs of a triangle."""
    a = sp.amplitude
    corners = np.array([[0.0, 0.0], [a, a / 2], [a, -a / 2], [0.0, 0.0]])  # (dy, dx): down-right, left, back up
    corners -= corners[:3].mean(0)
    steps = sp.duration_us // sp.dt_us
    u = np.arange(steps + 1) * 3.0 / steps
    leg = np.minimum(u.astype(int), 2)
    frac = 0.5 - 0.5 * np.cos(np.pi * (u - leg))
    pos = corners[leg] + (corners[leg + 1] - corners[leg]) * frac[:, None]
    if sp.reverse:
        pos = pos[::-1].copy()
    return pos[:, 0], pos[:, 1]


def simulate(images: np.ndarray, sp: SaccadeParams, seed: int, ids: np.ndarray | None = None) -> EventSet:
    """DVS events of each image [N, h, w] in [0, 1] watched through the saccades.

    ids [N] names each image (its index in the data set): a sample's noise and timestamp jitter
    are drawn from (seed, id) alone, so a subset simulates to exactly the same events."""
    ids = np.arange(len(images)) if ids is None else np.asarray(ids)
    thr = np.maximum(sp.contrast + sp.contrast_sigma * np.random.default_rng([seed, 0]).standard_normal((sp.size, sp.size)), 0.05)
    dy, dx = saccade_path(sp)
    n, h, w = images.shape
    gy, gx = np.mgrid[0:sp.size, 0:sp.size].astype(np.float64)
    oy, ox = (sp.size - h) / 2, (sp.size - w) / 2  # screen placement: the image centred in the view
    ref = np.log(_sample(images, gy - oy + dy[0], gx - ox + dx[0]) + sp.eps)
    found: list[tuple[np.ndarray, ...]] = []  # (sample, step, y, x, polarity) per step
    for k in range(1, len(dy)):
        cur = np.log(_sample(images, gy - oy + dy[k], gx - ox + dx[k]) + sp.eps)
        diff = cur - ref
        count = np.floor(np.abs(diff) / thr).astype(np.int64)
        ref += np.sign(diff) * count * thr
        s, yy, xx = np.nonzero(count)
        reps = count[s, yy, xx]
        pol = (diff[s, yy, xx] > 0).astype(np.int8)
        found.append(tuple(np.repeat(a, reps) for a in (s, np.full(len(s), k - 1), yy, xx, pol)))
    s, step, yy, xx, pol = (np.concatenate(col) for col in zip(*found))
    order = np.argsort(s, kind="stable")
    s, step, yy, xx, pol = (a[order] for a in (s, step, yy, xx, pol))
    bounds = np.concatenate([[0], np.cumsum(np.bincount(s, minlength=n))])
    per_sample = []
    for i in range(n):
        # A reversed recording of the same image draws other noise (forward draws stay as they were).
        rng = np.random.default_rng([seed, 1, int(ids[i])] + ([1] if sp.reverse else []))
        a, b = bounds[i], bounds[i + 1]
        t = step[a:b] * sp.dt_us + rng.integers(0, sp.dt_us, b - a)
        k = rng.poisson(sp.noise_hz * sp.duration_us * 1e-6 * sp.size * sp.size)
        t = np.concatenate([t, rng.integers(0, sp.duration_us, k)])
        x = np.concatenate([xx[a:b], rng.integers(0, sp.size, k)])
        y = np.concatenate([yy[a:b], rng.integers(0, sp.size, k)])
        p = np.concatenate([pol[a:b], rng.integers(0, 2, k)])
        o = np.argsort(t, kind="stable")
        per_sample.append((t[o], x[o], y[o], p[o]))
    cat = lambda k, dt: np.concatenate([ps[k] for ps in per_sample]).astype(dt) if per_sample else np.zeros(0, dt)  # noqa: E731
    offsets = np.concatenate([[0], np.cumsum([len(ps[0]) for ps in per_sample])]).astype(np.int64)
    return EventSet(cat(0, np.int64), cat(1, np.int16), cat(2, np.int16), cat(3, np.int8), offsets,
                    sp.size, sp.size, sp.duration_us)


def split_indices(labels: np.ndarray, test_fraction: float = 0.25, seed: int = 0) -> np.ndarray:
    """uint8 split flags (1 = test): a seeded, per-class (stratified) holdout."""
    rng = np.random.default_rng([seed, 2])
    split = np.zeros(len(labels), np.uint8)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        split[rng.permutation(idx)[:int(round(len(idx) * test_fraction))]] = 1
    return split


TASKS = ("digits", "digits-direction")


def concat_events(parts: list[EventSet]) -> EventSet:
    """One set holding the samples of every part in order (same sensor and duration)."""
    first = parts[0]
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    shift = np.cumsum([0] + [p.offsets[-1] for p in parts[:-1]])
    offsets = np.concatenate([[0]] + [p.offsets[1:] + k for p, k in zip(parts, shift)])
    opt = lambda name: None if any(getattr(p, name) is None for p in parts) else cat(name)  # noqa: E731
    return EventSet(cat("t"), cat("x"), cat("y"), cat("p"), offsets.astype(np.int64), first.width, first.height,
                    first.duration_us, opt("labels"), opt("split"))


def digits_events(sp: SaccadeParams = SaccadeParams(), seed: int = 0, which: str = "all",
                  limit: int | None = None, test_fraction: float = 0.25, task: str = "digits") -> EventSet:
    """Event recordings of scikit-learn's digits, with labels and a stratified train/test split.

    task "digits-direction": every digit is recorded twice, with the saccade triangle run forwards
    (labels 0-9) and backwards (labels 10-19; same sensor and split, other noise draws). Both recordings of an image
    cross the same edges the same number of times, so per-pixel event counts barely tell the
    direction apart: the class lives in the order of the events, which a readout on counts only
    sees through something with memory (the reservoir, or time windows)."""
    if task not in TASKS:
        raise TinymemError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if task == "digits-direction":
        fwd = digits_events(replace(sp, reverse=False), seed, which, limit, test_fraction)
        back = digits_events(replace(sp, reverse=True), seed, which, limit, test_fraction)  # same sensor, split
        back.labels = back.labels + 10
        return concat_events([fwd, back])
    images, labels = load_digits_images()
    split = split_indices(labels, test_fraction, seed)
    keep = {"all": np.arange(len(labels)), "train": np.flatnonzero(split == 0),
            "test": np.flatnonzero(split == 1)}.get(which)
    if keep is None:
        raise TinymemError(f"split must be all, train or test, got {which!r}")
    if limit is not None:
        keep = keep[:limit]
    if sp.digit_px + 2 * sp.amplitude > sp.size + 2:
        raise TinymemError(f"a {sp.digit_px}-pixel digit moving {sp.amplitude} pixels leaves a {sp.size}-pixel sensor")
    ev = simulate(_upsample(images[keep], sp.digit_px), sp, seed, keep)
    ev.labels, ev.split = labels[keep], split[keep]
    return ev


# ---------------------------------------------------------------------------------------------
# N-MNIST (bring the real thing)

def read_nmnist_bin(data: bytes) -> tuple[np.ndarray, ...]:
    """One N-MNIST recording: 5 bytes an event, x (u8), y (u8), then polarity (1 bit) and a
    23-bit big-endian microsecond timestamp (Orchard et al. 2015). Returns t, x, y, p sorted by t."""
    if len(data) % 5:
        raise TinymemError(f"an N-MNIST .bin file holds 5-byte events; this one has {len(data)} bytes")
    b = np.frombuffer(data, np.uint8).reshape(-1, 5).astype(np.int64)
    t = ((b[:, 2] & 0x7F) << 16) | (b[:, 3] << 8) | b[:, 4]
    o = np.argsort(t, kind="stable")
    return t[o], b[o, 0], b[o, 1], (b[o, 2] >> 7)


def nmnist_events(root: str | Path, which: str = "all", limit: int | None = None) -> EventSet:
    """N-MNIST as downloaded and unzipped: root/Train/<digit>/*.bin and root/Test/<digit>/*.bin
    (34×34 sensor). Labels from the digit folder, split from Train/Test."""
    root = Path(root)
    parts = {"all": ("Train", "Test"), "train": ("Train",), "test": ("Test",)}.get(which)
    if parts is None:
        raise TinymemError(f"split must be all, train or test, got {which!r}")
    files = [(f, int(f.parent.name), part == "Test") for part in parts
             for f in sorted((root / part).glob("[0-9]/*.bin"))]
    if not files:
        raise TinymemError(f"{root}: no N-MNIST recordings (expected Train/<digit>/*.bin and Test/<digit>/*.bin)")
    files = files[:limit] if limit is not None else files
    rec = [read_nmnist_bin(f.read_bytes()) for f, _, _ in files]
    duration = max((int(r[0][-1]) + 1 for r in rec if len(r[0])), default=1)
    cat = lambda k, dt: np.concatenate([r[k] for r in rec]).astype(dt)  # noqa: E731
    offsets = np.concatenate([[0], np.cumsum([len(r[0]) for r in rec])]).astype(np.int64)
    return EventSet(cat(0, np.int64), cat(1, np.int16), cat(2, np.int16), cat(3, np.int8), offsets, 34, 34, duration,
                    np.array([lab for _, lab, _ in files], np.int64), np.array([te for _, _, te in files], np.uint8))
