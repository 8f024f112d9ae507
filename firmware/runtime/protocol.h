/* Host <-> board framing, the C side of tinymem/link/frames.py (keep the two in step).
 *
 * A frame on the wire is COBS(raw) followed by one 0x00 byte, where
 *   raw = type (u8) | seq (u16 LE) | payload (0..TM_FRAME_MAX_PAYLOAD bytes) | crc32 (u32 LE)
 * and crc32 is zlib's CRC-32 of type|seq|payload. COBS makes 0x00 a pure delimiter, so a
 * receiver that joins mid-stream or sees a corrupted frame resynchronises at the next 0x00.
 * The sequence number lets each side notice a lost frame (each sender counts its own). */
#ifndef TM_PROTOCOL_H
#define TM_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#define TM_PROTOCOL_VERSION 3u

#define TM_FRAME_MAX_PAYLOAD 256u
#define TM_FRAME_OVERHEAD 7u /* type, seq, crc32 */
#define TM_FRAME_MAX_RAW (TM_FRAME_MAX_PAYLOAD + TM_FRAME_OVERHEAD)
/* COBS adds one byte per 254 and the code byte; plus the delimiter. */
#define TM_FRAME_MAX_ENCODED (TM_FRAME_MAX_RAW + TM_FRAME_MAX_RAW / 254u + 2u)
/* Input/output data travels in chunks: index (u8), offset (u32 LE), bytes. A streamed input's
 * window travels the same way, its offset counted from the window's first byte. */
#define TM_CHUNK_HEADER 5u
#define TM_CHUNK_MAX_DATA (TM_FRAME_MAX_PAYLOAD - TM_CHUNK_HEADER)

/* Frame types. Host -> board below 0x20, board -> host from 0x20. */
enum {
    TM_FRAME_PING = 0x01,   /* (empty): board answers HELLO and restarts sequence checking */
    TM_FRAME_INPUT = 0x02,  /* chunk of an input tensor; answered by ACK */
    TM_FRAME_INVOKE = 0x03, /* (empty): run the model; answered by OUTPUT..., PROFILE..., MEMORY, DONE */
    TM_FRAME_EXIT = 0x04,   /* u8 status: emulated boards leave QEMU with it; answered by ACK */
    TM_FRAME_WINDOW = 0x05, /* chunk of the window a READ asked for; answered by ACK */
    TM_FRAME_HELLO = 0x20,  /* what this firmware is: see tm_board main.c */
    TM_FRAME_ACK = 0x21,    /* u16 seq of the frame acknowledged */
    TM_FRAME_OUTPUT = 0x22, /* chunk of an output tensor */
    TM_FRAME_PROFILE = 0x23,/* u16 first op, u16 count, u64 ticks per op */
    TM_FRAME_DONE = 0x24,   /* u64 invoke ticks, u64 of them spent waiting for streamed input windows */
    TM_FRAME_ERROR = 0x25,  /* u8 code, u8 pad, u16 seq at fault, u32 detail, u32 detail2 */
    TM_FRAME_MEMORY = 0x26, /* u32 each: .data+.bss, stack high water, stack capacity, arena, RAM limit */
    TM_FRAME_LOG = 0x27,    /* text, for people: the host prints it, never parses it */
    /* During INVOKE, a model that streams its input asks for each window it needs: u8 input index,
     * u16 y0, y1, x0, x1 (rows [y0, y1) x columns [x0, x1), every channel); the host answers with
     * WINDOW chunks of those bytes, row-major. */
    TM_FRAME_READ = 0x28
};

enum {
    TM_ERR_BAD_FRAME = 1,  /* COBS, length or CRC check failed */
    TM_ERR_LOST = 2,       /* sequence gap: a host frame went missing */
    TM_ERR_BAD_CHUNK = 3,  /* index/offset/length outside the tensor (or not the window asked for) */
    TM_ERR_UNKNOWN = 4,    /* frame type this firmware does not handle */
    TM_ERR_FAULT = 5,      /* the core faulted: detail = stacked PC */
    TM_ERR_INCOMPLETE = 6, /* INVOKE before every input byte arrived intact: detail = bytes got, detail2 = needed */
    TM_ERR_STACK = 7       /* the stack reached .bss (the arena): outputs cannot be trusted */
};

/* zlib-compatible CRC-32: tm_crc32(0, p, n) == zlib.crc32(p[:n]). Chainable. */
uint32_t tm_crc32(uint32_t crc, const uint8_t *data, size_t n);

/* Encode one frame into out (TM_FRAME_MAX_ENCODED bytes), delimiter included. Returns its
 * length, or 0 if len > TM_FRAME_MAX_PAYLOAD. */
size_t tm_frame_encode(uint8_t type, uint16_t seq, const uint8_t *payload, size_t len, uint8_t *out);

typedef struct {
    uint8_t type;
    uint16_t seq;
    uint16_t len;
    const uint8_t *payload; /* points into the decoder: valid until the next push */
} tm_frame_t;

/* Byte-at-a-time COBS decoder: no second buffer, so the firmware needs one raw frame of RAM. */
typedef struct {
    uint8_t raw[TM_FRAME_MAX_RAW];
    size_t n;
    uint8_t code;      /* current COBS block code */
    uint8_t left;      /* data bytes still to come in this block */
    uint8_t overflow;  /* frame too long: drop until the delimiter */
} tm_decoder_t;

enum { TM_DECODE_MORE = 0, TM_DECODE_FRAME = 1, TM_DECODE_BAD = -1 };

void tm_decoder_reset(tm_decoder_t *d);
/* Feed one byte. TM_DECODE_FRAME fills *frame; TM_DECODE_BAD means a delimiter ended a frame
 * that failed its checks (an empty frame, i.e. two delimiters in a row, is silently skipped). */
int tm_decoder_push(tm_decoder_t *d, uint8_t byte, tm_frame_t *frame);

/* Little-endian field helpers (the wire is LE whatever the core). */
void tm_put_u16(uint8_t *p, uint16_t v);
void tm_put_u32(uint8_t *p, uint32_t v);
void tm_put_u64(uint8_t *p, uint64_t v);
uint16_t tm_get_u16(const uint8_t *p);
uint32_t tm_get_u32(const uint8_t *p);

#endif /* TM_PROTOCOL_H */
