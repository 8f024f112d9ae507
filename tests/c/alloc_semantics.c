/* tm_alloc semantics, in the spirit of the generic part of glibc's malloc tests (tst-malloc,
 * tst-calloc, tst-realloc, tst-memalign, tst-malloc-usable), written anew; plus the hardening:
 * bad frees and overflows are reported and change no metadata byte. The invariant checker runs
 * after every step. Prints "ok" and exits 0, or names each failed CHECK. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "alloc_test.h"
#include "tm_alloc_impl.h" /* white box: which header words are counters (the bit-flip test) */

#define HEAP 16384u
static uint8_t heap[HEAP] __attribute__((aligned(64)));
static uint64_t meta[256];
static const tm_alloc_class_t classes[] = {{16, 40}, {32, 20}, {48, 10}, {128, 8}};

static tm_heap_t *fresh(uint32_t canaries)
{
    const tm_alloc_config_t cfg = {classes, 4, 16, canaries};
    tm_heap_t *h = tm_heap_init(&cfg, heap, sizeof heap, meta, sizeof meta);
    CHECK(h != NULL);
    tm_heap_set_handler(h, record_error);
    take_error();
    return h;
}

#define OK(h) CHECK(tm_heap_check(h) == TM_ALLOC_OK)

static void test_config(void)
{
    const tm_alloc_class_t bad_order[] = {{32, 1}, {16, 1}}, bad_size[] = {{12, 1}};
    const tm_alloc_config_t good = {classes, 4, 16, 1}, c1 = {bad_order, 2, 16, 0}, c2 = {bad_size, 1, 16, 0},
                            c3 = {classes, 4, 24, 0}, c4 = {NULL, 0, 8, 0};
    CHECK(tm_alloc_meta_bytes(&good, HEAP) > 0 && tm_alloc_meta_bytes(&good, HEAP) <= sizeof meta);
    CHECK(tm_alloc_meta_bytes(&c1, HEAP) == 0 && tm_alloc_meta_bytes(&c2, HEAP) == 0 && tm_alloc_meta_bytes(&c3, HEAP) == 0);
    CHECK(tm_heap_init(&good, heap + 8, HEAP - 8, meta, sizeof meta) == NULL); /* heap not on a granule */
    CHECK(tm_heap_init(&good, heap, HEAP, meta, tm_alloc_meta_bytes(&good, HEAP) - 4) == NULL);
    CHECK(tm_heap_init(&good, heap, 100, meta, sizeof meta) == NULL); /* pools do not fit */
    tm_heap_t *h = tm_heap_init(&c4, heap, HEAP, meta, sizeof meta); /* no classes: all large */
    CHECK(h != NULL);
    void *p = tm_heap_malloc(h, 1);
    CHECK(p != NULL && tm_heap_usable_size(h, p) == 8);
    tm_heap_free(h, p);
    OK(h);
}

static void test_malloc(void)
{
    tm_heap_t *h = fresh(1);
    void *z1 = tm_heap_malloc(h, 0), *z2 = tm_heap_malloc(h, 0);
    CHECK(z1 && z2 && z1 != z2); /* malloc(0): a unique pointer, as glibc */
    tm_heap_free(h, z1);
    tm_heap_free(h, z2);
    tm_heap_free(h, NULL); /* no-op */
    CHECK(take_error() == 0);
    errno = 0;
    CHECK(tm_heap_malloc(h, (size_t)-1) == NULL && errno == ENOMEM);
    CHECK(tm_heap_malloc(h, (size_t)-1 / 2) == NULL && tm_heap_malloc(h, HEAP + 1) == NULL);
    void *p[64];
    for (int i = 0; i < 64; ++i) { /* every size 1..64 (pools and fallbacks), 8-aligned, usable */
        p[i] = tm_heap_malloc(h, (size_t)i + 1);
        CHECK(p[i] && ((uintptr_t)p[i] & 7u) == 0 && tm_heap_usable_size(h, p[i]) >= (size_t)i + 1);
        memset(p[i], i, (size_t)i + 1);
        OK(h);
    }
    for (int i = 0; i < 64; ++i) {
        for (int j = 0; j <= i; ++j) {
            CHECK(((uint8_t *)p[i])[j] == (uint8_t)i); /* no block overlaps another */
        }
        tm_heap_free(h, p[i]);
        OK(h);
    }
    tm_alloc_stats_t s;
    tm_heap_stats(h, &s);
    CHECK(s.in_use_bytes == 0 && s.live_blocks == 0 && s.peak_in_use_bytes > 0 && s.failed_allocs == 3);
    CHECK(take_error() == 0);
}

