/* See nano_model.h. newlib-nano's policy, as its documentation and comments describe it:
 * - a chunk is a 4-byte size header then the payload; a request takes round4(n) + 4 (header)
 *   + 4 (room to 8-align the payload), at least 12 bytes; a payload moved up by 4 to its
 *   alignment leaves -4 just below it, pointing back to the header;
 * - one free list in address order, searched first fit; a fit is split when at least 12 bytes
 *   remain, and its tail is returned (newlib 3.3, Debian's; 4.1 returns the head); no fit takes
 *   more memory from sbrk;
 * - free inserts in address order and merges with both neighbours;
 * - realloc stays in place when the new size fits and is more than half the old; else it moves;
 * - memalign over-allocates, gives back a front piece of 12 bytes or more and a large tail.
 * Chunks are 32-bit offsets into the arena, so the layout is the board's on any host. */
#include "nano_model.h"

#include <errno.h>
#include <string.h>

#define NIL 0xFFFFFFFFu
#define MINCHUNK 12u

static uint8_t *arena;
static uint32_t capacity, top, head = NIL;

static int32_t size_of(uint32_t c)
{
    int32_t v;
    memcpy(&v, arena + c, 4);
    return v;
}

static void set_size(uint32_t c, int32_t v) { memcpy(arena + c, &v, 4); }

static uint32_t next_of(uint32_t c)
{
    uint32_t v;
    memcpy(&v, arena + c + 4, 4);
    return v;
}

static void set_next(uint32_t c, uint32_t v) { memcpy(arena + c + 4, &v, 4); }

static uint32_t chunk_of(const void *p)
{
    const uint32_t c = (uint32_t)((const uint8_t *)p - arena) - 4u;
    return size_of(c) < 0 ? c + (uint32_t)size_of(c) : c;
}

void nano_model_init(uint8_t *a, uint32_t bytes)
{
    arena = a;
    capacity = bytes;
    top = 0;
    head = NIL;
}

uint32_t nano_model_owned(void) { return top; }

void *nano_model_malloc(size_t n)
{
    if (n > 0x7FFFFFF0u) {
        errno = ENOMEM;
        return NULL;
    }
    uint32_t want = (((uint32_t)n + 3u) & ~3u) + 8u;
    want = want < MINCHUNK ? MINCHUNK : want;
    uint32_t prev = NIL, r = head;
    for (; r != NIL; prev = r, r = next_of(r)) {
        const int32_t rem = size_of(r) - (int32_t)want;
        if (rem < 0) {
            continue;
        }
        if (rem >= (int32_t)MINCHUNK) { /* split: the head stays on the list, the tail is returned */
            set_size(r, rem);
            r += (uint32_t)rem;
            set_size(r, (int32_t)want);
        } else if (prev == NIL) {
            head = next_of(r);
        } else {
            set_next(prev, next_of(r));
        }
        break;
    }
    if (r == NIL) {
        if (want > capacity - top) {
            errno = ENOMEM;
            return NULL;
        }
        r = top;
        top += want;
        set_size(r, (int32_t)want);
    }
    const uint32_t payload = (r + 4u + 7u) & ~7u;
    if (payload != r + 4u) {
        set_size(payload - 4u, -(int32_t)(payload - r - 4u));
    }
    return arena + payload;
}

void nano_model_free(void *ptr)
{
    if (!ptr) {
        return;
    }
    const uint32_t c = chunk_of(ptr), csize = (uint32_t)size_of(c);
    if (head == NIL || c < head) {
        if (head != NIL && c + csize == head) {
            set_size(c, (int32_t)(csize + (uint32_t)size_of(head)));
            set_next(c, next_of(head));
        } else {
            set_next(c, head);
        }
        head = c;
        return;
    }
    uint32_t p = head, q = next_of(head);
    while (q != NIL && q <= c) {
        p = q;
        q = next_of(q);
    }
    if (p + (uint32_t)size_of(p) == c) { /* merge with the chunk before, maybe the one after too */
        set_size(p, size_of(p) + (int32_t)csize);
        if (q != NIL && p + (uint32_t)size_of(p) == q) {
            set_size(p, size_of(p) + size_of(q));
            set_next(p, next_of(q));
        }
    } else if (p + (uint32_t)size_of(p) > c) {
        errno = ENOMEM; /* newlib's double-free check: overlaps a free chunk */
    } else if (q != NIL && c + csize == q) {
        set_size(c, (int32_t)csize + size_of(q));
        set_next(c, next_of(q));
        set_next(p, c);
    } else {
        set_next(c, q);
        set_next(p, c);
    }
}

static uint32_t usable(const void *ptr)
{
    const uint32_t c = (uint32_t)((const uint8_t *)ptr - arena) - 4u;
    const int32_t s = size_of(c);
    return s < 0 ? (uint32_t)(size_of(c + (uint32_t)s) - 4 + s) : (uint32_t)s - 4u;
}

void *nano_model_realloc(void *p, size_t n)
{
    if (!p) {
        return nano_model_malloc(n);
    }
    if (!n) {
        nano_model_free(p);
        return NULL;
    }
    const uint32_t old = usable(p);
    if (n <= old && old / 2u < n) {
        return p;
    }
    void *q = nano_model_malloc(n);
    if (q) {
        memcpy(q, p, old < n ? old : n);
        nano_model_free(p);
    }
    return q;
}

void *nano_model_calloc(size_t n, size_t size)
{
    if (size && n > (size_t)-1 / size) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = nano_model_malloc(n * size);
    if (p) {
        memset(p, 0, n * size);
    }
    return p;
}

void *nano_model_memalign(size_t align, size_t n)
{
    if (align & (align - 1u)) {
        return NULL;
    }
    align = align < 8u ? 8u : align;
    if (n > 0x7FFFFFF0u - align) {
        errno = ENOMEM;
        return NULL;
    }
    const uint32_t ma = ((uint32_t)(n < 4u ? 4u : n) + 3u) & ~3u;
    uint8_t *got = nano_model_malloc(ma + align - 8u);
    if (!got) {
        return NULL;
    }
    uint32_t c = chunk_of(got);
    const uint32_t aligned = (uint32_t)((((uintptr_t)(arena + c + 4u) + align - 1u) & ~(uintptr_t)(align - 1u)) - (uintptr_t)arena);
    const uint32_t offset = aligned - (c + 4u);
    if (offset >= MINCHUNK) { /* give the front back */
        const uint32_t front = c;
        c += offset;
        set_size(c, size_of(front) - (int32_t)offset);
        set_size(front, (int32_t)offset);
        nano_model_free(arena + front + 4u);
    } else if (offset) {
        set_size(c + offset, -(int32_t)offset);
    }
    const uint32_t have = (uint32_t)size_of(c);
    if (c + have > aligned + ma + MINCHUNK) { /* and a large tail */
        const uint32_t tail = aligned + ma;
        set_size(c, (int32_t)(tail - c));
        set_size(tail, (int32_t)(have - (tail - c)));
        nano_model_free(arena + tail + 4u);
    }
    return arena + aligned;
}
