"""Import a .tflite flatbuffer into the IR, in pure Python (the `tflite` schema package).

Every failure becomes a TinymemError that names the file and what was wrong with it, because a
user who hands us a truncated download should read one line, not a flatbuffers traceback.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tflite

from ..errors import TinymemError, UnsupportedError
from .boundary import peel_float_boundary
from .graph import Graph, Op, Quant, Tensor

# TensorType enum values of the schema -> numpy dtype names.
_TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16", 9: "int8"}
_OPCODE_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
_OPTION_NAMES = {v: k for k, v in vars(tflite.BuiltinOptions).items() if not k.startswith("_")}
MAX_TENSOR_BYTES = 1 << 31  # beyond any MCU's memory: a larger shape means a corrupt file
_SKIP_GETTERS = ("GetRootAs", "Init", "_")
_SKIP_SUFFIXES = ("Length", "IsNone", "BufferHasIdentifier")


def load_tflite(path: str | Path) -> Graph:
    path = Path(path)
    if not path.exists():
        raise TinymemError(f"{path}: no such file")
    if path.is_dir():
        raise TinymemError(f"{path}: is a directory, expected a .tflite file")
    return parse_tflite(path.read_bytes(), str(path))


def parse_tflite(buf: bytes, name: str = "model") -> Graph:
    if len(buf) < 8:
        raise TinymemError(f"{name}: {len(buf)} bytes is too short to be a TFLite model")
    if buf[4:8] != b"TFL3":
        raise TinymemError(
            f"{name}: not a TFLite flatbuffer (bytes 4-7 are {bytes(buf[4:8])!r}, expected b'TFL3')"
        )
    try:
        return _Reader(buf, name).graph()
    except TinymemError:
        raise
    except Exception as exc:  # flatbuffers raises whatever a bad offset happens to trigger
        raise TinymemError(
            f"{name}: truncated or corrupt flatbuffer ({type(exc).__name__}: {exc})"
        ) from None


class _Reader:
    def __init__(self, buf: bytes, name: str):
        self.buf = buf
        self.name = name
        self.model = tflite.Model.GetRootAs(buf, 0)

    def count(self, n: int, what: str) -> int:
        # A garbled length could make us loop for minutes; no vector can be longer than the file.
        if n < 0 or n > len(self.buf):
            raise TinymemError(f"{self.name}: corrupt flatbuffer ({what} claims {n} entries)")
        return n

    def graph(self) -> Graph:
        m = self.model
        if self.count(m.SubgraphsLength(), "subgraph list") != 1:
            raise UnsupportedError(
                f"{self.name}: {m.SubgraphsLength()} subgraphs; tinymem supports single-subgraph models"
            )
        sg = m.Subgraphs(0)
        tensors = [self.tensor(sg.Tensors(i), i) for i in range(self.count(sg.TensorsLength(), "tensor list"))]
        ops = [self.op(sg.Operators(i), i) for i in range(self.count(sg.OperatorsLength(), "operator list"))]
        inputs = [int(i) for i in self._ints(sg.InputsAsNumpy())]
        outputs = [int(i) for i in self._ints(sg.OutputsAsNumpy())]
        n = len(tensors)
        for where, idx, optional in (
            [("graph input", i, False) for i in inputs] + [("graph output", i, False) for i in outputs]
            + [(f"op {op.index} input", i, True) for op in ops for i in op.inputs]
            + [(f"op {op.index} output", i, False) for op in ops for i in op.outputs]
        ):
            if not (0 <= idx < n or (optional and idx == -1)):
                raise TinymemError(f"{self.name}: corrupt flatbuffer ({where} refers to tensor {idx}; there are {n})")
        name = sg.Name().decode(errors="replace") if sg.Name() else "model"
        return peel_float_boundary(Graph(name=name, tensors=tensors, ops=ops, inputs=inputs, outputs=outputs))

    @staticmethod
    def _ints(arr) -> list[int]:
        return [] if isinstance(arr, int) else [int(x) for x in arr]

    def tensor(self, t, index: int) -> Tensor:
        ttype = t.Type()
        if ttype not in _TENSOR_TYPES:
            raise UnsupportedError(f"{self.name}: tensor {index} has unsupported type id {ttype}")
        dtype = _TENSOR_TYPES[ttype]
        shape = tuple(self._ints(t.ShapeAsNumpy()))
        name = t.Name().decode(errors="replace") if t.Name() else f"t{index}"
        tensor = Tensor(index=index, name=name, shape=shape, dtype=dtype)
        if any(d < 0 for d in shape):
            raise UnsupportedError(f"{self.name}: {tensor.describe()} has a dynamic or negative dimension")
        if tensor.nbytes > MAX_TENSOR_BYTES:
            raise TinymemError(
                f"{self.name}: {tensor.describe()} would take {tensor.nbytes:,} bytes: corrupt, or far too large "
                "for a microcontroller"
            )
        q = t.Quantization()
        if q is not None and q.ScaleLength() > 0:
            self.count(q.ScaleLength(), f"tensor {index} scale list")
            tensor.quant = Quant(
                scale=np.asarray(q.ScaleAsNumpy(), dtype=np.float32).copy(),
                zero_point=np.asarray(q.ZeroPointAsNumpy(), dtype=np.int64).copy()
                if q.ZeroPointLength() > 0 else np.zeros(q.ScaleLength(), np.int64),
                axis=q.QuantizedDimension(),
            )
        tensor.data = self.buffer_data(t.Buffer(), tensor)
        return tensor

    def buffer_data(self, buffer_index: int, tensor: Tensor) -> np.ndarray | None:
        if buffer_index == 0 or buffer_index >= self.model.BuffersLength():
            return None
        b = self.model.Buffers(buffer_index)
        if b.Offset() > 1:  # large models keep data after the flatbuffer, addressed by offset
            start, size = b.Offset(), b.Size()
            if start + size > len(self.buf):
                raise TinymemError(
                    f"{self.name}: {tensor.describe()} data at bytes {start}..{start + size} "
                    f"lies beyond the end of the file ({len(self.buf)} bytes): truncated file"
                )
            raw = bytes(self.buf[start:start + size])
        else:
            if b.DataLength() == 0:
                return None
            raw = b.DataAsNumpy().tobytes()
        if len(raw) != tensor.nbytes:
            raise TinymemError(
                f"{self.name}: {tensor.describe()} has {len(raw)} bytes of data, its shape needs {tensor.nbytes}"
            )
        return np.frombuffer(raw, dtype=np.dtype(tensor.dtype).newbyteorder("<")).reshape(tensor.shape).copy()

    def op(self, o, index: int) -> Op:
        code_index = o.OpcodeIndex()
        if code_index >= self.model.OperatorCodesLength():
            raise TinymemError(f"{self.name}: op {index} refers to opcode {code_index}, which does not exist")
        code = self.model.OperatorCodes(code_index)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        kind = _OPCODE_NAMES.get(builtin, f"BUILTIN_{builtin}")
        if kind == "CUSTOM":
            custom = code.CustomCode()
            kind = "CUSTOM:" + (custom.decode(errors="replace") if custom else "?")
        return Op(
            index=index,
            kind=kind,
            inputs=self._ints(o.InputsAsNumpy()),
            outputs=self._ints(o.OutputsAsNumpy()),
            options=self.options(o),
        )

    def options(self, o) -> dict:
        """Every scalar and vector field of the op's options table, by its schema name."""
        otype = o.BuiltinOptionsType()
        table = o.BuiltinOptions()
        if otype == 0 or table is None or otype not in _OPTION_NAMES:
            return {}
        module = sys.modules.get(f"tflite.{_OPTION_NAMES[otype]}")
        cls = getattr(tflite, _OPTION_NAMES[otype], None)
        if module is None or cls is None:
            return {}
        opts = cls()
        opts.Init(table.Bytes, table.Pos)
        out: dict = {}
        for attr in dir(cls):
            if attr.startswith(_SKIP_GETTERS) or attr.endswith(_SKIP_SUFFIXES):
                continue
            getter = getattr(opts, attr)
            if not callable(getter):
                continue
            if attr.endswith("AsNumpy"):
                out[attr[: -len("AsNumpy")]] = self._ints(getter())
                continue
            if callable(getattr(opts, attr + "AsNumpy", None)):
                continue  # the element getter of a vector: read through AsNumpy above
            try:
                out[attr] = getter()
            except TypeError:
                continue  # a getter that takes an index (a vector of tables): none we use
        return out
