"""The op registry: TFLite builtin name -> OpDef. Adding an op = one OpDef, one template, one test."""
from __future__ import annotations

from ..errors import UnsupportedError
from ..model.graph import Graph, Op
from .base import OpDef

REGISTRY: dict[str, OpDef] = {}


def register(cls: type[OpDef]) -> type[OpDef]:
    inst = cls()
    for kind in cls.kinds:
        REGISTRY[kind] = inst
    return cls


def supported_ops() -> list[str]:
    return sorted(REGISTRY)


def opdef(op: Op) -> OpDef:
    d = REGISTRY.get(op.kind)
    if d is None:
        raise UnsupportedError(
            f"{op.describe()} is not supported; supported ops: {', '.join(supported_ops())}"
        )
    return d


def validate_graph(g: Graph) -> None:
    """Raise a specific error for the first op tinymem cannot run."""
    if not g.ops:
        raise UnsupportedError(f"model '{g.name}' has no ops")
    for op in g.ops:
        d = opdef(op)
        try:
            d.validate(op, g)
        except (IndexError, KeyError, ValueError, TypeError, AttributeError) as exc:
            # A malformed op (wrong arity, missing quantization...) in a corrupt or hand-made file.
            raise UnsupportedError(f"{op.describe()}: malformed op ({type(exc).__name__}: {exc})") from None


# Importing the families fills REGISTRY.
from . import activation, conv, elementwise, fc, pool, shape  # noqa: E402,F401