static void test_exhaustion(void)
{
    tm_heap_t *h = fresh(0);
    static void *p[2048];
    int n = 0;
    while (n < 2048 && (p[n] = tm_heap_malloc(h, 24)) != NULL) {
        ++n;
    }
    CHECK(n > 100 && n < 2048 && errno == ENOMEM);
    OK(h);
    for (int i = 0; i < n; i += 2) { /* free every other block, then all: no leak */
        tm_heap_free(h, p[i]);
    }
    OK(h);
    for (int i = 1; i < n; i += 2) {
        tm_heap_free(h, p[i]);
    }
    OK(h);
    int again = 0;
    while (again < 2048 && (p[again] = tm_heap_malloc(h, 24)) != NULL) {
        ++again;
    }
    CHECK(again == n);
    tm_alloc_stats_t s;
    tm_heap_stats(h, &s);
    CHECK(s.live_blocks == (uint32_t)n && s.fragmentation_permille == 0);
    void *big = tm_heap_malloc(h, 4000);
    CHECK(big == NULL);
}

static void test_calloc(void)
{
    tm_heap_t *h = fresh(1);
    void *d = tm_heap_malloc(h, 2000); /* dirty memory, then calloc must hand it back zeroed */
    memset(d, 0xAB, 2000);
    tm_heap_free(h, d);
    uint8_t *c = tm_heap_calloc(h, 100, 20);
    CHECK(c != NULL);
    for (int i = 0; i < 2000; ++i) {
        CHECK(c[i] == 0);
    }
    errno = 0;
    CHECK(tm_heap_calloc(h, (size_t)-1 / 2 + 2, 2) == NULL && errno == ENOMEM); /* n * size overflows */
    CHECK(tm_heap_calloc(h, (size_t)1 << (sizeof(size_t) * 4), (size_t)1 << (sizeof(size_t) * 4)) == NULL);
    void *z = tm_heap_calloc(h, 0, 16);
    CHECK(z != NULL);
    tm_heap_free(h, z);
    tm_heap_free(h, c);
    OK(h);
}

static void test_realloc(void)
{
    tm_heap_t *h = fresh(1);
    uint8_t *p = tm_heap_realloc(h, NULL, 10); /* realloc(NULL, n) == malloc(n) */
    CHECK(p != NULL);
    for (int i = 0; i < 10; ++i) {
        p[i] = (uint8_t)i;
    }
    size_t sizes[] = {12, 100, 600, 3000, 5000, 700, 40, 8, 2500};
    size_t prev = 10;
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; ++k) { /* pool <-> large, grow, shrink: contents kept */
        uint8_t *q = tm_heap_realloc(h, p, sizes[k]);
        CHECK(q != NULL);
        const size_t keep = prev < sizes[k] ? prev : sizes[k];
        for (size_t i = 0; i < keep; ++i) {
            CHECK(q[i] == (uint8_t)i);
        }
        for (size_t i = keep; i < sizes[k]; ++i) {
            q[i] = (uint8_t)i;
        }
        p = q;
        prev = sizes[k];
        OK(h);
    }
    /* In place: a large block followed by free granules grows without moving. */
    uint8_t *a = tm_heap_malloc(h, 1000);
    uint8_t *b = tm_heap_realloc(h, a, 1500);
    CHECK(b == a);
    uint8_t *s = tm_heap_realloc(h, b, 300); /* shrinking frees the tail, in place */
    CHECK(s == a);
    OK(h);
    /* A failed realloc leaves the block as it was. */
    errno = 0;
    CHECK(tm_heap_realloc(h, s, HEAP * 2) == NULL && errno == ENOMEM);
    CHECK(tm_heap_usable_size(h, s) >= 300);
    CHECK(tm_heap_realloc(h, s, 0) == NULL); /* realloc(p, 0) frees p */
    tm_heap_free(h, p);
    OK(h);
    tm_alloc_stats_t st;
    tm_heap_stats(h, &st);
    CHECK(st.live_blocks == 0 && st.in_use_bytes == 0 && take_error() == 0);
}

