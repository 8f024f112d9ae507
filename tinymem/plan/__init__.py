"""Planners: from the IR to plain data (offsets, sizes) that codegen renders."""
from .memory import MemoryPlan, make_plan

__all__ = ["MemoryPlan", "make_plan"]
