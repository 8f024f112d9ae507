"""Talk to a tinymem board firmware over a serial port (a real one, or QEMU's over TCP).

The exchange is request/response, so it works on UARTs without flow control:
  PING -> HELLO;  INPUT chunk -> ACK (up to HELLO's window in flight);
  INVOKE -> [READ -> WINDOW chunks, each ACKed]..., OUTPUT..., PROFILE..., MEMORY, DONE;
  EXIT -> ACK (an emulated board then leaves QEMU).
A model that streams its input (HELLO's streamed mask) never gets it as INPUT chunks: during the
invoke the board asks for each window it needs (READ), and the host sends just those bytes.
LOG frames may come at any time: they are collected, never parsed.

Faults. Every frame carries a CRC and a sequence number, and every wait has a deadline, so a
dropped byte, a flipped bit, a truncated frame or a board that stops answering each raise a
LinkError. A sample's exchange is idempotent as a whole (inputs are rewritten before each INVOKE,
and the firmware refuses to INVOKE unless every input byte arrived since the last one with no bad
frame in between), so on a LinkError the session resynchronises with a PING and redoes the sample,
up to `retries` times. Nothing else is retried: a fault, a rejected chunk or a closed link is final.
"""
from __future__ import annotations

import collections
import select
import socket
import struct
import time
from dataclasses import dataclass, field

import numpy as np
import serial

from ..errors import TinymemError
from .frames import (CHUNK_MAX_DATA, PROTOCOL_VERSION, READ_REQUEST, ErrorCode, Frame, FrameError, FrameReader,
                     FrameType, chunk_payload, encode, parse_chunk)

COUNTERS = {1: "dwt", 2: "systick"}
# Board errors that mean "a frame was damaged or lost on the way": the exchange may be redone.
TRANSIENT = (ErrorCode.BAD_FRAME, ErrorCode.LOST, ErrorCode.INCOMPLETE)


class LinkClosed(TinymemError):
    """The other end went away (QEMU exited, the board was unplugged)."""


class LinkError(TinymemError):
    """A frame was damaged, lost or late: the exchange it belongs to may be redone from a PING."""


class LinkTimeout(LinkError):
    """Nothing (or only part of a frame) arrived before the deadline."""


class BoardError(TinymemError):
    """The board reported an error frame."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class BoardLinkError(BoardError, LinkError):
    """The board saw a damaged or lost frame from the host."""


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
    window: int = 1
    streamed: int = 0  # bit i: input i is streamed (asked for window by window during INVOKE)

    @property
    def clock(self) -> str:
        return "qemu-icount" if self.emulated else f"{self.counter}-cycles"

    @classmethod
    def parse(cls, p: bytes) -> "Hello":
        head = struct.Struct("<6BHIIIHH")
        if len(p) < head.size:
            raise TinymemError(f"HELLO of {len(p)} B is too short: is this a tinymem firmware?")
        version, flags, counter, n_in, n_out, window, ops, clock, arena, stack, ping, streamed = head.unpack(p[:head.size])
        if version != PROTOCOL_VERSION:
            raise TinymemError(f"firmware speaks protocol {version}, this tinymem speaks {PROTOCOL_VERSION}: rebuild it")
        end = head.size + 4 * (n_in + n_out)
        if len(p) < end:
            raise TinymemError(f"HELLO of {len(p)} B is too short for {n_in} input and {n_out} output sizes")
        sizes = struct.unpack(f"<{n_in + n_out}I", p[head.size:end])
        return cls(p[end:].decode(errors="replace"), version, bool(flags & 1), bool(flags & 2),
                   COUNTERS.get(counter, "none"), ops, clock, arena, stack, list(sizes[:n_in]), list(sizes[n_in:]),
                   ping, max(1, window), streamed)

    def as_dict(self) -> dict:
        return {"board": self.board, "protocol": self.version, "profile": self.profile, "emulated": self.emulated,
                "clock": self.clock, "clock_hz": self.clock_hz, "ops": self.ops, "arena_bytes": self.arena_bytes,
                "stack_capacity_bytes": self.stack_capacity, "inputs": self.input_bytes, "outputs": self.output_bytes,
                "rx_window": self.window, "streamed_inputs": [i for i in range(len(self.input_bytes))
                                                              if self.streamed >> i & 1]}


@dataclass
class Invocation:
    """One sample's results: output bytes per output, and what the board measured."""
    outputs: list[bytes]
    ticks: int
    stack_high_water: int
    stack_capacity: int
    op_ticks: list[int] = field(default_factory=list)
    ram_static: int = 0  # .data + .bss as the board's linker symbols say
    arena_bytes: int = 0
    ram_limit: int = 0
    read_ticks: int = 0  # of `ticks`, those spent waiting for streamed input windows


