"""Event data: the saccade simulator, the .npz format (bring your own data), binning."""
import numpy as np
import pytest

from tinymem.errors import TinymemError
from tinymem.lsm.events import (EventSet, SaccadeParams, bin_events, digits_events, event_counts, load_events,
                                saccade_path)


@pytest.fixture(scope="module")
def digits():
    return digits_events(SaccadeParams(), seed=0, which="all", limit=30)


def test_saccades_form_a_closed_triangle_of_three_legs():
    sp = SaccadeParams()
    dy, dx = saccade_path(sp)
    assert (dy[0], dx[0]) == pytest.approx((dy[-1], dx[-1]))
    k = len(dy) - 1
    legs = [(dy[i * k // 3], dx[i * k // 3]) for i in range(3)]
    sides = [np.hypot(a[0] - b[0], a[1] - b[1]) for a, b in zip(legs, legs[1:] + legs[:1])]
    assert max(sides) <= 1.2 * sp.amplitude and min(sides) >= 0.8 * sp.amplitude


def test_simulated_recordings_look_like_n_mnist(digits):
    ev = digits
    per = np.diff(ev.offsets)
    assert len(ev) == 30 and per.min() > 300 and ev.labels is not None and set(ev.split) <= {0, 1}
    for i in range(3):
        t, x, y, p = ev.sample(i)
        assert np.all(np.diff(t) >= 0) and t.max() < ev.duration_us
        assert 0.3 < p.mean() < 0.7  # ON and OFF both, as an edge passes both ways
        # most events come while the sensor moves: few in the pauses at the triangle's corners
        third = ev.duration_us // 3
        near_corner = np.minimum(t % third, third - t % third) < third // 20
        assert near_corner.mean() < 0.1


def test_same_arguments_same_events_and_a_subset_simulates_identically(digits):
    again = digits_events(SaccadeParams(), seed=0, which="all", limit=30)
    assert all(np.array_equal(getattr(digits, k), getattr(again, k)) for k in ("t", "x", "y", "p", "offsets"))
    test_only = digits_events(SaccadeParams(), seed=0, which="test", limit=3)
    full = digits_events(SaccadeParams(), seed=0, which="all", limit=200)
    idx = np.flatnonzero(full.split == 1)[:3]
    sub = full.subset(idx)
    assert np.array_equal(sub.t, test_only.t) and np.array_equal(sub.labels, test_only.labels)


def test_save_load_round_trip_and_binning(digits, tmp_path):
    digits.save(tmp_path / "ev.npz")
    ev = load_events(tmp_path / "ev.npz")
    assert np.array_equal(ev.t, digits.t) and np.array_equal(ev.split, digits.split)
    frames = bin_events(ev, 50, 256)
    assert frames.shape == (30, 50, 256) and frames.dtype == bool
    on = bin_events(ev, 50, 256, "on")
    assert np.all(frames >= on) and 0 < on.sum() < frames.sum()
    counts = event_counts(ev, 256)
    assert counts.shape == (30, 512) and np.array_equal(counts.sum(1), np.diff(ev.offsets))


def test_a_larger_sensor_is_centre_cropped_like_the_paper(tmp_path):
    """N-MNIST is 34×34: the reservoir sees the centre 16×16."""
    t = np.array([0, 10, 20, 30], np.int64)
    x, y = np.array([9, 24, 33, 0], np.int16), np.array([9, 24, 0, 0], np.int16)
    ev = EventSet(t, x, y, np.array([1, 0, 1, 1], np.int8), np.array([0, 4]), 34, 34, 100)
    frames = bin_events(ev, 10, 256)
    assert frames.sum() == 2 and frames[0, 0, 0] and frames[0, 1, 255]


def test_pre_binned_frames_are_accepted(tmp_path):
    frames = np.zeros((2, 50, 16, 16), np.uint8)
    frames[1, 3, 2, 5] = 4
    np.savez(tmp_path / "f.npz", format="tinymem-events-v1", frames=frames, width=16, height=16,
             duration_us=300000, labels=np.array([0, 1]))
    b = bin_events(load_events(tmp_path / "f.npz"), 50, 256)
    assert b.sum() == 1 and b[1, 3, 2 * 16 + 5]


@pytest.mark.parametrize("change, message", [
    ({"format": "nope"}, "not a tinymem event file"),
    ({"x": np.array([0, 99], np.int16)}, "outside the 16×16 sensor"),
    ({"offsets": np.array([0, 3])}, "'offsets' must rise"),
    ({"p": np.array([0, 5], np.int8)}, "'p' must be 0"),
    ({"t": np.array([0, 10**9])}, "outside"),
    ({"labels": np.array([1, 2, 3])}, "'labels' has 3 entries for 1 samples"),
])
def test_bad_event_files_are_one_line(tmp_path, change, message):
    good = {"format": "tinymem-events-v1", "t": np.array([0, 5]), "x": np.array([1, 2], np.int16),
            "y": np.array([1, 2], np.int16), "p": np.array([0, 1], np.int8), "offsets": np.array([0, 2]),
            "width": 16, "height": 16, "duration_us": 1000}
    np.savez(tmp_path / "bad.npz", **(good | change))
    with pytest.raises(TinymemError, match=message):
        load_events(tmp_path / "bad.npz")
    with pytest.raises(TinymemError, match="no such file"):
        load_events(tmp_path / "missing.npz")


def test_n_mnist_recordings_convert(tmp_path, capsys):
    """Files written to N-MNIST's published layout: 5-byte events, 23-bit big-endian timestamps."""
    from tinymem.cli import main
    from tinymem.lsm.events import read_nmnist_bin

    def event(x, y, p, t):
        return bytes([x, y, (p << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF])

    for part, digit, events in (("Train", 3, [(1, 2, 1, 70000), (33, 33, 0, 5)]), ("Test", 7, [(17, 17, 1, 300000)])):
        (tmp_path / part / str(digit)).mkdir(parents=True)
        (tmp_path / part / str(digit) / "00001.bin").write_bytes(b"".join(event(*e) for e in events))
    t, x, y, p = read_nmnist_bin(event(1, 2, 1, 70000) + event(33, 33, 0, 5))
    assert t.tolist() == [5, 70000] and x.tolist() == [33, 1] and p.tolist() == [0, 1]
    assert main(["lsm", "events", "nmnist", "--root", str(tmp_path), "-o", str(tmp_path / "n.npz")]) == 0
    ev = load_events(tmp_path / "n.npz")
    assert (ev.width, ev.labels.tolist(), ev.split.tolist()) == (34, [3, 7], [0, 1])
    frames = bin_events(ev, 50, 256)  # centre 16×16 of 34×34: only (17, 17) is inside
    assert frames.sum() == 1 and frames[1, 49, (17 - 9) * 16 + (17 - 9)]
    assert main(["lsm", "events", "nmnist", "--root", str(tmp_path / "none"), "-o", str(tmp_path / "x.npz")]) == 1
    assert "no N-MNIST recordings" in capsys.readouterr().err


def test_direction_task_keeps_the_forward_recordings_and_hides_the_class_in_event_order(digits):
    both = digits_events(SaccadeParams(), seed=0, which="all", limit=30, task="digits-direction")
    n = len(digits)
    assert len(both) == 2 * n
    assert np.array_equal(both.labels[:n], digits.labels) and np.array_equal(both.labels[n:], digits.labels + 10)
    assert np.array_equal(both.split[:n], both.split[n:])  # an image is test data in both directions
    for k in ("t", "x", "y", "p"):  # the forward half is exactly the plain task
        assert np.array_equal(getattr(both, k)[:both.offsets[n]], getattr(digits, k))
    fwd, back = both.subset(np.arange(n)), both.subset(np.arange(n, 2 * n))
    cf, cb = event_counts(fwd, 256).astype(float), event_counts(back, 256).astype(float)
    # Per-pixel ON/OFF counts of the two directions nearly agree (a closed loop crosses each edge
    # both ways), while the first third of the recording differs: the class is in the order.
    count_gap = np.abs(cf - cb).sum() / cf.sum()
    early = lambda ev: bin_events(ev, 3, 256)[:, 0].astype(float)  # noqa: E731
    early_gap = np.abs(early(fwd) - early(back)).sum() / early(fwd).sum()
    assert count_gap < 0.5 * early_gap


def test_unknown_task_is_one_line_error():
    with pytest.raises(TinymemError, match="task must be one of"):
        digits_events(SaccadeParams(), limit=2, task="letters")
