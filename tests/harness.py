"""Compile a model with tinymem, run it on the host (optionally under ASan/UBSan) and compare with
LiteRT BUILTIN_REF bit for bit."""
from __future__ import annotations

import os

import numpy as np

from reference import litert_run
from tinymem.model.tflite import parse_tflite
from tinymem.plan import make_plan
from tinymem.sim import build_host
from tinymem.sim.host import sample_shape

SANITIZE = os.environ.get("TINYMEM_SANITIZE", "0") == "1"


def random_inputs(g, rng, n=3):
    return [rng.integers(-128, 128, size=(n,) + sample_shape(g.t(i).shape)).astype(np.int8) for i in g.inputs]


def assert_bit_exact(model: bytes, rng, n=3, inputs=None, planner="tinymem", sanitize=None, tmp_path=None,
                     align=None):
    """Plan, generate, compile and run `model` on the host; fail unless every output equals LiteRT's.

    With the default overlap-aware planner a one-op model's output overlaps its input whenever
    the op permits it, so these runs also check each kernel's overlap rule."""
    g = parse_tflite(model, "test model")
    plan = make_plan(g, planner, align=align)
    host = build_host(g, plan, tmp_path, sanitize=SANITIZE if sanitize is None else sanitize)
    inputs = inputs if inputs is not None else random_inputs(g, rng, n)
    ours = host.run(inputs)
    ref = litert_run(model, inputs)
    for k, (a, b) in enumerate(zip(ours, ref)):
        if not np.array_equal(a, b):
            diff = np.argwhere(a != b)
            first = tuple(diff[0])
            raise AssertionError(
                f"output {k}: {len(diff)} of {a.size} values differ; first at {first}: "
                f"tinymem {a[first]} vs LiteRT {b[first]}; max |diff| {np.abs(a.astype(int) - b).max()}"
            )
    return plan, ours


def assert_bit_exact_at_margin(model: bytes, rng, n=2, sanitize=None, tmp_path=None) -> int:
    """For each overlap the planner permits, place that output/input pair exactly at the permit's
    minimum margin (even a negative one, which the planner never needs to reach), everything else
    apart, then compile, run and compare with LiteRT. A rule that is one byte too generous shows
    up here. Returns how many pairs were checked."""
    from tinymem.plan.arena import Placement, check_placement

    g = parse_tflite(model, "test model")
    plan = make_plan(g, "tinymem", align=1)
    lt = plan.lifetimes
    inputs = random_inputs(g, rng, n)
    ref = litert_run(model, inputs)
    for k, p in enumerate(lt.permits):
        offsets = {p.out: max(0, -p.min_delta)}
        offsets[p.inp] = offsets[p.out] + p.min_delta
        end = max(offsets[b] + lt.buffers[b].size for b in (p.inp, p.out))
        for b in lt.buffers:
            if b.id not in offsets:
                offsets[b.id], end = end, end + b.size
        placement = Placement(offsets, end)
        check_placement(lt, placement)
        plan.offsets, plan.arena_bytes = placement.offsets, placement.arena_bytes
        workdir = None if tmp_path is None else tmp_path / f"margin{k}"
        host = build_host(g, plan, workdir, sanitize=SANITIZE if sanitize is None else sanitize)
        for a, b in zip(host.run(inputs), ref):
            np.testing.assert_array_equal(a, b, err_msg=f"output at the exact margin {p.min_delta} of {p}")
    return len(lt.permits)
