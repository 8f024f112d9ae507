from .graph import Graph, Op, Quant, Tensor
from .tflite import load_tflite

__all__ = ["Graph", "Op", "Quant", "Tensor", "load_tflite"]
