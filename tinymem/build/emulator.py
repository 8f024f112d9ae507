"""Run a board firmware in QEMU and talk to its UART over TCP with pyserial.

Measured (shared/notes/platformio-qemu.md): a `socket://` open discards bytes already received,
so QEMU starts paused (-S) and waits for our connection before the CPU runs a single
instruction; `-icount shift=0` makes SysTick count exactly (1 ns of virtual time per
instruction); semihosting carries the firmware's exit status out as QEMU's; `nodelay=on` sends
each reply at once (with Nagle's algorithm every ACK waited for the TCP delayed ACK: input
streamed at 4.8 KB/s instead of 30). The process is always reaped, whatever happens in between.
"""
from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import serial

from ..errors import TinymemError

QEMU = "qemu-system-arm"


def qemu_binary() -> str:
    path = shutil.which(QEMU)
    if not path:
        raise TinymemError(f"{QEMU} is not on PATH: install it (Debian: apt-get install qemu-system-arm) "
                           "to run emulated boards")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Emulator:
    """`with Emulator(machine, elf) as emu:` gives `emu.serial`, a pyserial port wired to UART0."""

    def __init__(self, machine: str, elf: str | Path, connect_timeout: float = 20.0):
        self.machine, self.elf, self.connect_timeout = machine, Path(elf), connect_timeout
        self.proc: subprocess.Popen | None = None
        self.serial = None
        self.port = 0

    def _command(self) -> list[str]:
        return [qemu_binary(), "-machine", self.machine, "-display", "none", "-monitor", "stdio", "-S",
                "-serial", f"tcp:127.0.0.1:{self.port},server=on,wait=on,nodelay=on",
                "-semihosting-config", "enable=on,target=native", "-icount", "shift=0",
                "-kernel", str(self.elf)]

    def start(self) -> "Emulator":
        if not self.elf.is_file():
            raise TinymemError(f"{self.elf}: no such firmware (build the project first)")
        for _attempt in range(3):  # another process may take the free port before QEMU binds it
            self.port = _free_port()
            self.proc = subprocess.Popen(self._command(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE)
            if self._connect():
                break
            why = self._stderr()
            self._reap()
        else:
            raise TinymemError(f"QEMU ({self.machine}) did not open its serial port on 127.0.0.1:{self.port}: {why}")
        self.proc.stdin.write(b"cont\n")  # the CPU starts only now: no byte can be missed
        self.proc.stdin.flush()
        return self

    def _connect(self) -> bool:
        deadline = time.monotonic() + self.connect_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                self.serial = serial.serial_for_url(f"socket://127.0.0.1:{self.port}", timeout=0)
                return True
            except serial.SerialException:
                time.sleep(0.02)
        return False

    def _stderr(self) -> str:
        if self.proc and self.proc.poll() is not None and self.proc.stderr:
            text = self.proc.stderr.read().decode(errors="replace").strip()
            return text.splitlines()[-1] if text else f"exit status {self.proc.returncode}"
        return "no answer"

    def wait(self, timeout: float = 10.0) -> int:
        """The firmware's exit status (from semihosting), once QEMU has exited."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TinymemError(f"QEMU ({self.machine}) did not exit within {timeout:.0f} s") from None

    def _reap(self) -> None:
        if self.serial is not None:
            try:
                self.serial.close()
            except Exception:  # noqa: BLE001 - closing a dead socket must not hide the real error
                pass
            self.serial = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stderr):
                if stream:
                    stream.close()

    def close(self) -> None:
        self._reap()

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def boot_check(machine: str, elf: str | Path, timeout: float = 20.0) -> dict:
    """What "flashing" means for an emulated board: boot the firmware, read its HELLO, exit cleanly."""
    from ..link.session import Session

    with Emulator(machine, elf) as emu:
        session = Session(emu.serial, timeout=timeout)
        hello = session.hello()
        session.exit(0)
        status = emu.wait(timeout)
    if status != 0:
        raise TinymemError(f"firmware {elf} exited with status {status} in QEMU ({machine})")
    return hello.as_dict()


def main(argv: list[str] | None = None) -> int:
    """`python -m tinymem.build.emulator --machine M firmware.elf`: the dev-platform's qemu upload."""
    ap = argparse.ArgumentParser(prog="tinymem.build.emulator")
    ap.add_argument("--machine", required=True)
    ap.add_argument("elf")
    args = ap.parse_args(argv)
    try:
        hello = boot_check(args.machine, args.elf)
    except TinymemError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"booted in QEMU {args.machine}: board {hello['board']}, {hello['inputs']} -> {hello['outputs']} bytes, "
          f"{hello['ops']} ops, arena {hello['arena_bytes']} B, clock {hello['clock']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
