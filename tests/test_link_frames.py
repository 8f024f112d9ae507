"""Framing: the C encoder/decoder (firmware/runtime/protocol.c, compiled for the host) and the
Python one (tinymem/link/frames.py) read each other's frames, byte for byte."""
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from tinymem.link import frames as F
from tinymem.sim.host import WARN_FLAGS, host_cc

RUNTIME = Path(__file__).resolve().parents[1] / "firmware" / "runtime"

# A host driver for protocol.c. "encode": lines "type seq hex" in, encoded frames out.
# "decode": a byte stream in, one line per frame out ("type seq hex", or "BAD").
DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "protocol.h"

static int hexval(int c) { return c <= '9' ? c - '0' : (c | 32) - 'a' + 10; }

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "encode") == 0) {
        static char line[4096];
        static uint8_t payload[4096], out[TM_FRAME_MAX_ENCODED];
        unsigned type, seq;
        while (fgets(line, sizeof line, stdin)) {
            char hex[2048] = "";
            if (sscanf(line, "%u %u %2047s", &type, &seq, hex) < 2) continue;
            size_t len = strcmp(hex, "-") == 0 ? 0 : strlen(hex) / 2;
            for (size_t i = 0; i < len; ++i) payload[i] = (uint8_t)(hexval(hex[2*i]) << 4 | hexval(hex[2*i+1]));
            size_t n = tm_frame_encode((uint8_t)type, (uint16_t)seq, payload, len, out);
            if (n == 0) { printf("TOO-LONG\n"); continue; }
            fwrite(out, 1, n, stdout);
        }
        return 0;
    }
    static tm_decoder_t dec;
    tm_decoder_reset(&dec);
    tm_frame_t f;
    int c;
    while ((c = getchar()) != EOF) {
        int r = tm_decoder_push(&dec, (uint8_t)c, &f);
        if (r == TM_DECODE_BAD) printf("BAD\n");
        if (r == TM_DECODE_FRAME) {
            printf("%u %u ", f.type, f.seq);
            for (unsigned i = 0; i < f.len; ++i) printf("%02x", f.payload[i]);
            printf("%s\n", f.len ? "" : "-");
        }
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    d = tmp_path_factory.mktemp("protocol")
    (d / "driver.c").write_text(DRIVER)
    exe = d / "driver"
    cmd = [host_cc(), *WARN_FLAGS, "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
           "-I", str(RUNTIME), str(RUNTIME / "protocol.c"), str(d / "driver.c"), "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return exe


def c_encode(exe, frames) -> bytes:
    lines = "".join(f"{f.type} {f.seq} {f.payload.hex() or '-'}\n" for f in frames)
    return subprocess.run([exe, "encode"], input=lines.encode(), capture_output=True, check=True).stdout


def c_decode(exe, stream: bytes) -> list:
    out = subprocess.run([exe, "decode"], input=stream, capture_output=True, check=True).stdout.decode()
    result = []
    for line in out.splitlines():
        if line == "BAD":
            result.append("BAD")
        else:
            t, s, h = line.split()
            result.append(F.Frame(int(t), int(s), b"" if h == "-" else bytes.fromhex(h)))
    return result


def sample_frames(rng):
    # Payload sizes around the COBS block boundary (254) and the maximum, with and without zeros.
    out = [F.Frame(F.FrameType.PING, 0), F.Frame(F.FrameType.ACK, 65535, b"\0\0")]
    for n in (1, 5, 253, 254, 255, F.MAX_PAYLOAD):
        out.append(F.Frame(F.FrameType.INPUT, int(rng.integers(0, 65536)), bytes(rng.integers(1, 256, n, dtype=np.uint8))))
        out.append(F.Frame(F.FrameType.OUTPUT, n, bytes(rng.integers(0, 3, n, dtype=np.uint8))))
    return out


def test_c_and_python_encode_identically(driver, rng):
    # Identical bytes means the C CRC-32 is zlib's and both COBS encoders close blocks alike.
    frames = sample_frames(rng)
    assert c_encode(driver, frames) == b"".join(F.encode(f) for f in frames)


def test_python_frames_decode_in_c(driver, rng):
    frames = sample_frames(rng)
    assert c_decode(driver, b"".join(F.encode(f) for f in frames)) == frames


def test_c_frames_decode_in_python(driver, rng):
    frames = sample_frames(rng)
    reader = F.FrameReader()
    assert reader.feed(c_encode(driver, frames)) == frames


def test_corruption_is_caught_and_the_stream_resynchronises(driver, rng):
    good = [F.Frame(F.FrameType.INPUT, k, bytes(rng.integers(0, 256, 40, dtype=np.uint8))) for k in range(3)]
    wire = [bytearray(F.encode(f)) for f in good]
    wire[1][10] ^= 0x40  # flip one bit in the middle frame
    if wire[1][10] == 0:
        wire[1][10] = 0x41
    stream = b"\x13\x37junk\0" + b"".join(wire)
    c_result = c_decode(driver, stream)
    py_result = F.FrameReader().feed(stream)
    assert c_result == ["BAD", good[0], "BAD", good[2]]
    assert isinstance(py_result[0], F.FrameError) and isinstance(py_result[2], F.FrameError)
    assert py_result[1] == good[0] and py_result[3] == good[2]


def test_oversized_frame_is_rejected(driver):
    too_long = F.Frame(F.FrameType.INPUT, 0, b"\x01" * (F.MAX_PAYLOAD + 1))
    with pytest.raises(ValueError):
        F.encode(too_long)
    assert c_encode(driver, [too_long]) == b"TOO-LONG\n"
    # A 300-byte frame forged by hand: both decoders refuse it, then read the next one.
    from cobs import cobs
    raw = b"\x02\x00\x00" + b"\x05" * 300
    forged = cobs.encode(raw + zlib.crc32(raw).to_bytes(4, "little")) + b"\0"
    ok = F.Frame(F.FrameType.PING, 1)
    assert c_decode(driver, forged + F.encode(ok)) == ["BAD", ok]
    res = F.FrameReader().feed(forged + F.encode(ok))
    assert isinstance(res[0], F.FrameError) and res[1] == ok


def test_chunks_round_trip():
    assert F.parse_chunk(F.chunk_payload(2, 70000, b"xyz")) == (2, 70000, b"xyz")
    with pytest.raises(F.FrameError):
        F.parse_chunk(b"\x00")
