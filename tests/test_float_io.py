"""Models with float32 I/O (TF's converter default): the boundary QUANTIZE/DEQUANTIZE run on the host
side with the reference arithmetic, the generated C stays int8, results equal LiteRT's exactly."""
import numpy as np

from modelgen import ModelBuilder, options, rand_int8
from reference import litert_run
from tinymem.model.tflite import parse_tflite
from tinymem.plan import make_plan
from tinymem.sim import build_host


def float_io_fc(rng, in_f=20, out_f=7):
    m = ModelBuilder()
    xf = m.tensor([1, in_f], "float32")
    xq = m.act([1, in_f], 0.037, 5)
    w = m.tensor([out_f, in_f], "int8", 0.01, 0, rand_int8(rng, (out_f, in_f)))
    yq = m.act([1, out_f], 0.11, -9)
    yf = m.tensor([1, out_f], "float32")
    m.op("QUANTIZE", [xf], [xq])
    m.op("FULLY_CONNECTED", [xq, w, -1], [yq], options("FullyConnectedOptions"))
    m.op("DEQUANTIZE", [yq], [yf])
    return m.build([xf], [yf])


def test_float_io_model_matches_litert(rng, tmp_path):
    model = float_io_fc(rng)
    g = parse_tflite(model)
    assert [op.kind for op in g.ops] == ["FULLY_CONNECTED"]  # the boundary ops were peeled off
    assert g.input_adapters[0] is not None and g.output_adapters[0] is not None
    # Values on and near rounding ties of the input scale, plus out-of-range ones that clamp.
    x = np.concatenate([
        rng.normal(0, 3, (6, 20)),
        (np.arange(-10, 10) + 0.5)[None].repeat(2, 0) * 0.037,
        np.full((1, 20), 100.0), np.full((1, 20), -100.0),
    ]).astype(np.float32)
    ours = build_host(g, make_plan(g), tmp_path).run([x])[0]
    ref = litert_run(model, [x])[0]
    assert ours.dtype == np.float32 and np.array_equal(ours, ref)


def test_float_io_model_also_takes_int8(rng, tmp_path):
    model = float_io_fc(rng)
    g = parse_tflite(model)
    host = build_host(g, make_plan(g), tmp_path)
    x = rng.normal(0, 2, (3, 20)).astype(np.float32)
    from tinymem.model.boundary import quantize
    assert np.array_equal(host.run([x])[0], host.run([quantize(x, g.input_adapters[0])])[0])


def test_converter_float_io_zoo_model(tmp_path):
    """The real thing: TF's converter with its default float32 I/O (models/digits_cnn_float_io)."""
    from pathlib import Path
    models = Path(__file__).resolve().parent.parent / "models"
    model = (models / "digits_cnn_float_io.tflite").read_bytes()
    x = np.load(models / "digits_cnn_float_io.inputs.npy")
    x = np.concatenate([x, np.random.default_rng(3).uniform(0, 1, (4,) + x.shape[1:]).astype(np.float32)])
    g = parse_tflite(model)
    ours = build_host(g, make_plan(g), tmp_path).run([x])[0]
    assert np.array_equal(ours, litert_run(model, [x])[0])
