/* tm_alloc's private layout, shared by tm_alloc.c (layout, pools, the API), tm_alloc_large.c (the
 * large region) and tm_alloc_check.c (the invariant checker and stats).
 *
 * The heap holds user bytes only: one pool per size class, back to back, then the large region,
 * granule-aligned. The metadata region holds, in order: struct tm_heap with its pool records (and
 * a sentinel record), a size -> class table, a page -> pool map of the pool region, each pool's
 * free-slot bitmap (a summary word, then one bit per slot), and the large region's maps (see
 * tm_alloc_large.c). Offsets, never host pointers, link them, so the metadata has the same size
 * on a 64-bit host as on a 32-bit board (alloc-config computes it: tinymem/alloc/config.py).
 *
 * Bitmaps are MSB-first: index i is bit 31 - (i % 32) of word i / 32, so count-leading-zeros
 * finds the lowest index set (the lowest address: first fit, fewer bytes touched). */
#ifndef TM_ALLOC_IMPL_H
#define TM_ALLOC_IMPL_H

#include <string.h>

#include "tm_alloc.h"

/* The build's config: tinymem_alloc_config.h (`tinymem alloc-config` writes it), or the defaults. */
#if defined(__has_include)
#if __has_include("tinymem_alloc_config.h")
#include "tinymem_alloc_config.h"
#endif
#endif
#ifndef TM_ALLOC_HEAP_BYTES
#include "tm_alloc_default_config.h"
#endif

/* The lock every API call holds (one for all heaps). Default: none (one thread, no allocation
 * from interrupts). Define TM_ALLOC_LOCK() and TM_ALLOC_UNLOCK() (statements, in the config header
 * or the build flags) to take an RTOS mutex or pthread mutex; or set TM_ALLOC_LOCK_IRQ to 1 for a
 * bare-metal critical section on Cortex-M: interrupts masked, their previous state restored, so
 * interrupt handlers may allocate too. The error handler and the trace hook run under the lock:
 * they must not call the allocator. */
#if !defined(TM_ALLOC_LOCK) && defined(TM_ALLOC_LOCK_IRQ) && TM_ALLOC_LOCK_IRQ
static inline uint32_t tm_irq_save(void)
{
    uint32_t primask;
    __asm__ volatile("mrs %0, primask\n\tcpsid i" : "=r"(primask) : : "memory");
    return primask;
}
static inline void tm_irq_restore(uint32_t primask)
{
    __asm__ volatile("msr primask, %0" : : "r"(primask) : "memory");
}
#define TM_ALLOC_LOCK() const uint32_t tm_irq_state_ = tm_irq_save()
#define TM_ALLOC_UNLOCK() tm_irq_restore(tm_irq_state_)
#endif
#ifndef TM_ALLOC_LOCK
#define TM_ALLOC_LOCK() ((void)0)
#define TM_ALLOC_UNLOCK() ((void)0)
#endif

#define MAGIC 0x746D6133u /* "tma3": an initialised heap */
#define GUARD 0xCA7A11C5u /* canary, xor-ed with the block address so a moved copy is invalid */
#define ALL 0xFFFFFFFFu
#if defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__)
/* The bit of index i % 32, by a rotate: ARM's ROR takes its count mod 32, so no mask (one
 * instruction fewer per bit on Cortex-M3/M4, which do many). */
static inline uint32_t msb_(uint32_t i)
{
    uint32_t bit;
    __asm__("ror %0, %1, %2" : "=r"(bit) : "r"(0x80000000u), "r"(i));
    return bit;
}
#define MSB(i) msb_(i)
#else
#define MSB(i) (0x80000000u >> ((i) & 31u))
#endif
#define CLZ(x) ((uint32_t)__builtin_clz(x)) /* never called with 0 */
#define CTZ(x) ((uint32_t)__builtin_ctz(x))
#define MAX_PAGES 64u
#define INLINE static inline __attribute__((always_inline))
#define SLOW static __attribute__((noinline))

typedef struct { /* 16 bytes */
    uint32_t size;  /* slot bytes */
    uint32_t base;  /* byte offset of the pool in the heap */
    uint32_t recip; /* ceil(2^32 / size): slot = (offset * recip) >> 32, exact for every slot start */
    uint32_t bits;  /* word offset in the metadata of the summary word; the slot words follow it */
} pool_t;

/* The large region's maps and its first byte, located by 32-bit fields: on a 32-bit target the
 * address itself (each operation saves an add per map), on a 64-bit host, where an address does
 * not fit, a word offset from the header (a byte offset from the heap for the region). Either
 * way the header has one size, which alloc-config computes. */
#if UINTPTR_MAX == 0xFFFFFFFFu
#define AT(h, f) ((void *)(uintptr_t)(f))
#define AT_VALUE(h, p) ((uint32_t)(uintptr_t)(p))
#define LARGE_ADDR(h) ((uintptr_t)(h)->base)
#define LARGE_AT_VALUE(h) ((uint32_t)(uintptr_t)((h)->heap.p + (h)->large_off))
#else
#define AT(h, f) ((void *)((uint32_t *)(uintptr_t)(h) + (f)))
#define AT_VALUE(h, p) ((uint32_t)((const uint32_t *)(const void *)(p) - (const uint32_t *)(const void *)(h)))
#define LARGE_ADDR(h) ((uintptr_t)(h)->heap.p + (h)->base)
#define LARGE_AT_VALUE(h) ((h)->large_off)
#endif

