"""Write small int8 .tflite models directly from the flatbuffer schema (no TensorFlow).

Per-op tests build one-op (or few-op) models with random shapes and quantization here, then
compare tinymem against LiteRT's BUILTIN_REF kernels running the very same bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import flatbuffers
import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as S

DTYPES = {"int8": S.TensorType.INT8, "int32": S.TensorType.INT32, "float32": S.TensorType.FLOAT32,
          "int16": S.TensorType.INT16, "int64": S.TensorType.INT64, "uint8": S.TensorType.UINT8}


@dataclass
class ModelBuilder:
    tensors: list = field(default_factory=list)
    buffers: list = field(default_factory=lambda: [S.BufferT()])
    ops: list = field(default_factory=list)
    opcodes: list = field(default_factory=list)

    def tensor(self, shape, dtype="int8", scale=None, zero_point=None, data=None, axis=0, name=None) -> int:
        t = S.TensorT()
        t.shape = list(shape)
        t.type = DTYPES[dtype]
        t.name = (name or f"t{len(self.tensors)}").encode()
        if scale is not None:
            q = S.QuantizationParametersT()
            q.scale = [float(s) for s in np.atleast_1d(scale)]
            zp = np.zeros(len(q.scale), np.int64) if zero_point is None else np.atleast_1d(zero_point)
            q.zeroPoint = [int(z) for z in zp]
            q.quantizedDimension = axis
            t.quantization = q
        if data is not None:
            b = S.BufferT()
            b.data = list(np.ascontiguousarray(np.asarray(data, dtype=dtype)).tobytes())
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        else:
            t.buffer = 0
        self.tensors.append(t)
        return len(self.tensors) - 1

    def act(self, shape, scale, zero_point, name=None) -> int:
        """An int8 activation tensor with per-tensor quantization."""
        return self.tensor(shape, "int8", scale, zero_point, name=name)

    def op(self, kind: str, inputs, outputs, options=None, options_type: str | None = None) -> None:
        code = getattr(S.BuiltinOperator, kind)
        if code not in self.opcodes:
            self.opcodes.append(code)
        o = S.OperatorT()
        o.opcodeIndex = self.opcodes.index(code)
        o.inputs = list(inputs)
        o.outputs = list(outputs)
        if options is not None:
            name = options_type or type(options).__name__[:-1]  # Conv2DOptionsT -> Conv2DOptions
            o.builtinOptionsType = getattr(S.BuiltinOptions, name)
            o.builtinOptions = options
        self.ops.append(o)

    def build(self, inputs, outputs) -> bytes:
        sg = S.SubGraphT()
        sg.tensors, sg.inputs, sg.outputs, sg.operators = self.tensors, list(inputs), list(outputs), self.ops
        sg.name = b"main"
        m = S.ModelT()
        m.version = 3
        m.description = b"tinymem test model"
        m.subgraphs = [sg]
        m.buffers = self.buffers
        codes = []
        for c in self.opcodes:
            oc = S.OperatorCodeT()
            oc.builtinCode = c
            oc.deprecatedBuiltinCode = min(c, 127)
            oc.version = 1
            codes.append(oc)
        m.operatorCodes = codes
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def options(name: str, **fields):
    """Schema options object by name, e.g. options('Conv2DOptions', padding=0, strideW=2)."""
    obj = getattr(S, name + "T")()
    for k, v in fields.items():
        if not hasattr(obj, k):
            raise AttributeError(f"{name} has no field {k}")
        setattr(obj, k, v)
    return obj


PADDING = {"SAME": S.Padding.SAME, "VALID": S.Padding.VALID}
ACT = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3}


def rand_scale(rng: np.random.Generator, lo=1e-3, hi=0.1) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def rand_int8(rng: np.random.Generator, shape) -> np.ndarray:
    return rng.integers(-128, 128, size=shape, dtype=np.int64).astype(np.int8)
