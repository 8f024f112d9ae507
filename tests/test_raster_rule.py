"""`raster_min_delta` proven by brute force: run a raster kernel over one shared byte array.

The simulated kernel computes output byte t from its input bytes and writes it right after reading
them, t = 0, 1, 2, ... The input sits at out + delta in the same array. Each input byte holds a
value no output byte is ever written with, and the kernel's result for byte t is the tuple of
values it read, so a run is correct exactly when no read ever saw a clobbered byte, whatever
arithmetic a real kernel would do with those values.
"""
import numpy as np
import pytest

from tinymem.ops.base import raster_min_delta

NO_CONSTRAINT = -(1 << 62)


def run_kernel(reads: list[np.ndarray], n_in: int, delta: int) -> list[tuple]:
    n_out = len(reads)
    out = max(0, -delta)  # both buffers inside one array starting at 0
    inp = out + delta
    mem = np.full(max(out + n_out, inp + n_in), -(10**9), np.int64)
    mem[inp:inp + n_in] = np.arange(n_in)
    results = []
    for t, r in enumerate(reads):
        results.append(tuple(mem[inp + r]))
        mem[out + t] = -(t + 1)
    return results


def min_read(reads):
    return np.array([r.min() if r.size else np.inf for r in reads], np.float64)


# ----------------------------------------------------------------------------------------------
# access patterns of the kernels tinymem runs, and arbitrary ones


def elementwise(rng):
    n = int(rng.integers(1, 120))
    return [np.array([t]) for t in range(n)], n


def broadcast(rng):
    # [a, b] output from a [1, b] (repeat rows) or [a, 1] (repeat each value) input.
    a, b = (int(v) for v in rng.integers(1, 12, 2))
    if rng.random() < 0.5:
        return [np.array([t % b]) for t in range(a * b)], b
    return [np.array([t // b]) for t in range(a * b)], a


def fully_connected(rng):
    # Output row r (out_f bytes) reads all of input row r.
    batches, in_f, out_f = int(rng.integers(1, 5)), int(rng.integers(1, 20)), int(rng.integers(1, 20))
    return [np.arange(in_f) + (t // out_f) * in_f for t in range(batches * out_f)], batches * in_f


def window(rng, depthwise: bool):
    """NHWC conv / depthwise conv / pool: output (b, y, x, c) reads the window's in-image taps, of
    channel c // multiplier (depthwise, pools) or of every input channel (conv)."""
    b, h, w, c = 1 + int(rng.integers(0, 2)), *(int(v) for v in rng.integers(1, 7, 2)), int(rng.integers(1, 4))
    kh, kw, sh, sw, dh, dw = (int(v) for v in rng.integers(1, 4, 6))
    mult = int(rng.integers(1, 3)) if depthwise else 1
    out_c = c * mult if depthwise else int(rng.integers(1, 5))
    ekh, ekw = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    ph, pw = int(rng.integers(0, ekh)), int(rng.integers(0, ekw))  # total padding, SAME-like when > 0
    oh, ow = (h + ph - ekh) // sh + 1, (w + pw - ekw) // sw + 1
    if oh < 1 or ow < 1:
        return window(rng, depthwise)
    reads = []
    for bi in range(b):
        for oy in range(oh):
            for ox in range(ow):
                for oc in range(out_c):
                    taps = [((bi * h + iy) * w + ix) * c + ci
                            for iy in (oy * sh - ph // 2 + ky * dh for ky in range(kh)) if 0 <= iy < h
                            for ix in (ox * sw - pw // 2 + kx * dw for kx in range(kw)) if 0 <= ix < w
                            for ci in ([oc // mult] if depthwise else range(c))]
                    reads.append(np.array(sorted(taps), dtype=np.int64))
    return reads, b * h * w * c


def upsample(rng):
    n, k = int(rng.integers(1, 40)), int(rng.integers(1, 4))
    return [np.array([t // k]) for t in range(n * k)], n


def reverse(rng):
    n = int(rng.integers(1, 60))
    return [np.array([n - 1 - t]) for t in range(n)], n


def pad(rng):
    # Zero padding on both sides of each row: border bytes read nothing.
    rows, cols, left, right = (int(v) for v in rng.integers(1, 6, 4))
    width = left + cols + right
    return [np.array([(t // width) * cols + t % width - left]) if left <= t % width < left + cols
            else np.array([], np.int64) for t in range(rows * width)], rows * cols


def arbitrary(rng):
    n_out, n_in = int(rng.integers(1, 60)), int(rng.integers(1, 60))
    return [np.unique(rng.integers(0, n_in, int(rng.integers(0, 4)))) for _ in range(n_out)], n_in


PATTERNS = {
    "elementwise": elementwise, "broadcast": broadcast, "fully_connected": fully_connected,
    "depthwise": lambda rng: window(rng, True), "conv": lambda rng: window(rng, False),
    "upsample": upsample, "reverse": reverse, "pad": pad, "arbitrary": arbitrary,
}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("pattern", PATTERNS)
def test_min_delta_is_exactly_the_safe_threshold(pattern, seed):
    rng = np.random.default_rng([seed, list(PATTERNS).index(pattern)])
    reads, n_in = PATTERNS[pattern](rng)
    n_out = len(reads)
    expected = [tuple(r) for r in reads]
    d = raster_min_delta(min_read(reads))
    # Every delta at which the two buffers share a byte, and one step beyond on each side.
    safe = {delta: run_kernel(reads, n_in, delta) == expected for delta in range(-n_in - 1, n_out + 2)}
    if d == NO_CONSTRAINT:
        assert all(safe.values())  # no byte is read after a lower-or-equal byte is written
        return
    assert all(ok for delta, ok in safe.items() if delta >= d), "a delta at or above min_delta corrupted"
    # Tight: one byte lower and some write lands on a byte a later output still reads.
    assert not run_kernel(reads, n_in, d - 1) == expected


def test_patterns_exercise_both_signs_and_no_constraint():
    # The random patterns above are not vacuous: they produce positive, negative and no rules.
    ds = [raster_min_delta(min_read(PATTERNS[p](np.random.default_rng([s, i]))[0]))
          for i, p in enumerate(PATTERNS) for s in range(6)]
    assert any(d > 0 for d in ds) and any(NO_CONSTRAINT < d < 0 for d in ds) and NO_CONSTRAINT in ds


def test_known_rules():
    assert raster_min_delta(np.arange(10.0)) == 0  # element-wise runs fully in place
    assert raster_min_delta(np.zeros(8)) == 7  # one row: only the last output byte may overlap
    assert raster_min_delta(np.arange(0.0, 20.0, 2.0)) == -1  # stride 2: input may start 1 below
    assert raster_min_delta(np.array([np.inf, np.inf])) == NO_CONSTRAINT
    assert raster_min_delta(np.array([3.0])) == NO_CONSTRAINT
