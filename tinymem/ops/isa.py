"""Which kernel set codegen targets: the portable C99 kernels, or the Armv7E-M DSP kernels
(firmware/kernels/armv7em) where a layer meets their conditions.

The choice changes what an op reports (its kernel, scratch bytes, overlap rule), so the memory
plan and the generated C must agree on it: `make_plan(..., isa=...)` plans under it and records
it in `MemoryPlan.isa`, and `render_model` renders under the plan's. Ops read it with
`current_isa()`; `kernel_isa()` sets it for a block (a context variable, so nested and
concurrent plans do not leak into each other).
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

PORTABLE = "portable"
ARMV7EM = "armv7em"
ISAS = (PORTABLE, ARMV7EM)
# Cores with the DSP extension (SMLAD, SXTB16, SSAT...): Armv7E-M.
DSP_CORES = ("cortex-m4", "cortex-m7")

_ISA: ContextVar[str] = ContextVar("tinymem_kernel_isa", default=PORTABLE)


def current_isa() -> str:
    return _ISA.get()


@contextmanager
def kernel_isa(isa: str):
    """Plan and render with this kernel set inside the block."""
    if isa not in ISAS:
        raise ValueError(f"unknown kernel set '{isa}'; choose one of {', '.join(ISAS)}")
    token = _ISA.set(isa)
    try:
        yield isa
    finally:
        _ISA.reset(token)


def core_isa(core: str) -> str:
    """The kernel set a board's core runs fastest: DSP kernels on Cortex-M4/M7, else portable
    (Cortex-M0+/M3 have no DSP instructions, and the host takes the portable reference)."""
    return ARMV7EM if core in DSP_CORES else PORTABLE


__all__ = ["ARMV7EM", "DSP_CORES", "ISAS", "PORTABLE", "core_isa", "current_isa", "kernel_isa"]
