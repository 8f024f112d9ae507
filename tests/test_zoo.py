"""Whole models from models/ (built by examples/make_zoo.py) vs LiteRT BUILTIN_REF, bit for bit.

Each model runs its committed input set plus a few full-range random inputs in one compile, so a
failure's first index says which sample broke (0-3: saved inputs, 4+: random). A failure also
names the first op that diverges (see `first_divergence`), since "the logits differ" alone does
not say which of 65 kernels to open.
"""
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as S

from harness import assert_bit_exact, random_inputs
from reference import litert_run
from tinymem.model.tflite import parse_tflite
from tinymem.plan import make_plan
from tinymem.sim import build_host
from tinymem.sim.host import sample_shape

MODELS = Path(__file__).resolve().parent.parent / "models"
ZOO = ["mobilenetv2_035_96", "mobilenetv2_050_144", "mcunet_like", "dscnn_kws", "digits_cnn", "awkward"]
SMALLEST = ["digits_cnn", "awkward"]  # cheap enough to run under ASan/UBSan


def load(name):
    model = (MODELS / f"{name}.tflite").read_bytes()
    return model, parse_tflite(model, name), np.load(MODELS / f"{name}.inputs.npy")


@pytest.mark.parametrize("name", ZOO)
def test_zoo_files_consistent(name):
    """The committed zoo is what the benchmarks assume: fully int8, one input, inputs that fit it."""
    _, g, x = load(name)
    assert len(g.inputs) == 1
    t = g.t(g.inputs[0])
    assert x.dtype == np.int8 and x.shape == (4,) + sample_shape(t.shape)
    touched = {i for op in g.ops for i in op.inputs + op.outputs if i >= 0}
    assert {g.t(i).dtype for i in touched} <= {"int8", "int32"}, "a float tensor survived conversion"


def first_divergence(model: bytes, inputs, workdir: Path) -> str:
    """Rerun with every op output made a model output; name the first op that goes wrong.

    Keeping every tensor live also disables in-place and overlapping placement, so when all
    intermediates then agree the culprit is the memory plan rather than a kernel."""
    m = S.ModelT.InitFromPackedBuf(model, 0)
    m.subgraphs[0].outputs = [t for op in m.subgraphs[0].operators for t in op.outputs]
    b = flatbuffers.Builder(len(model) + 4096)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    probe = bytes(b.Output())
    g = parse_tflite(probe, "probe")
    ours = build_host(g, make_plan(g), workdir).run(inputs)
    bad = {t for t, a, r in zip(g.outputs, ours, litert_run(probe, inputs)) if not np.array_equal(a, r)}
    for op in g.ops:
        if op.outputs[0] in bad and not bad.intersection(op.inputs):
            return f"first divergent op: {op.describe()} (its inputs agree, its output does not)"
    return "every intermediate agrees when all are kept live: suspect in-place/overlapping placement"


def check(name, model, inputs, tmp_path, sanitize=None):
    try:
        assert_bit_exact(model, None, inputs=inputs, sanitize=sanitize, tmp_path=tmp_path / "model")
    except AssertionError as e:
        raise AssertionError(f"{name}: {e}\n{first_divergence(model, inputs, tmp_path / 'probe')}") from None


@pytest.mark.parametrize("name", ZOO)
def test_zoo_bit_exact(name, rng, tmp_path):
    model, g, saved = load(name)
    (extra,) = random_inputs(g, rng, n=2)
    check(name, model, [np.concatenate([saved, extra])], tmp_path)


@pytest.mark.parametrize("name", SMALLEST)
def test_zoo_sanitized(name, tmp_path):
    model, _, saved = load(name)
    check(name, model, [saved[:2]], tmp_path, sanitize=True)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_plan_not_worse_than_greedy(name):
    """Our planner must never need more SRAM than the TFLM-style greedy baseline (issue goal)."""
    _, g, _ = load(name)
    ours, greedy = make_plan(g, "tinymem"), make_plan(g, "greedy")
    assert ours.peak_sram_bytes <= greedy.peak_sram_bytes
