/* COBS + CRC-32 framing (see protocol.h). Written for size: a 64-byte CRC table, no malloc. */
#include "protocol.h"

/* CRC-32 (reflected polynomial 0xEDB88320) four bits at a time: 16 entries instead of 256
 * keeps 960 bytes of flash free at a cost that does not matter at UART speeds. */
static const uint32_t crc_nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
    0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
    0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
};

uint32_t tm_crc32(uint32_t crc, const uint8_t *data, size_t n)
{
    crc = ~crc;
    for (size_t i = 0; i < n; ++i) {
        crc ^= data[i];
        crc = (crc >> 4) ^ crc_nibble[crc & 15u];
        crc = (crc >> 4) ^ crc_nibble[crc & 15u];
    }
    return ~crc;
}

void tm_put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

void tm_put_u32(uint8_t *p, uint32_t v)
{
    tm_put_u16(p, (uint16_t)v);
    tm_put_u16(p + 2, (uint16_t)(v >> 16));
}

void tm_put_u64(uint8_t *p, uint64_t v)
{
    tm_put_u32(p, (uint32_t)v);
    tm_put_u32(p + 4, (uint32_t)(v >> 32));
}

uint16_t tm_get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

uint32_t tm_get_u32(const uint8_t *p)
{
    return (uint32_t)tm_get_u16(p) | ((uint32_t)tm_get_u16(p + 2) << 16);
}

size_t tm_frame_encode(uint8_t type, uint16_t seq, const uint8_t *payload, size_t len, uint8_t *out)
{
    if (len > TM_FRAME_MAX_PAYLOAD) {
        return 0;
    }
    /* The raw frame is header | payload | crc; encode it straight from its three pieces so the
     * payload (often a slice of the arena) is never copied. */
    uint8_t head[3], tail[4];
    head[0] = type;
    tm_put_u16(head + 1, seq);
    uint32_t crc = tm_crc32(0, head, sizeof head);
    crc = tm_crc32(crc, payload, len);
    tm_put_u32(tail, crc);
    const size_t n = sizeof head + len + sizeof tail;

    size_t at = 1, code_at = 0;
    uint8_t code = 1;
    for (size_t i = 0; i < n; ++i) {
        const uint8_t b = i < 3 ? head[i] : i < 3 + len ? payload[i - 3] : tail[i - 3 - len];
        if (b == 0) {
            out[code_at] = code;
            code_at = at++;
            code = 1;
        } else {
            out[at++] = b;
            /* A full block (254 data bytes) closes without an implied zero; only open another
             * if data follows, as the Python `cobs` package does, so both encode identically. */
            if (++code == 0xFF && i + 1 < n) {
                out[code_at] = code;
                code_at = at++;
                code = 1;
            }
        }
    }
    out[code_at] = code;
    out[at++] = 0;
    return at;
}

void tm_decoder_reset(tm_decoder_t *d)
{
    d->n = 0;
    d->code = 0;
    d->left = 0;
    d->overflow = 0;
}

static int finish(tm_decoder_t *d, tm_frame_t *frame)
{
    const size_t n = d->n;
    const int ok = !d->overflow && d->left == 0 && n >= TM_FRAME_OVERHEAD &&
                   tm_crc32(0, d->raw, n - 4) == tm_get_u32(d->raw + n - 4);
    const int empty = n == 0 && d->code == 0 && !d->overflow;
    tm_decoder_reset(d);
    if (empty) {
        return TM_DECODE_MORE;
    }
    if (!ok) {
        return TM_DECODE_BAD;
    }
    frame->type = d->raw[0];
    frame->seq = tm_get_u16(d->raw + 1);
    frame->len = (uint16_t)(n - TM_FRAME_OVERHEAD);
    frame->payload = d->raw + 3;
    return TM_DECODE_FRAME;
}

static void append(tm_decoder_t *d, uint8_t b)
{
    if (d->n < sizeof d->raw) {
        d->raw[d->n++] = b;
    } else {
        d->overflow = 1;
    }
}

int tm_decoder_push(tm_decoder_t *d, uint8_t byte, tm_frame_t *frame)
{
    if (byte == 0) {
        return finish(d, frame);
    }
    if (d->overflow) {
        return TM_DECODE_MORE;
    }
    if (d->left == 0) {
        /* A code byte: the block before it (unless it was a full 0xFF block) stood for a zero. */
        if (d->code != 0 && d->code != 0xFF) {
            append(d, 0);
        }
        d->code = byte;
        d->left = (uint8_t)(byte - 1);
    } else {
        append(d, byte);
        --d->left;
    }
    return TM_DECODE_MORE;
}