struct tm_heap { /* 128 bytes and the pool records, on every target */
    union { uint8_t *p; uint64_t pad; } heap;
    union { tm_alloc_handler_t f; uint64_t pad; } on_error;
    uint32_t magic;
    uint32_t class_mask;             /* MSB-first: class k has a free slot */
    uint32_t small_lim;              /* requests 1..small_lim fit the largest class, guard included */
    uint32_t pool_bytes;             /* pools end here; the large region starts at large_off */
    uint32_t in_use, peak_in_use;
    uint16_t class_of, page_map;     /* byte offsets of the size -> class table and the page -> pool map */
    uint8_t n_classes, shift, guard, page_shift; /* granule 1 << shift; guard: 4 with canaries, else 0 */
    uint32_t large_off, large_n;     /* byte offset of the large region; its granules */
    uint32_t heap_end;               /* large_off + the large region's bytes (and a check on large_n) */
    uint32_t st_at;                  /* word offset of the large region's maps */
    uint32_t fit_max;                /* no hole is longer (granules): raised as holes grow, lowered by a search that fails */
    uint32_t nc, n_bins;             /* chunks of 32 words of a granule bitmap, hole-size bins */
    uint32_t base, runs, sum, rows, longest; /* AT fields: the region, and its maps (tm_alloc_large.c) */
    uint32_t round;                  /* granule - 1 + guard: granules = (n + round) >> shift */
    uint32_t top, high_water;        /* one past the last used granule; the most top ever was */
    uint32_t large_in_use, large_peak, large_max; /* the large region: for the worst-case bound */
    uint32_t failed;
    uint32_t spills;                 /* requests a class fits that found every fitting pool full */
    pool_t pools[];
};

typedef struct { /* a live block, as free() and realloc() find it */
    int pool;       /* class index, or -1 for the large region */
    uint32_t index; /* slot, or first granule */
    uint32_t end;   /* large: granule after the block */
    uint32_t cap;   /* bytes, guard included */
} block_t;

static inline uint32_t words(uint32_t bits) { return (bits + 31u) >> 5; }
static inline uint32_t *W(const tm_heap_t *h, uint32_t off) { return (uint32_t *)(uintptr_t)h + off; }
static inline int get(const uint32_t *bm, uint32_t i) { return (bm[i >> 5] & MSB(i)) != 0; }

/* The large region's maps, for n granules (tm_alloc_large.c), in words: per word of granules its
 * run starts and hole starts (interleaved: one load fetches both), a bit per word with a start,
 * per chunk of 32 words a row per hole-size bin (at most LARGE_BINS), and per word its longest
 * hole (16 bits), recorded up to LONG_HOLE: longer ones are measured when it matters, and share
 * the last bin. */
#define LARGE_BINS 10u
#define LONG_HOLE ((1u << LARGE_BINS) - 1u)
static inline uint32_t bins_for(uint32_t n) /* a bin per bit of n, up to LARGE_BINS */
{
    const uint32_t b = n ? 32u - CLZ(n) : 0u;
    return b < LARGE_BINS ? b : LARGE_BINS;
}
static inline uint32_t large_words(uint32_t n)
{
    return 2u * words(n) + words(words(n)) * (1u + bins_for(n)) + (words(n) + 1u) / 2u;
}
static inline uint32_t meta_size(const tm_heap_t *h) { return 4u * (h->st_at + large_words(h->large_n)); }
static inline uint32_t bin_of(uint32_t granules) { return 31u - CLZ(granules); }

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
    return !h->guard || g == (GUARD ^ (uint32_t)(uintptr_t)p);
}

INLINE void guard_put(const tm_heap_t *h, uint8_t *p, uint32_t cap)
{
    if (h->guard) {
        const uint32_t g = GUARD ^ (uint32_t)(uintptr_t)p;
        memcpy(p + cap - 4u, &g, 4);
    }
}

INLINE void account(tm_heap_t *h, uint32_t cap)
{
    const uint32_t in_use = h->in_use + cap;
    h->in_use = in_use;
    if (in_use > h->peak_in_use) { /* a conditional store: no move, no second store */
        h->peak_in_use = in_use;
    }
}

/* Large-region accounting: its peak and its largest block bound the worst case (alloc-config). */
INLINE void large_account(tm_heap_t *h, uint32_t old_cap, uint32_t new_cap)
{
    h->large_in_use = h->large_in_use - old_cap + new_cap;
    h->large_peak = h->large_in_use > h->large_peak ? h->large_in_use : h->large_peak;
    h->large_max = new_cap > h->large_max ? new_cap : h->large_max;
}

/* The large region (tm_alloc_large.c), in granules. */
void tm_large_init(tm_heap_t *h);           /* its AT fields, once the layout is set */
void *tm_large_alloc(tm_heap_t *h, size_t n); /* malloc(n), n within the heap; a failure counted */
void *tm_alloc_failed(tm_heap_t *h);          /* counts a failed request, sets errno: NULL (tm_alloc.c) */
void *tm_large_aligned(tm_heap_t *h, uint32_t need, uint32_t align); /* need bytes on align granules */
int tm_large_block(const tm_heap_t *h, uint32_t g, uint32_t *end); /* TM_ALLOC_OK: a block [g, *end) */
void tm_large_give(tm_heap_t *h, uint32_t g, uint32_t end);
void tm_large_free(tm_heap_t *h, const void *p); /* free(p), p past the pools: reports errors */
int tm_large_resize(tm_heap_t *h, uint32_t g, uint32_t end, uint32_t k); /* 1: [g, g + k) now */

#endif /* TM_ALLOC_IMPL_H */
