"""A fault-injecting proxy for the host <-> board serial link (tests only).

The host's Session connects to `proxy.url` (socket://); the proxy forwards to the board's port
(QEMU's UART over TCP) frame by frame, so a fault can target "the 2nd INPUT frame to the board"
or "the 1st OUTPUT frame to the host" exactly, whatever the timing.
"""
from __future__ import annotations

import select
import socket
import threading
from collections import Counter
from dataclasses import dataclass

from cobs import cobs

TO_BOARD, TO_HOST = "to_board", "to_host"
KINDS = ("flip", "drop_byte", "drop_frame", "truncate", "silence", "cut")


@dataclass(frozen=True)
class Fault:
    direction: str  # TO_BOARD or TO_HOST
    frame_type: int  # FrameType of the frame to damage
    kind: str  # one of KINDS
    occurrence: int = 1  # the n-th frame of that type in that direction


def damage(kind: str, wire: bytes) -> bytes:
    """One frame as sent (COBS + delimiter), damaged."""
    mid = len(wire) // 2
    if kind == "flip":  # one bit in the middle: the CRC must catch it
        return wire[:mid] + bytes([wire[mid] ^ 0x10]) + wire[mid + 1:]
    if kind == "drop_byte":
        return wire[:mid] + wire[mid + 1:]
    if kind == "drop_frame":  # gone, delimiter and all: only the sequence number can tell
        return b""
    if kind == "truncate":  # the tail and the delimiter lost: it runs into the next frame
        return wire[:mid]
    raise ValueError(kind)


class FaultProxy(threading.Thread):
    def __init__(self, board_port, faults: list[Fault] = ()):
        super().__init__(daemon=True)
        self.board = board_port  # a pyserial port (timeout 0) wired to the board
        self.faults = list(faults)
        self.applied: list[Fault] = []
        self.counts: Counter = Counter()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self._server.getsockname()[1]}"
        self._pending = {TO_BOARD: bytearray(), TO_HOST: bytearray()}
        self._silent: set[str] = set()
        self._done = threading.Event()
        self._host: socket.socket | None = None
        self.start()

    def schedule(self, direction: str, frame_type: int, kind: str, nth: int = 1) -> Fault:
        """Damage the nth frame of that type from now on (call it while the link is idle)."""
        fault = Fault(direction, frame_type, kind, self.counts[direction, frame_type] + nth)
        self.faults.append(fault)
        return fault

    def close(self) -> None:
        self._done.set()
        self.join(5)
        self._server.close()

    def run(self) -> None:
        self._server.settimeout(10)
        try:
            host, _ = self._server.accept()
        except OSError:
            return
        self._host = host
        with host:
            while not self._done.is_set():
                ready, _, _ = select.select([host, self.board.fileno()], [], [], 0.05)
                try:
                    if host in ready:
                        data = host.recv(4096)
                        if not data:
                            return
                        self._forward(TO_BOARD, data, self.board.write)
                    if self.board.fileno() in ready:
                        self._forward(TO_HOST, self.board.read(4096), host.sendall)
                except _Cut:
                    host.shutdown(socket.SHUT_RDWR)
                    return
                except OSError:
                    return

    def _forward(self, direction: str, data: bytes, send) -> None:
        buf = self._pending[direction]
        buf += data
        while (end := buf.find(0)) >= 0:
            wire = bytes(buf[:end + 1])
            del buf[:end + 1]
            out = self._apply(direction, wire)
            if out:
                send(out)

    def _apply(self, direction: str, wire: bytes) -> bytes:
        if direction in self._silent:
            return b""
        try:
            ftype = cobs.decode(wire[:-1])[0] if len(wire) > 1 else None
        except (cobs.DecodeError, IndexError):
            return wire
        self.counts[direction, ftype] += 1
        for f in self.faults:
            if (f.direction, f.frame_type, f.occurrence) == (direction, ftype, self.counts[direction, ftype]):
                self.faults.remove(f)
                self.applied.append(f)
                if f.kind == "silence":  # the board stops answering (or hearing), for good
                    self._silent.add(direction)
                    return b""
                if f.kind == "cut":
                    raise _Cut
                return damage(f.kind, wire)
        return wire


class _Cut(Exception):
    pass
