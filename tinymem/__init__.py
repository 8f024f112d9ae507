"""tinymem: int8 neural networks on microcontrollers with 256 KB of SRAM or less."""
__version__ = "0.1.0"
