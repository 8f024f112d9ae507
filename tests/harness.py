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