static void test_memalign(void)
{
    tm_heap_t *h = fresh(1);
    void *filler = tm_heap_malloc(h, 500); /* so that alignment has to skip granules */
    for (size_t align = 1; align <= 2048; align *= 2) {
        void *p = tm_heap_memalign(h, align, 40);
        CHECK(p != NULL && ((uintptr_t)p & (align - 1u)) == 0);
        memset(p, 1, 40);
        OK(h);
        tm_heap_free(h, p);
    }
    errno = 0;
    CHECK(tm_heap_memalign(h, 24, 8) == NULL && errno == EINVAL);
    CHECK(tm_heap_memalign(h, 0, 8) == NULL);
    tm_heap_free(h, filler);
    OK(h);
}

static void test_bad_frees(void)
{
    tm_heap_t *h = fresh(1);
    uint8_t *small = tm_heap_malloc(h, 20), *large = tm_heap_malloc(h, 700);
    tm_heap_free(h, small);
    tm_heap_free(h, small);
    CHECK(take_error() == TM_ALLOC_ERR_DOUBLE_FREE && last_error_ptr == small);
    tm_heap_free(h, large);
    tm_heap_free(h, large);
    CHECK(take_error() == TM_ALLOC_ERR_DOUBLE_FREE);
    large = tm_heap_malloc(h, 700);
    small = tm_heap_malloc(h, 20);
    tm_heap_free(h, large + 16); /* inside a block */
    CHECK(take_error() == TM_ALLOC_ERR_INVALID_FREE);
    tm_heap_free(h, small + 8);
    CHECK(take_error() == TM_ALLOC_ERR_INVALID_FREE);
    static uint8_t elsewhere[16];
    tm_heap_free(h, elsewhere); /* never from this heap */
    CHECK(take_error() == TM_ALLOC_ERR_INVALID_FREE);
    CHECK(tm_heap_realloc(h, elsewhere, 8) == NULL && take_error() == TM_ALLOC_ERR_INVALID_FREE);
    tm_heap_free(h, heap + HEAP - 1);
    CHECK(take_error() == TM_ALLOC_ERR_INVALID_FREE);
    OK(h); /* nothing was freed by the bad calls */
    tm_alloc_stats_t s;
    tm_heap_stats(h, &s);
    CHECK(s.live_blocks == 2);
    /* One byte past the usable size breaks the guard: reported at free, the block still freed. */
    small[tm_heap_usable_size(h, small)] ^= 1;
    CHECK(tm_heap_check(h) == TM_ALLOC_ERR_OVERFLOW);
    tm_heap_free(h, small);
    CHECK(take_error() == TM_ALLOC_ERR_OVERFLOW && last_error_ptr == small);
    large[tm_heap_usable_size(h, large) + 2] = 0;
    tm_heap_free(h, large);
    CHECK(take_error() == TM_ALLOC_ERR_OVERFLOW);
    OK(h);
    tm_heap_stats(h, &s);
    CHECK(s.live_blocks == 0);
}

