/* tm_alloc's private layout, shared by tm_alloc.c (the operations) and tm_alloc_check.c (the
 * invariant checker and stats). See tm_alloc.c for the layout's description. */
#ifndef TM_ALLOC_IMPL_H
#define TM_ALLOC_IMPL_H

#include <string.h>

#include "tm_alloc.h"

#define MAGIC 0x746D6132u  /* "tma2": an initialised heap */
#define GUARD 0xCA7A11C5u  /* canary, xor-ed with the block address so a moved copy is invalid */
#define ALL 0xFFFFFFFFu
#define MSB(i) (0x80000000u >> ((i) & 31u))
#define CLZ(x) ((uint32_t)__builtin_clz(x)) /* never called with 0 */
#define MAX_PAGES 64u
#define BINS 16u /* hole sizes by powers of two, the last bin holding all from 2^15 granules */
#define INLINE static inline __attribute__((always_inline))
#define SLOW static __attribute__((noinline))

typedef struct { /* 16 bytes */
    uint32_t size, count;
    uint32_t base; /* byte offset of the pool in the heap */
    uint32_t bits; /* word offset in the metadata of the summary word; the slot words follow it */
} pool_t;

struct tm_heap {
    union { uint8_t *p; uint64_t pad; } heap; /* 8 bytes on every target */
    union { tm_alloc_handler_t f; uint64_t pad; } on_error;
    uint32_t magic, n_classes, shift, canary;
    uint32_t heap_end;             /* bytes of the heap in use: pools, gap, large region */
    uint32_t large_off, large_n;   /* byte offset of the large region; its granules */
    uint32_t hint, high_water;     /* every granule below hint is used; the most `top` ever was */
    uint32_t top, max_hole;        /* one past the last used granule; no free run below top is longer */
    uint32_t class_mask;           /* MSB-first: class c has a free slot */
    uint32_t small_max, class_of;  /* largest class; byte offset of the size -> class table */
    uint32_t page_shift, page_map; /* pool region in pages of 2^page_shift B; byte offset of page -> pool */
    uint32_t used;                 /* word offset of the large region's `used` bitmap (`start` follows) */
    uint32_t in_use, peak_in_use, failed;
    uint32_t large_in_use, large_peak, large_max; /* the large region: for the worst-case bound */
    uint32_t spills;               /* requests a class fits that found every fitting pool full */
    uint32_t meta_bytes, pool_bytes;
    uint32_t bin_start[BINS];      /* every hole of 2^b granules or more starts at bin_start[b] or later */
    pool_t pools[];
};

typedef struct { /* a live block, as free() and realloc() find it */
    int pool;        /* class index, or -1 for the large region */
    uint32_t index;  /* slot, or first granule */
    uint32_t end;    /* large: granule after the block */
    uint32_t cap;    /* bytes, guard included */
} block_t;

static inline uint32_t words(uint32_t bits) { return (bits + 31u) >> 5; }
static inline uint32_t *W(const tm_heap_t *h, uint32_t off) { return (uint32_t *)(uintptr_t)h + off; }
static inline uint32_t *used_bm(const tm_heap_t *h) { return W(h, h->used); }
static inline uint32_t *start_bm(const tm_heap_t *h) { return W(h, h->used + words(h->large_n)); }
/* Summaries of `used`, a bit per word: the word has a used granule / has a free granule. */
static inline uint32_t *any_used(const tm_heap_t *h) { return W(h, h->used + 2u * words(h->large_n)); }
static inline uint32_t *any_free(const tm_heap_t *h) { return any_used(h) + words(words(h->large_n)); }
static inline uint32_t bitmap_words(uint32_t granules) { return 2u * words(granules) + 2u * words(words(granules)); }
static inline int get(const uint32_t *bm, uint32_t i) { return (bm[i >> 5] & MSB(i)) != 0; }

/* First index >= i (and < n) whose bit is 1, or 0 when flip = ALL; n if none. */
static inline uint32_t next_bit(const uint32_t *bm, uint32_t n, uint32_t i, uint32_t flip)
{
    while (i < n) {
        const uint32_t w = (bm[i >> 5] ^ flip) & (ALL >> (i & 31u));
        if (w) {
            i = (i & ~31u) + CLZ(w);
            return i < n ? i : n;
        }
        i = (i | 31u) + 1u;
    }
    return n;
}

static inline int guard_ok(const tm_heap_t *h, const uint8_t *p, uint32_t cap)
{
    uint32_t g;
    memcpy(&g, p + cap - 4u, 4);
    return !h->canary || g == (GUARD ^ (uint32_t)(uintptr_t)p);
}

static inline uint32_t bin_of(uint32_t granules)
{
    const uint32_t b = 31u - CLZ(granules);
    return b < BINS ? b : BINS - 1u;
}

#endif /* TM_ALLOC_IMPL_H */
