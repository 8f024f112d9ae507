"""Allocation traces: the CSV format, its line-numbered errors, and traces from firmware events."""
import pytest

from tinymem.alloc import synth
from tinymem.alloc.trace import ALLOC, FREE, MEMALIGN, REALLOC, from_events, load_trace, parse_lines
from tinymem.errors import TinymemError


def parse(text: str):
    return parse_lines(text.strip().splitlines(), "t.csv")


def test_ops_and_slots():
    t = parse("""
        # a comment, then blank lines are skipped

        op,id,size
        alloc,a,16
        alloc,b,100
        free,a,
        realloc,b,300
        memalign,c,40,64
        calloc,a,8
        realloc,b,0
        free,c
    """)
    assert [o[0] for o in t.ops] == [ALLOC, ALLOC, FREE, REALLOC, MEMALIGN, 3, REALLOC, FREE]
    assert t.ops[4] == (MEMALIGN, 0, 40, 64)  # a's slot was free again: the lowest is reused
    assert t.n_slots == 3  # b, c and the second a live at once
    p = t.profile()
    assert p.peak_live_bytes == 300 + 40 + 8 and p.peak_live_blocks == 3 and p.largest_request == 300


@pytest.mark.parametrize("text, where, what", [
    ("op,id\nalloc,a,1", ":1:", "header"),
    ("op,id,size\nalloc,a,16\nmalloc,b,3", ":3:", "unknown op 'malloc'"),
    ("op,id,size\nfree,a,", ":2:", "not live"),
    ("op,id,size\nalloc,a,16\nfree,a,\nfree,a,", ":4:", "not live"),
    ("op,id,size\nalloc,a,16\nalloc,a,8", ":3:", "still live (allocated at line 2)"),
    ("op,id,size\nalloc,a,sixteen", ":2:", "whole number"),
    ("op,id,size\nalloc,a,-1", ":2:", "outside"),
    ("op,id,size\nmemalign,a,8,24", ":2:", "power of two"),
    ("op,id,size\nmemalign,a,8", ":2:", "takes 4 fields"),
    ("op,id,size\nalloc,a,8,8,8", ":2:", "takes 3 fields"),
    ("op,id,size\nrealloc,x,8", ":2:", "not live"),
    ("op,id,size\nfree,a,12", ":2:", "no size"),
    ("op,id,size\nalloc,,8", ":2:", "empty"),
    ("", "", "empty trace"),
])
def test_malformed_lines_are_named(text, where, what):
    with pytest.raises(TinymemError) as e:
        parse_lines(text.splitlines(), "t.csv")
    msg = str(e.value)
    assert msg.startswith("t.csv") and where in msg and what in msg and "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(TinymemError, match="no such trace file"):
        load_trace(tmp_path / "nope.csv")


def test_csv_round_trip(tmp_path):
    t = synth.net_stack(2, 3000)
    t.write_csv(tmp_path / "t.csv")
    back = load_trace(tmp_path / "t.csv")
    assert back.ops == t.ops and back.n_slots == t.n_slots


def test_pointer_events_follow_blocks_through_realloc():
    t = from_events([("a", 0, 16, 0, 0x100), ("a", 0, 32, 0, 0x200), ("r", 0x100, 64, 0, 0x300),
                     ("f", 0x200, 0, 0, 0), ("a", 0, 8, 0, 0x200), ("r", 0x300, 0, 0, 0), ("f", 0x200, 0, 0, 0),
                     ("r", 0, 24, 0, 0x400), ("f", 0x400, 0, 0, 0), ("a", 0, 99, 0, 0)])
    assert [(o[0], o[1]) for o in t.ops] == [(ALLOC, 0), (ALLOC, 1), (REALLOC, 0), (FREE, 1), (ALLOC, 1),
                                             (REALLOC, 0), (FREE, 1), (ALLOC, 0), (FREE, 0)]


@pytest.mark.parametrize("name", sorted(synth.WORKLOADS))
def test_synthetic_workloads_are_valid_and_reproducible(name):
    a, b = synth.WORKLOADS[name](7, 4000), synth.WORKLOADS[name](7, 4000)
    assert a.ops == b.ops and len(a) >= 4000 and a.profile().peak_live_bytes > 0