static void test_metadata_out_of_band(void)
{
    tm_heap_t *h = fresh(1);
    void *p[40];
    for (int i = 0; i < 40; ++i) {
        p[i] = tm_heap_malloc(h, (size_t)(i * 37 % 900) + 1);
    }
    for (int i = 0; i < 40; i += 3) {
        tm_heap_free(h, p[i]);
    }
    static uint8_t before[sizeof meta];
    memcpy(before, meta, sizeof meta);
    /* The worst overflow: every heap byte overwritten, live and freed blocks alike. */
    for (int pattern = 0; pattern < 3; ++pattern) {
        memset(heap, pattern == 0 ? 0x00 : pattern == 1 ? 0xFF : 0x5A, sizeof heap);
        CHECK(memcmp(before, meta, sizeof meta) == 0); /* not one metadata byte changed */
        CHECK(tm_heap_check(h) == TM_ALLOC_ERR_OVERFLOW); /* the guards saw it; the structure is intact */
    }
    for (int i = 1; i < 40; ++i) { /* and the heap still works: every block frees, guards reported */
        if (i % 3) {
            tm_heap_free(h, p[i]);
        }
    }
    CHECK(tm_heap_check(h) == TM_ALLOC_OK);
    /* The checker catches real metadata damage (something an overflow cannot cause here). */
    /* Any flipped bit in the structure (header, pool records, size table, page map, bitmaps, the
     * large region's rows and longest holes) is noticed, and no flip anywhere past the two
     * pointers crashes the checker. Not noticeable by design: a higher high-water or peak, a
     * higher bound on the longest hole, and the failure and spill counts. */
    const size_t n = tm_alloc_meta_bytes(&(tm_alloc_config_t){classes, 4, 16, 1}, HEAP) / 4u;
    const size_t hints[] = {offsetof(tm_heap_t, high_water), offsetof(tm_heap_t, peak_in_use), offsetof(tm_heap_t, fit_max),
                            offsetof(tm_heap_t, failed), offsetof(tm_heap_t, large_peak),
                            offsetof(tm_heap_t, large_max), offsetof(tm_heap_t, spills)};
    uint32_t *w = (uint32_t *)(void *)meta;
    for (size_t k = offsetof(tm_heap_t, magic) / 4u; k < n; ++k) {
        int unchecked = 0;
        for (size_t i = 0; i < sizeof hints / sizeof hints[0]; ++i) {
            unchecked |= k == hints[i] / 4u;
        }
        for (int bit = 0; bit < 32; ++bit) {
            w[k] ^= 1u << bit;
            const int found = tm_heap_check(h);
            w[k] ^= 1u << bit;
            if (found == TM_ALLOC_OK && !unchecked) {
                fprintf(stderr, "metadata word %zu bit %d flipped unnoticed\n", k, bit);
                ++failures;
            }
        }
    }
    CHECK(tm_heap_check(h) == TM_ALLOC_OK);
}

#if UINTPTR_MAX > 0xFFFFFFFFu
/* Runs of 2^16 granules and more: past a word's 16-bit longest hole, measured from the start
 * bits (a 64-bit host only: the heap is larger than the emulated board's RAM). Blocks come from
 * the end of the lowest hole that fits. */
static void test_long_runs(void)
{
    enum { BIG = 600000, N = BIG + 4096 };
    static uint8_t big_heap[N] __attribute__((aligned(64)));
    static uint64_t big_meta[4096];
    const tm_alloc_config_t cfg = {NULL, 0, 8, 0};
    tm_heap_t *h = tm_heap_init(&cfg, big_heap, N, big_meta, sizeof big_meta);
    CHECK(h != NULL);
    tm_heap_set_handler(h, record_error);
    take_error();
    uint8_t *a = tm_heap_malloc(h, BIG), *b = tm_heap_malloc(h, 100);
    CHECK(a == big_heap && b == big_heap + BIG && tm_heap_usable_size(h, a) == BIG);
    OK(h);
    tm_heap_free(h, a); /* a hole of 75,000 granules */
    OK(h);
    a = tm_heap_malloc(h, BIG - 8); /* 74,999 granules: longer than a longest hole records */
    CHECK(a == big_heap + 8 && tm_heap_usable_size(h, a) == BIG - 8);
    OK(h);
    tm_heap_free(h, a);
    uint8_t *c = tm_heap_malloc(h, 16), *d = tm_heap_malloc(h, 300000);
    CHECK(c == big_heap + BIG - 16 && d == c - 300000 && tm_heap_usable_size(h, d) == 300000);
    OK(h);
    CHECK(tm_heap_realloc(h, c, 200000) == d - 200000); /* b blocks it: moved, into the hole before d */
    tm_heap_free(h, d);
    tm_heap_free(h, b);
    OK(h);
    tm_alloc_stats_t st;
    tm_heap_stats(h, &st);
    CHECK(st.live_blocks == 1 && st.in_use_bytes == 200000 && take_error() == 0);
}
#endif

