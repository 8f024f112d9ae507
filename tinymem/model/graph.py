"""The model IR every stage shares: tensors, ops and the graph that orders them.

Plain data only. Op semantics (MACs, kernels, overlap rules) live in `tinymem.ops`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DTYPE_BYTES = {"int8": 1, "uint8": 1, "int16": 2, "int32": 4, "int64": 8, "float32": 4, "float16": 2, "bool": 1}


@dataclass
class Quant:
    """Affine quantization: real = scale * (q - zero_point), per tensor or per channel on `axis`."""

    scale: np.ndarray  # float32, as stored in the flatbuffer; widened to double where TFLite does
    zero_point: np.ndarray  # int64
    axis: int = 0

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1

    def scalar(self) -> tuple[float, int]:
        """(scale, zero_point) of a per-tensor quantization."""
        return float(self.scale[0]), int(self.zero_point[0])


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    quant: Quant | None = None
    data: np.ndarray | None = None  # constant contents (weights, biases, shapes) or None

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.size * DTYPE_BYTES[self.dtype]

    def describe(self) -> str:
        return f"tensor {self.index} '{self.name}' {self.dtype}{list(self.shape)}"


@dataclass
class Op:
    index: int
    kind: str  # TFLite builtin name, e.g. "CONV_2D"
    inputs: list[int]  # tensor indices; -1 marks an omitted optional input
    outputs: list[int]
    options: dict = field(default_factory=dict)

    def describe(self) -> str:
        return f"op {self.index} ({self.kind})"


@dataclass
class Graph:
    name: str
    tensors: list[Tensor]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]
    # Quantization of a float model input/output whose QUANTIZE/DEQUANTIZE was peeled off (None:
    # the model's own I/O is int8). See tinymem/model/boundary.py.
    input_adapters: list[Quant | None] = field(default_factory=list)
    output_adapters: list[Quant | None] = field(default_factory=list)

    def t(self, index: int) -> Tensor:
        return self.tensors[index]

    def op_inputs(self, op: Op) -> list[Tensor | None]:
        return [self.tensors[i] if i >= 0 else None for i in op.inputs]

    def op_outputs(self, op: Op) -> list[Tensor]:
        return [self.tensors[i] for i in op.outputs]

    def activations(self) -> list[Tensor]:
        """Tensors that live in RAM at run time: every non-constant tensor an op or the graph touches."""
        used: set[int] = set(self.inputs) | set(self.outputs)
        for op in self.ops:
            used.update(i for i in op.inputs if i >= 0)
            used.update(op.outputs)
        return [self.tensors[i] for i in sorted(used) if not self.tensors[i].is_const]

    def consumers(self, tensor_index: int) -> list[Op]:
        return [op for op in self.ops if tensor_index in op.inputs]

    def producer(self, tensor_index: int) -> Op | None:
        for op in self.ops:
            if tensor_index in op.outputs:
                return op
        return None
