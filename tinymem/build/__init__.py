"""From generated C to firmware: board files (boards.py), PlatformIO projects built with no
registry (platformio.py), and QEMU for the emulated boards (emulator.py)."""