@dataclass
class LinkStats:
    retries: int = 0
    faults: list[str] = field(default_factory=list)  # what each retry recovered from
    input_bytes: int = 0  # payload bytes of INPUT chunks acknowledged
    input_seconds: float = 0.0  # time from the first chunk to the last ACK, summed over samples
    windows: int = 0  # streamed input windows served
    window_bytes: int = 0  # their bytes (halos overlap: more than the input's)

    def as_dict(self) -> dict:
        rate = self.input_bytes / self.input_seconds if self.input_seconds else None
        return {"retries": self.retries, "faults": self.faults, "input_bytes": self.input_bytes,
                "input_seconds": round(self.input_seconds, 3),
                "input_bytes_per_s": None if rate is None else round(rate),
                "windows": self.windows, "window_bytes": self.window_bytes}


def _configure(port) -> None:
    """Reads never block (select() waits instead); TCP sends go out at once: the firmware answers
    each frame with a short ACK, and Nagle's algorithm would hold the next frame for it."""
    sock = getattr(port, "_socket", None)  # pyserial's socket:// keeps its socket here
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
    try:
        port.timeout = 0
    except (AttributeError, ValueError, serial.SerialException):
        pass


class Session:
    def __init__(self, port: serial.SerialBase, timeout: float = 10.0, progress=None, retries: int = 2,
                 invoke_timeout: float = 60.0, on_log=None):
        self.port, self.timeout, self.progress = port, timeout, progress
        self.retries, self.invoke_timeout, self.on_log = retries, invoke_timeout, on_log
        _configure(port)
        self._reader = FrameReader()
        self._pending: list[Frame | FrameError] = []
        self._seq = 0
        self._board_seq: int | None = None
        self.hello_info: Hello | None = None
        self.logs: list[str] = []
        self.stats = LinkStats()

    # --- bytes and frames ---------------------------------------------------------------------
    def _read_some(self, wait: float) -> bytes:
        try:
            ready, _, _ = select.select([self.port.fileno()], [], [], wait)
            if not ready:
                return b""
            # Non-blocking (timeout 0): returns what one read gets, never drops it on end-of-stream.
            return self.port.read(4096)
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

    def receive(self, timeout: float | None = None, what: str = "a frame") -> Frame:
        """The next frame from the board, LOG frames aside. Damage, loss and silence raise LinkError."""
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while True:
            while not self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LinkTimeout(f"the board stopped answering: no {what} within {wait:.1f} s")
                self._pending += self._reader.feed(self._read_some(min(left, 0.25)))
            item = self._pending.pop(0)
            if isinstance(item, FrameError):
                raise LinkError(f"corrupted frame from the board: {item}")
            if self._board_seq is not None and item.seq != self._board_seq:
                raise LinkError(f"lost a frame from the board: expected sequence {self._board_seq}, got {item.seq}")
            self._board_seq = (item.seq + 1) & 0xFFFF
            if item.type == FrameType.ERROR:
                code, message = _describe_error(item.payload)
                raise (BoardLinkError if code in TRANSIENT else BoardError)(code, message)
            if item.type != FrameType.LOG:
                return item
            text = item.payload.decode(errors="replace")
            self.logs.append(text)
            if self.on_log:
                self.on_log(text)

    def _expect(self, ftype: FrameType, timeout: float | None = None) -> Frame:
        frame = self.receive(timeout, what=ftype.name)
        if frame.type != ftype:
            raise TinymemError(f"expected {ftype.name} from the board, got {frame!r}")
        return frame

    # --- requests ------------------------------------------------------------------------------
    def hello(self, after: str | None = None) -> Hello:
        """PING until the HELLO that answers it arrives (a real board may still be booting after the
        port opened; after a fault the board may still be answering old requests). Frames left from
        an earlier exchange, and HELLOs to earlier PINGs, are skipped."""
        deadline = time.monotonic() + self.timeout
        self._write(b"\0")  # ends whatever partial frame the board may hold from line noise
        self._reader, self._pending = FrameReader(), []  # and ours: a truncated frame must not swallow the HELLO
        while time.monotonic() < deadline:
            self._board_seq = None  # PING restarts sequence checking on both sides
            ping = self.send(FrameType.PING)
            answer_by = min(deadline, time.monotonic() + 1.0)
            while time.monotonic() < answer_by:
                try:
                    frame = self.receive(timeout=answer_by - time.monotonic(), what="HELLO")
                except BoardError as exc:
                    if exc.code == ErrorCode.FAULT:
                        raise
                    continue  # an error to an earlier request
                except LinkTimeout:
                    continue
                except LinkError:
                    break  # a damaged frame may have been the HELLO: PING again now
                finally:
                    self._board_seq = None
                if frame.type == FrameType.HELLO:
                    h = Hello.parse(frame.payload)
                    if h.ping_seq == ping:
                        self._board_seq = (frame.seq + 1) & 0xFFFF
                        self.hello_info = h
                        return h
        if after:
            raise LinkError(f"the board stopped answering: after '{after}' it did not answer PING "
                            f"within {self.timeout:.1f} s")
        raise LinkError(f"the board did not answer PING within {self.timeout:.1f} s "
                        "(wrong port or baud rate, or not a tinymem firmware?)")

    def check_model(self, input_bytes: list[int], output_bytes: list[int]) -> None:
        h = self.hello_info or self.hello()
        if h.input_bytes != list(input_bytes) or h.output_bytes != list(output_bytes):
            raise TinymemError(f"the firmware on board '{h.board}' runs another model: its inputs/outputs are "
                               f"{h.input_bytes}/{h.output_bytes} bytes, this model's {list(input_bytes)}/{list(output_bytes)}")

    def invoke(self, inputs: list[bytes], shapes: list[tuple] | None = None) -> Invocation:
        """One sample, redone from a PING after a damaged, lost or late frame (up to `retries` times).
        A streamed input needs its sample shape [H, W, C] in `shapes` (to cut the windows)."""
        attempt = 0
        while True:
            try:
                return self._exchange(inputs, shapes)
            except LinkError as exc:
                if attempt >= self.retries:
                    if not self.retries:
                        raise
                    raise LinkError(f"{exc} (still failing after {self.retries} retries)") from None
                attempt += 1
                self.stats.retries += 1
                self.stats.faults.append(str(exc))
                self.hello(after=str(exc))

    def _send_chunks(self, ftype: FrameType, data: dict[int, bytes], window: int, then: FrameType | None = None) -> None:
        """Chunks of data[index] as `ftype` frames with up to `window` unanswered at once, then the
        frame `then` (the firmware's INCOMPLETE check makes an early INVOKE safe); every chunk's
        ACK is checked."""
        in_flight: collections.deque[int] = collections.deque()

        def settle() -> None:
            ack = self._expect(FrameType.ACK)
            want = in_flight.popleft()
            if len(ack.payload) < 2 or struct.unpack("<H", ack.payload[:2])[0] != want:
                raise LinkError(f"board acknowledged frame {ack.payload[:2].hex()} instead of {want}")

        for index, d in data.items():
            for at in range(0, len(d), CHUNK_MAX_DATA):
                while len(in_flight) >= window:
                    settle()
                in_flight.append(self.send(ftype, chunk_payload(index, at, d[at:at + CHUNK_MAX_DATA])))
        if then is not None:
            while len(in_flight) >= window:
                settle()
            self.send(then)
        while in_flight:
            settle()

    def _send_and_invoke(self, inputs: list[bytes], window: int, streamed: int) -> None:
        """The inputs held in the board's arena as INPUT chunks, then INVOKE."""
        start = time.monotonic()
        held = {index: data for index, data in enumerate(inputs) if not streamed >> index & 1}
        self._send_chunks(FrameType.INPUT, held, window, then=FrameType.INVOKE)
        self.stats.input_bytes += sum(len(d) for d in held.values())
        self.stats.input_seconds += time.monotonic() - start

    def _serve_window(self, p: bytes, inputs: list[bytes], shapes: list[tuple] | None, h: Hello) -> None:
        """Answer a READ: the window's bytes of a streamed input, as WINDOW chunks. A request for
        anything but a window inside a streamed input is final: the firmware is not the one built."""
        if len(p) != READ_REQUEST.size:
            raise TinymemError(f"malformed READ frame from the board ({len(p)} B, expected {READ_REQUEST.size})")
        index, y0, y1, x0, x1 = READ_REQUEST.unpack(p)
        if index >= len(inputs) or not h.streamed >> index & 1:
            raise TinymemError(f"board asked for a window of input {index}, which this model does not stream")
        shape = tuple(shapes[index]) if shapes is not None else ()
        if len(shape) != 3 or int(np.prod(shape)) != len(inputs[index]):
            raise TinymemError(f"input {index} is streamed: the session needs its sample shape [H, W, C], got {list(shape)}")
        if not (0 <= y0 < y1 <= shape[0] and 0 <= x0 < x1 <= shape[1]):
            raise TinymemError(f"board asked for rows {y0}..{y1}, columns {x0}..{x1} of input {index} "
                               f"{list(shape)}: outside the input")
        data = np.frombuffer(inputs[index], np.int8).reshape(shape)[y0:y1, x0:x1].tobytes()
        self._send_chunks(FrameType.WINDOW, {index: data}, h.window)
        self.stats.windows += 1
        self.stats.window_bytes += len(data)

    def _exchange(self, inputs: list[bytes], shapes: list[tuple] | None) -> Invocation:
        h = self.hello_info or self.hello()
        self._send_and_invoke(inputs, h.window, h.streamed)
        outputs = [bytearray(n) for n in h.output_bytes]
        got = [0] * len(outputs)
        op_ticks: list[int | None] = [None] * h.ops
        memory = None
        while True:
            frame = self.receive(self.invoke_timeout, what="answer to INVOKE")
            p = frame.payload
            if frame.type == FrameType.READ:
                self._serve_window(p, inputs, shapes, h)
            elif frame.type == FrameType.OUTPUT:
                index, at, data = parse_chunk(p)
                if index >= len(outputs) or at != got[index] or at + len(data) > len(outputs[index]):
                    raise TinymemError(f"board sent output {index} bytes {at}..{at + len(data)} out of order "
                                       "or outside the tensor")
                outputs[index][at:at + len(data)] = data
                got[index] += len(data)
            elif frame.type == FrameType.PROFILE:
                first, count = struct.unpack("<HH", p[:4]) if len(p) >= 4 else (0, -1)
                if count < 0 or len(p) != 4 + 8 * count or first + count > h.ops:
                    raise TinymemError(f"malformed PROFILE frame ({len(p)} B) for a {h.ops}-op model")
                op_ticks[first:first + count] = struct.unpack(f"<{count}Q", p[4:])
            elif frame.type == FrameType.MEMORY and len(p) == 20:
                memory = struct.unpack("<5I", p)
            elif frame.type == FrameType.DONE and len(p) == 16:
                ticks, read_ticks = struct.unpack("<QQ", p)
                break
            else:
                raise TinymemError(f"unexpected {frame!r} while waiting for outputs")
        if got != list(h.output_bytes):
            raise TinymemError(f"board sent {got} output bytes, expected {h.output_bytes}")
        if memory is None or (h.profile and None in op_ticks):
            raise TinymemError("board finished without its MEMORY or PROFILE frames")
        ram_static, high, capacity, arena, limit = memory
        return Invocation([bytes(o) for o in outputs], ticks, high, capacity, list(op_ticks) if h.profile else [],
                          ram_static, arena, limit, read_ticks)

    def run(self, arrays: list[np.ndarray]) -> list[Invocation]:
        """N samples: arrays[i] is int8 [N, ...] for input i. One Invocation per sample."""
        n = arrays[0].shape[0] if arrays else 0
        flat = [np.ascontiguousarray(a, dtype=np.int8).reshape(n, -1) for a in arrays]
        self.check_model([a.shape[1] for a in flat], (self.hello_info or self.hello()).output_bytes)
        shapes = [a.shape[1:] for a in arrays]
        results = []
        for k in range(n):
            results.append(self.invoke([a[k].tobytes() for a in flat], shapes))
            if self.progress:
                self.progress(k + 1, n)
        return results

    def exit(self, status: int = 0) -> None:
        """Ask the firmware to stop; an emulated board then ends QEMU with `status`."""
        seq = self.send(FrameType.EXIT, bytes([status & 0xFF]))
        try:
            ack = self._expect(FrameType.ACK)
        except (LinkClosed, LinkError):
            return  # QEMU may exit before the ACK is read: its exit status is the real answer
        if struct.unpack("<H", ack.payload[:2])[0] != seq:
            raise TinymemError("board acknowledged the wrong frame to EXIT")


def _describe_error(p: bytes) -> tuple[int, str]:
    if len(p) < 12:
        return 0, f"board reported an error ({p.hex()})"
    code, _pad, seq, detail, detail2 = struct.unpack("<BBHII", p[:12])
    try:
        name = ErrorCode(code)
    except ValueError:
        return code, f"board reported error {code} (frame {seq}, {detail}, {detail2})"
    return code, {
        ErrorCode.BAD_FRAME: "board received a corrupted frame (CRC or COBS check failed)",
        ErrorCode.LOST: f"board lost a frame: got sequence {seq}, expected {detail}",
        ErrorCode.BAD_CHUNK: f"board rejected an input chunk (input {detail}, offset {detail2})",
        ErrorCode.UNKNOWN: f"board does not handle frame type 0x{detail:02x}",
        ErrorCode.FAULT: f"board faulted at pc 0x{detail:08x} (fault status 0x{detail2:08x})",
        ErrorCode.INCOMPLETE: f"board refused to invoke: {detail} of {detail2} input bytes arrived intact",
        ErrorCode.STACK: f"board's stack overflowed into the arena ({detail} of {detail2} B): outputs discarded",
    }[name]
