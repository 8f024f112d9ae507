"""Jinja2 code generation: (IR, memory plan) -> C sources. All emitted C comes from templates/."""
from .render import FIRMWARE_DIR, KERNEL_DIR, render_model

__all__ = ["FIRMWARE_DIR", "KERNEL_DIR", "render_model"]
