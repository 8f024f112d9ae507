/* tm_alloc semantics, in the spirit of the generic part of glibc's malloc tests (tst-malloc,
 * tst-calloc, tst-realloc, tst-memalign, tst-malloc-usable), written anew; plus the hardening:
 * bad frees and overflows are reported and change no metadata byte. The invariant checker runs
 * after every step. Prints "ok" and exits 0, or names each failed CHECK. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "alloc_test.h"

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
    /* Any flipped bit in the structure (header offsets, pool records, size table, bitmaps) is
     * noticed, and no flip anywhere past the two pointers crashes the checker. Not noticeable by
     * design: the guard switch, a lower hint, a higher high-water or peak, the failure count. */
    const size_t n = tm_alloc_meta_bytes(&(tm_alloc_config_t){classes, 4, 16, 1}, HEAP) / 4u;
    uint32_t *w = (uint32_t *)(void *)meta;
    for (size_t k = 4; k < n; ++k) {
        const int unchecked = k == 7 || k == 11 || k == 12 || k == 14 || k == 22 || k == 23 || k == 25 || k == 26 || k == 27 ||
            (k >= 30 && k < 46); /* canary, hint, high_water, max_hole, peak, failed, large peak, large max, spills, bins */
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

static void test_default_heap(void)
{
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
    test_default_heap();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
