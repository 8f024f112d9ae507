"""Talk to a tinymem board firmware over a serial port (a real one, or QEMU's over TCP).

The exchange is strictly request/response, so it works on UARTs without flow control:
  PING -> HELLO;  INPUT chunk -> ACK (one at a time);  INVOKE -> OUTPUT..., PROFILE..., DONE;
  EXIT -> ACK (an emulated board then leaves QEMU with the given status).
"""
from __future__ import annotations

import select
import struct
import time
from dataclasses import dataclass, field

import numpy as np
import serial

from ..errors import TinymemError
from .frames import (CHUNK_MAX_DATA, PROTOCOL_VERSION, ErrorCode, Frame, FrameError, FrameReader, FrameType,
                     chunk_payload, encode, parse_chunk)

COUNTERS = {1: "dwt", 2: "systick"}


class LinkClosed(TinymemError):
    """The other end went away (QEMU exited, the board was unplugged)."""


@dataclass
class Hello:
    board: str
    version: int
    profile: bool
    emulated: bool
    counter: str
    ops: int
    clock_hz: int
    arena_bytes: int
    stack_capacity: int
    input_bytes: list[int]
    output_bytes: list[int]
    ping_seq: int = 0

    @property
    def clock(self) -> str:
        return "qemu-icount" if self.emulated else f"{self.counter}-cycles"

    @classmethod
    def parse(cls, p: bytes) -> "Hello":
        head = struct.Struct("<6BHIIIHH")
        if len(p) < head.size:
            raise TinymemError(f"HELLO of {len(p)} B is too short: is this a tinymem firmware?")
        version, flags, counter, n_in, n_out, _pad, ops, clock, arena, stack, ping, _ = head.unpack(p[:head.size])
        if version != PROTOCOL_VERSION:
            raise TinymemError(f"firmware speaks protocol {version}, this tinymem speaks {PROTOCOL_VERSION}: rebuild it")
        end = head.size + 4 * (n_in + n_out)
        sizes = struct.unpack(f"<{n_in + n_out}I", p[head.size:end])
        return cls(p[end:].decode(errors="replace"), version, bool(flags & 1), bool(flags & 2),
                   COUNTERS.get(counter, "none"), ops, clock, arena, stack, list(sizes[:n_in]), list(sizes[n_in:]), ping)

    def as_dict(self) -> dict:
        return {"board": self.board, "protocol": self.version, "profile": self.profile, "emulated": self.emulated,
                "clock": self.clock, "clock_hz": self.clock_hz, "ops": self.ops, "arena_bytes": self.arena_bytes,
                "stack_capacity_bytes": self.stack_capacity, "inputs": self.input_bytes, "outputs": self.output_bytes}


@dataclass
class Invocation:
    """One sample's results: output bytes per output, and what the board measured."""
    outputs: list[bytes]
    ticks: int
    stack_high_water: int
    stack_capacity: int
    op_ticks: list[int] = field(default_factory=list)


