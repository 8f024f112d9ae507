"""The independent reference: LiteRT with its BUILTIN_REF kernels (bit-exact with TFLite Micro)."""
from __future__ import annotations

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from tinymem.sim.host import sample_shape


def litert_run(model: bytes, inputs: list[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    """Run N samples (inputs[i]: [N, *shape[1:]]) one by one; returns outputs [N, *shape[1:]]."""
    arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
    it = Interpreter(model_content=model, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    ins, outs = it.get_input_details(), it.get_output_details()
    n = arrays[0].shape[0]
    results = [[] for _ in outs]
    for s in range(n):
        for d, a in zip(ins, arrays):
            it.set_tensor(d["index"], a[s].reshape(d["shape"]))
        it.invoke()
        for k, d in enumerate(outs):
            results[k].append(it.get_tensor(d["index"]).reshape(sample_shape(tuple(d["shape"]))).copy())
    return [np.stack(r) for r in results]
