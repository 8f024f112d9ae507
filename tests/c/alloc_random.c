/* A long random trace on tm_alloc with the invariant checker after every operation.
 * usage: alloc_random SEED OPS [CHECK_EVERY] [HEAP_BYTES]
 * Every live block is filled with its own tag and verified when freed or moved (an overlap or a
 * lost byte shows up there); the checker runs after each operation; at the end everything is
 * freed and the heap must be empty. The heap is small enough that some requests fail. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "alloc_test.h"

#ifndef HEAP_MAX
#define HEAP_MAX 262144u
#endif
#define SLOTS 256u
static uint8_t heap[HEAP_MAX] __attribute__((aligned(64)));
static uint64_t meta[HEAP_MAX / 64u];
static uint32_t HEAP = 12288u;
static struct { uint8_t *p; size_t n; uint8_t tag; } live[SLOTS];

static uint64_t state;
static uint32_t rnd(uint32_t n) /* xorshift64*: reproducible from the seed alone */
{
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return (uint32_t)((state * 2685821657736338717ull) >> 33) % n;
}

static size_t rnd_size(void)
{
    const uint32_t r = rnd(100);
    return r < 3 ? 0 : r < 75 ? 1 + rnd(96) : r < 97 ? 97 + rnd(600) : 700 + rnd(HEAP / 6);
}

static int intact(int i)
{
    for (size_t k = 0; k < live[i].n; ++k) {
        if (live[i].p[k] != live[i].tag) {
            return 0;
        }
    }
    return 1;
}

int main(int argc, char **argv)
{
    const unsigned long seed = argc > 1 ? strtoul(argv[1], NULL, 0) : 1;
    const unsigned long ops = argc > 2 ? strtoul(argv[2], NULL, 0) : 1000000;
    const unsigned long every = argc > 3 ? strtoul(argv[3], NULL, 0) : 1;
    HEAP = argc > 4 ? (uint32_t)strtoul(argv[4], NULL, 0) : HEAP;
    if (HEAP > HEAP_MAX) {
        return 2;
    }
    state = seed * 0x9E3779B97F4A7C15ull + 1;
    static tm_alloc_class_t classes[8];
    uint32_t n_classes = 1 + rnd(6), size = 0;
    for (uint32_t k = 0, bytes = 0; k < n_classes; ++k) { /* a different pool layout per seed, half the heap at most */
        size += 8 * (1 + rnd(6));
        classes[k] = (tm_alloc_class_t){size, 4 + rnd(40)};
        if ((bytes += size * classes[k].count) > HEAP / 2) {
            n_classes = k;
        }
    }
    const tm_alloc_config_t cfg = {classes, n_classes, 8u << rnd(3), rnd(2)};
    tm_heap_t *h = tm_heap_init(&cfg, heap, HEAP, meta, sizeof meta);
    CHECK(h != NULL);
    if (!h) {
        return 1;
    }
    tm_heap_set_handler(h, record_error);
    unsigned long failed = 0, count = 0;
    for (unsigned long op = 0; op < ops && !failures; ++op) {
        const int i = (int)rnd(SLOTS);
        const uint32_t what = rnd(100);
        if (live[i].p && what < 45) {
            CHECK(intact(i));
            tm_heap_free(h, live[i].p);
            live[i].p = NULL;
            --count;
        } else if (live[i].p && what < 60) {
            const size_t n = rnd_size();
            uint8_t *q = tm_heap_realloc(h, live[i].p, n);
            const size_t keep = n < live[i].n ? n : live[i].n;
            if (n == 0) {
                live[i].p = NULL;
                --count;
            } else if (q) {
                for (size_t k = 0; k < keep; ++k) {
                    CHECK(q[k] == live[i].tag);
                }
                memset(q, live[i].tag, n);
                live[i].p = q;
                live[i].n = n;
            } else {
                CHECK(errno == ENOMEM && intact(i)); /* a failed realloc keeps the block */
                ++failed;
            }
        } else if (!live[i].p) {
            const size_t n = rnd_size();
            const uint32_t kind = rnd(10);
            const size_t align = (size_t)8 << rnd(6);
            uint8_t *p = kind < 7 ? tm_heap_malloc(h, n) : kind < 9 ? tm_heap_calloc(h, 1 + rnd(4), n / 4)
                                                         : tm_heap_memalign(h, align, n);
            if (!p) {
                ++failed;
                continue;
            }
            CHECK(((uintptr_t)p & (kind == 9 ? align - 1 : 7)) == 0);
            const size_t got = kind < 7 || kind == 9 ? n : 0;
            if (kind >= 7 && kind < 9) {
                for (size_t k = 0; k < n / 4; ++k) {
                    CHECK(p[k] == 0); /* calloc'ed memory is zero */
                }
            }
            live[i].p = p;
            live[i].n = got;
            live[i].tag = (uint8_t)(op * 131u + 7u);
            memset(p, live[i].tag, got);
            ++count;
        }
        if (op % every == 0) {
            const int err = tm_heap_check(h);
            if (err != TM_ALLOC_OK) {
                fprintf(stderr, "seed %lu: check failed with %d after op %lu\n", seed, err, op);
                return 1;
            }
        }
        CHECK(take_error() == 0);
    }
    tm_alloc_stats_t s;
    tm_heap_stats(h, &s);
    CHECK(s.live_blocks == count);
    for (unsigned i = 0; i < SLOTS; ++i) {
        if (live[i].p) {
            CHECK(intact((int)i));
            tm_heap_free(h, live[i].p);
        }
    }
    tm_heap_stats(h, &s);
    CHECK(s.live_blocks == 0 && s.in_use_bytes == 0 && tm_heap_check(h) == TM_ALLOC_OK);
    printf("seed %lu ops %lu failed %lu peak %u owned %u frag %u\n", seed, ops, failed, (unsigned)s.peak_in_use_bytes,
           (unsigned)s.owned_bytes, (unsigned)s.fragmentation_permille);
    return failures ? 1 : 0;
}