class Session:
    def __init__(self, port: serial.SerialBase, timeout: float = 10.0, progress=None):
        self.port, self.timeout, self.progress = port, timeout, progress
        self._reader = FrameReader()
        self._pending: list[Frame | FrameError] = []
        self._seq = 0
        self._board_seq: int | None = None
        self.hello_info: Hello | None = None

    # --- bytes and frames ---------------------------------------------------------------------
    def _read_some(self, wait: float) -> bytes:
        try:
            ready, _, _ = select.select([self.port.fileno()], [], [], wait)
            if not ready:
                return b""
            # Exact on a serial port; 0/1 on socket:// (where one byte per select is still plenty
            # at QEMU's ~20 KB/s, and never loses bytes to pyserial's end-of-stream exception).
            return self.port.read(max(1, self.port.in_waiting))
        except serial.SerialException as exc:
            raise LinkClosed(f"the serial link closed: {exc}") from None
        except (AttributeError, NotImplementedError):  # ports without a file descriptor (loop://)
            self.port.timeout = wait
            return self.port.read(max(1, self.port.in_waiting))

    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
        except serial.SerialException as exc:
            raise LinkClosed(f"the serial link closed: {exc}") from None

    def send(self, ftype: FrameType, payload: bytes = b"") -> int:
        seq = self._seq
        self._seq = (self._seq + 1) & 0xFFFF
        self._write(encode(Frame(ftype, seq, payload)))
        return seq

    def receive(self, timeout: float | None = None) -> Frame:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TinymemError(f"no frame from the board within {self.timeout if timeout is None else timeout:.1f} s")
            self._pending += self._reader.feed(self._read_some(min(left, 0.25)))
        item = self._pending.pop(0)
        if isinstance(item, FrameError):
            raise TinymemError(f"corrupted frame from the board: {item}")
        if self._board_seq is not None and item.seq != self._board_seq:
            raise TinymemError(f"lost a frame from the board: expected sequence {self._board_seq}, got {item.seq}")
        self._board_seq = (item.seq + 1) & 0xFFFF
        if item.type == FrameType.ERROR:
            raise TinymemError(_describe_error(item.payload))
        return item

    def _expect(self, ftype: FrameType, timeout: float | None = None) -> Frame:
        frame = self.receive(timeout)
        if frame.type != ftype:
            raise TinymemError(f"expected {ftype.name} from the board, got {frame!r}")
        return frame

    # --- requests ------------------------------------------------------------------------------
    def hello(self) -> Hello:
        """PING until the HELLO that answers it arrives (a real board may still be booting after the
        port opened). Frames left from an earlier exchange, and HELLOs to earlier PINGs, are skipped."""
        deadline = time.monotonic() + self.timeout
        self._write(b"\0")  # ends whatever partial frame the board may hold from line noise
        while time.monotonic() < deadline:
            self._board_seq = None  # PING restarts sequence checking on both sides
            ping = self.send(FrameType.PING)
            answer_by = min(deadline, time.monotonic() + 1.0)
            while time.monotonic() < answer_by:
                try:
                    frame = self.receive(timeout=answer_by - time.monotonic())
                except LinkClosed:
                    raise
                except TinymemError:
                    continue  # stale frames, errors to earlier requests, or silence: keep listening
                finally:
                    self._board_seq = None
                if frame.type == FrameType.HELLO:
                    h = Hello.parse(frame.payload)
                    if h.ping_seq == ping:
                        self._board_seq = (frame.seq + 1) & 0xFFFF
                        self.hello_info = h
                        return h
        raise TinymemError(f"the board did not answer PING within {self.timeout:.0f} s "
                           "(wrong port or baud rate, or not a tinymem firmware?)")

    def check_model(self, input_bytes: list[int], output_bytes: list[int]) -> None:
        h = self.hello_info or self.hello()
        if h.input_bytes != list(input_bytes) or h.output_bytes != list(output_bytes):
            raise TinymemError(f"the firmware on board '{h.board}' runs another model: its inputs/outputs are "
                               f"{h.input_bytes}/{h.output_bytes} bytes, this model's {list(input_bytes)}/{list(output_bytes)}")

    def invoke(self, inputs: list[bytes]) -> Invocation:
        h = self.hello_info or self.hello()
        for index, data in enumerate(inputs):
            for at in range(0, len(data), CHUNK_MAX_DATA):
                seq = self.send(FrameType.INPUT, chunk_payload(index, at, data[at:at + CHUNK_MAX_DATA]))
                ack = self._expect(FrameType.ACK)
                if struct.unpack("<H", ack.payload[:2])[0] != seq:
                    raise TinymemError(f"board acknowledged frame {ack.payload[:2].hex()} instead of {seq}")
        self.send(FrameType.INVOKE)
        outputs = [bytearray(n) for n in h.output_bytes]
        got = [0] * len(outputs)
        op_ticks = [0] * h.ops
        while True:
            frame = self.receive(timeout=max(self.timeout, 60.0))  # the invoke itself may take a while
            if frame.type == FrameType.OUTPUT:
                index, at, data = parse_chunk(frame.payload)
                if index >= len(outputs) or at + len(data) > len(outputs[index]):
                    raise TinymemError(f"board sent output {index} bytes {at}..{at + len(data)} outside the tensor")
                outputs[index][at:at + len(data)] = data
                got[index] += len(data)
            elif frame.type == FrameType.PROFILE:
                first, count = struct.unpack("<HH", frame.payload[:4])
                op_ticks[first:first + count] = struct.unpack(f"<{count}Q", frame.payload[4:4 + 8 * count])
            elif frame.type == FrameType.DONE:
                ticks, high, capacity = struct.unpack("<QII", frame.payload[:16])
                break
            else:
                raise TinymemError(f"unexpected {frame!r} while waiting for outputs")
        if got != list(h.output_bytes):
            raise TinymemError(f"board sent {got} output bytes, expected {h.output_bytes}")
        return Invocation([bytes(o) for o in outputs], ticks, high, capacity, op_ticks if h.profile else [])

    def run(self, arrays: list[np.ndarray]) -> list[Invocation]:
        """N samples: arrays[i] is int8 [N, ...] for input i. One Invocation per sample."""
        n = arrays[0].shape[0] if arrays else 0
        flat = [np.ascontiguousarray(a, dtype=np.int8).reshape(n, -1) for a in arrays]
        self.check_model([a.shape[1] for a in flat], (self.hello_info or self.hello()).output_bytes)
        results = []
        for k in range(n):
            results.append(self.invoke([a[k].tobytes() for a in flat]))
            if self.progress:
                self.progress(k + 1, n)
        return results

    def exit(self, status: int = 0) -> None:
        """Ask the firmware to stop; an emulated board then ends QEMU with `status`."""
        seq = self.send(FrameType.EXIT, bytes([status & 0xFF]))
        try:
            ack = self._expect(FrameType.ACK)
        except LinkClosed:
            return  # QEMU may exit before the ACK is read: its exit status is the real answer
        if struct.unpack("<H", ack.payload[:2])[0] != seq:
            raise TinymemError("board acknowledged the wrong frame to EXIT")


def _describe_error(p: bytes) -> str:
    if len(p) < 12:
        return f"board reported an error ({p.hex()})"
    code, _pad, seq, detail, detail2 = struct.unpack("<BBHII", p[:12])
    try:
        name = ErrorCode(code)
    except ValueError:
        return f"board reported error {code} (frame {seq}, {detail}, {detail2})"
    return {
        ErrorCode.BAD_FRAME: "board received a corrupted frame (CRC or COBS check failed)",
        ErrorCode.LOST: f"board lost a frame: got sequence {seq}, expected {detail}",
        ErrorCode.BAD_CHUNK: f"board rejected an input chunk (input {detail}, offset {detail2})",
        ErrorCode.UNKNOWN: f"board does not handle frame type 0x{detail:02x}",
        ErrorCode.FAULT: f"board faulted at pc 0x{detail:08x} (fault status 0x{detail2:08x})",
    }[name]