#if defined(TM_ALLOC_LOCK_IRQ) && TM_ALLOC_LOCK_IRQ
/* The bare-metal lock masks interrupts for each call and restores the caller's mask after it;
 * the error handler runs inside the critical section. */
static uint32_t primask(void)
{
    uint32_t m;
    __asm__ volatile("mrs %0, primask" : "=r"(m));
    return m;
}

static uint32_t handler_primask;
static void masked_handler(int error, const void *ptr)
{
    handler_primask = primask();
    record_error(error, ptr);
}

static void test_irq_lock(void)
{
    tm_heap_t *h = fresh(1);
    tm_heap_set_handler(h, masked_handler);
    CHECK(primask() == 0);
    void *p = tm_heap_malloc(h, 40), *q = tm_heap_malloc(h, 900);
    CHECK(p && q && primask() == 0); /* interrupts on again after each call */
    __asm__ volatile("cpsid i" ::: "memory");
    tm_heap_free(h, q);
    CHECK(primask() == 1); /* a caller's own critical section stays closed */
    __asm__ volatile("cpsie i" ::: "memory");
    tm_heap_free(h, p);
    tm_heap_free(h, p);
    CHECK(take_error() == TM_ALLOC_ERR_DOUBLE_FREE && handler_primask == 1 && primask() == 0);
    OK(h);
    printf("irq lock ok\n");
}
#endif

static void test_default_heap(void)
{
    tm_free(NULL); /* before its first allocation (a zero header): nothing to do */
    void *z = tm_realloc(NULL, 0); /* realloc(NULL, 0) == malloc(0), through the slow path that initialises it */
    CHECK(z != NULL);
    tm_free(z);
    void *p = tm_malloc(100), *q = tm_calloc(4, 4), *r = tm_aligned_alloc(64, 100);
    CHECK(p && q && r && ((uintptr_t)r & 63u) == 0);
    p = tm_realloc(p, 2000);
    CHECK(p != NULL);
    tm_free(p);
    tm_free(q);
    tm_free(r);
    CHECK(tm_heap_check(tm_alloc_default_heap()) == TM_ALLOC_OK);
    tm_alloc_stats_t s;
    tm_heap_stats(tm_alloc_default_heap(), &s);
    CHECK(s.live_blocks == 0 && s.heap_bytes <= 16384);
    tm_alloc_set_handler(record_error); /* its bad frees go to its handler */
    static uint8_t elsewhere[16];
    tm_free(elsewhere);
    CHECK(take_error() == TM_ALLOC_ERR_INVALID_FREE && last_error_ptr == elsewhere);
    printf("default_meta_bytes %u\n", (unsigned)s.meta_bytes);
}

int main(int argc, char **argv)
{
    (void)argc, (void)argv;
    test_config();
    test_malloc();
    test_exhaustion();
    test_calloc();
    test_realloc();
    test_memalign();
    test_bad_frees();
    test_metadata_out_of_band();
#if UINTPTR_MAX > 0xFFFFFFFFu
    test_long_runs();
#endif
#if defined(TM_ALLOC_LOCK_IRQ) && TM_ALLOC_LOCK_IRQ
    test_irq_lock();
#endif
    test_default_heap();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
