"""Float model inputs/outputs around an int8 graph: peel the boundary QUANTIZE/DEQUANTIZE ops.

TF's converter leaves float32 I/O unless told `inference_input_type = tf.int8`: the graph is int8
inside, with one QUANTIZE after each float input and one DEQUANTIZE before each float output.
The generated C stays int8 end to end; the host side converts at the boundary with exactly the
reference arithmetic (float32 divide, round half away from zero, clamp; float32 multiply back).
"""
from __future__ import annotations

import numpy as np

from .graph import Graph, Quant


def peel_float_boundary(g: Graph) -> Graph:
    g.input_adapters = [None] * len(g.inputs)
    g.output_adapters = [None] * len(g.outputs)
    for pos, t in enumerate(list(g.inputs)):
        users = g.consumers(t)
        if g.t(t).dtype != "float32" or len(users) != 1 or users[0].kind != "QUANTIZE":
            continue
        q = users[0]
        out = g.t(q.outputs[0])
        if out.dtype != "int8" or out.quant is None or out.quant.per_channel or t in g.outputs:
            continue
        g.inputs[pos] = out.index
        g.input_adapters[pos] = out.quant
        g.ops.remove(q)
    for pos, t in enumerate(list(g.outputs)):
        d = g.producer(t)
        if g.t(t).dtype != "float32" or d is None or d.kind != "DEQUANTIZE":
            continue
        src = g.t(d.inputs[0])
        if src.dtype != "int8" or src.quant is None or src.quant.per_channel or g.consumers(t):
            continue
        g.outputs[pos] = src.index
        g.output_adapters[pos] = src.quant
        g.ops.remove(d)
    for i, op in enumerate(g.ops):
        op.index = i
    return g


def quantize(x: np.ndarray, q: Quant) -> np.ndarray:
    """TFLite's reference AffineQuantize: round(x / scale) in float32, half away from zero, + zp."""
    scale, zp = q.scalar()
    v = np.asarray(x, np.float32) / np.float32(scale)
    r = np.where(v >= 0, np.floor(v + np.float32(0.5)), -np.floor(-v + np.float32(0.5)))
    return np.clip(r.astype(np.int64) + zp, -128, 127).astype(np.int8)


def dequantize(x: np.ndarray, q: Quant) -> np.ndarray:
    """TFLite's reference Dequantize: scale * (q - zp) in float32."""
    scale, zp = q.scalar()
    return (np.float32(scale) * (x.astype(np.int32) - zp).astype(np.float32)).astype(np.float32)


def sample_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of one sample of a model input/output: the tensor shape without a leading batch of 1.

    Arrays of N samples are [N, *sample_shape]; for the usual batch-1 model that is [N, *shape[1:]].
    """
    return tuple(shape[1:]) if len(shape) > 0 and shape[0] == 1 else tuple(shape)


def model_inputs(g: Graph, arrays: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """Check N-sample input arrays against the model and return them as int8 (quantizing float
    inputs of a float-I/O model), with N. Every problem is one TinymemError naming the input."""
    from ..errors import TinymemError

    if len(arrays) != len(g.inputs):
        raise TinymemError(f"model has {len(g.inputs)} input(s), got {len(arrays)} array(s)")
    adapters = g.input_adapters or [None] * len(g.inputs)
    out, n = [], None
    for pos, (arr, ti, adapter) in enumerate(zip(arrays, g.inputs, adapters)):
        t = g.t(ti)
        want = sample_shape(t.shape)
        if adapter is not None and np.issubdtype(arr.dtype, np.floating):
            arr = quantize(arr, adapter)
        if arr.dtype != np.int8:
            scale, zp = t.quant.scalar()
            accepted = "float32 or int8" if adapter is not None else "int8"
            raise TinymemError(f"input {pos}: dtype {arr.dtype}, expected {accepted} (int8 = round(x / {scale:.6g}) + {zp})")
        if arr.ndim == 0 or tuple(arr.shape[1:]) != want:
            raise TinymemError(f"input {pos}: shape {list(arr.shape)}, expected [N, {', '.join(map(str, want))}]")
        if n is not None and arr.shape[0] != n:
            raise TinymemError(f"inputs disagree on N: {n} vs {arr.shape[0]}")
        n = arr.shape[0]
        out.append(np.ascontiguousarray(arr))
    return out, int(n or 0)


def model_outputs(g: Graph, outs: list[np.ndarray]) -> list[np.ndarray]:
    """int8 outputs as the model's caller sees them: dequantized to float32 for float outputs."""
    adapters = g.output_adapters or [None] * len(outs)
    return [o if a is None else dequantize(o, a) for o, a in zip(outs, adapters)]
