"""Host side of the host <-> board framing (firmware/runtime/protocol.h is the C side).

On the wire a frame is COBS(raw) + b"\\0", with
raw = type (u8) | seq (u16 LE) | payload | CRC-32 (u32 LE, zlib's, over type|seq|payload).
COBS keeps 0x00 out of the frame so a reader resynchronises at the next delimiter after noise;
the CRC catches corruption; the sequence number catches a lost frame.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

from cobs import cobs

from ..errors import TinymemError

PROTOCOL_VERSION = 3
MAX_PAYLOAD = 256
OVERHEAD = 7
CHUNK_HEADER = 5  # index u8, offset u32
CHUNK_MAX_DATA = MAX_PAYLOAD - CHUNK_HEADER
PROFILE_OPS_PER_FRAME = (MAX_PAYLOAD - 4) // 8


class FrameType(IntEnum):
    PING = 0x01
    INPUT = 0x02
    INVOKE = 0x03
    EXIT = 0x04
    WINDOW = 0x05
    HELLO = 0x20
    ACK = 0x21
    OUTPUT = 0x22
    PROFILE = 0x23
    DONE = 0x24
    ERROR = 0x25
    MEMORY = 0x26
    LOG = 0x27
    READ = 0x28


class ErrorCode(IntEnum):
    BAD_FRAME = 1
    LOST = 2
    BAD_CHUNK = 3
    UNKNOWN = 4
    FAULT = 5
    INCOMPLETE = 6
    STACK = 7


class FrameError(TinymemError):
    """A frame failed its COBS, length or CRC check."""


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes = b""

    def __repr__(self) -> str:
        try:
            name = FrameType(self.type).name
        except ValueError:
            name = f"0x{self.type:02x}"
        return f"Frame({name}, seq={self.seq}, {len(self.payload)} B)"


def encode(frame: Frame) -> bytes:
    if len(frame.payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(frame.payload)} B exceeds {MAX_PAYLOAD} B")
    raw = struct.pack("<BH", frame.type, frame.seq & 0xFFFF) + bytes(frame.payload)
    raw += struct.pack("<I", zlib.crc32(raw))
    return cobs.encode(raw) + b"\0"


def decode(data: bytes) -> Frame:
    """Decode one frame's COBS bytes (without the delimiter)."""
    try:
        raw = cobs.decode(data)
    except cobs.DecodeError as exc:
        raise FrameError(f"bad COBS in a {len(data)}-byte frame: {exc}") from None
    if len(raw) < OVERHEAD:
        raise FrameError(f"frame of {len(raw)} B is shorter than its {OVERHEAD}-byte header and CRC")
    if len(raw) > MAX_PAYLOAD + OVERHEAD:
        raise FrameError(f"frame of {len(raw)} B exceeds the {MAX_PAYLOAD + OVERHEAD}-byte maximum")
    (crc,) = struct.unpack("<I", raw[-4:])
    if zlib.crc32(raw[:-4]) != crc:
        raise FrameError(f"CRC mismatch in a {len(raw)}-byte frame of type 0x{raw[0]:02x}")
    ftype, seq = struct.unpack("<BH", raw[:3])
    return Frame(ftype, seq, raw[3:-4])


class FrameReader:
    """Splits a byte stream at delimiters; feed() returns the frames (or FrameErrors) it completed."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        self._buf += data
        out: list[Frame | FrameError] = []
        while True:
            end = self._buf.find(b"\0")
            if end < 0:
                break
            chunk = bytes(self._buf[:end])
            del self._buf[:end + 1]
            if not chunk:
                continue  # two delimiters in a row: nothing between them
            try:
                out.append(decode(chunk))
            except FrameError as exc:
                out.append(exc)
        if len(self._buf) > 2 * (MAX_PAYLOAD + OVERHEAD):
            # No delimiter for longer than any frame: drop the junk, keep waiting for one.
            self._buf.clear()
            out.append(FrameError("no frame delimiter in over 500 bytes (is this a tinymem firmware?)"))
        return out


READ_REQUEST = struct.Struct("<BHHHH")  # input index, y0, y1, x0, x1


def chunk_payload(index: int, offset: int, data: bytes) -> bytes:
    return struct.pack("<BI", index, offset) + data


def parse_chunk(payload: bytes) -> tuple[int, int, bytes]:
    if len(payload) < CHUNK_HEADER:
        raise FrameError(f"chunk payload of {len(payload)} B is shorter than its header")
    index, offset = struct.unpack("<BI", payload[:CHUNK_HEADER])
    return index, offset, payload[CHUNK_HEADER:]
