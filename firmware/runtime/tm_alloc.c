/* tm_alloc: see tm_alloc.h; the layout in tm_alloc_impl.h. This file: the layout, blocks (which
 * region, bad pointers, realloc) and the API with its lock. The pools' O(1) path is
 * tm_alloc_pool.h (inlined here), the large region tm_alloc_large.c, the checker and stats
 * tm_alloc_check.c. */
#include "tm_alloc_pool.h"

#ifndef TM_ALLOC_ERRNO
#define TM_ALLOC_ERRNO 1
#endif
#if TM_ALLOC_ERRNO /* ENOMEM / EINVAL as the C library's malloc sets them; 0 spares the C library's
                    * errno state (on newlib, 100 B of RAM) in firmware that never reads it */
#include <errno.h>
#define SET_ERRNO(e) (errno = (e))
#else
#define SET_ERRNO(e) ((void)0)
#endif

static void set_range(uint32_t *bm, uint32_t from, uint32_t to)
{
    for (uint32_t i = from; i < to; ++i) {
        bm[i >> 5] |= MSB(i);
    }
}

static uint32_t small_max(const tm_heap_t *h)
{
    return h->n_classes ? h->pools[h->n_classes - 1u].size : 0u;
}

/* Metadata layout for a config; returns its total bytes (0: invalid). */
static uint32_t layout(const tm_alloc_config_t *c, size_t heap_bytes, tm_heap_t *h)
{
    if (!c || c->n_classes > TM_ALLOC_MAX_CLASSES || (c->n_classes && !c->classes) || c->granule < 8u ||
        c->granule > 4096u || (c->granule & (c->granule - 1u)) || heap_bytes > 0x7FFFFFFFu) {
        return 0;
    }
    /* pools[n_classes] is a sentinel whose base is the end of the pools (pool_at needs no bound) */
    uint32_t pool_bytes = 0, prev = 0, off = (uint32_t)(sizeof(tm_heap_t) + (c->n_classes + 1u) * sizeof(pool_t));
    for (uint32_t k = 0; k < c->n_classes; ++k) {
        const tm_alloc_class_t *cl = &c->classes[k];
        if (cl->size <= prev || cl->size % 8u || cl->size > 65536u || !cl->count || cl->count > TM_ALLOC_MAX_SLOTS ||
            (uint64_t)pool_bytes + (uint64_t)cl->size * cl->count > heap_bytes) {
            return 0;
        }
        pool_bytes += cl->size * cl->count;
        prev = cl->size;
    }
    const uint32_t table = (prev / 8u + 3u) & ~3u, shift = (uint32_t)__builtin_ctz(c->granule);
    uint32_t page_shift = 3u;
    while ((pool_bytes >> page_shift) >= MAX_PAGES) { /* a page map of MAX_PAGES bytes at most */
        ++page_shift;
    }
    const uint32_t pages = pool_bytes ? ((pool_bytes - 1u) >> page_shift) + 1u : 0u;
    uint32_t words_at = (off + table + ((pages + 3u) & ~3u)) / 4u;
    const uint32_t large_off = (pool_bytes + c->granule - 1u) & ~(c->granule - 1u);
    const uint32_t large_n = heap_bytes > large_off ? (uint32_t)(heap_bytes - large_off) >> shift : 0;
    if (h) {
        *h = (tm_heap_t){.n_classes = (uint8_t)c->n_classes, .shift = (uint8_t)shift,
                         .guard = c->canaries ? 4u : 0u, .page_shift = (uint8_t)page_shift,
                         .class_of = (uint16_t)off, .page_map = (uint16_t)(off + table), .pool_bytes = pool_bytes,
                         .large_off = large_off, .large_n = large_n,
                         .nc = words(words(large_n)), .n_bins = bins_for(large_n),
                         .round = c->granule - 1u + (c->canaries ? 4u : 0u)};
        h->small_lim = prev > h->guard ? prev - h->guard : 0u;
        h->pools[c->n_classes] = (pool_t){0, pool_bytes, 0, 0};
    }
    for (uint32_t k = 0, base = 0; k < c->n_classes; ++k) {
        const uint32_t size = c->classes[k].size, n = c->classes[k].count;
        if (h) {
            h->pools[k] = (pool_t){size, base, (uint32_t)(((1ull << 32) + size - 1u) / size), words_at};
            base += size * n;
        }
        words_at += 1u + words(n);
    }
    if (h) {
        h->st_at = words_at;
        h->heap_end = large_off + (large_n << shift);
    }
    return 4u * (words_at + large_words(large_n));
}

size_t tm_alloc_meta_bytes(const tm_alloc_config_t *cfg, size_t heap_bytes)
{
    return layout(cfg, heap_bytes, NULL);
}

void tm_heap_set_handler(tm_heap_t *h, tm_alloc_handler_t handler)
{
    h->on_error.f = handler ? handler : tm_alloc_on_error;
}

tm_heap_t *tm_heap_init(const tm_alloc_config_t *cfg, void *heap, size_t heap_bytes, void *meta, size_t meta_bytes)
{
    const uint32_t need = layout(cfg, heap_bytes, NULL);
    if (!need || !heap || !meta || meta_bytes < need || ((uintptr_t)meta & 7u) ||
        ((uintptr_t)heap & (cfg->granule - 1u))) {
        return NULL;
    }
    tm_heap_t *h = meta;
    memset(meta, 0, need);
    layout(cfg, heap_bytes, h);
    h->heap.p = heap;
    h->on_error.f = tm_alloc_on_error;
    h->magic = MAGIC;
    tm_large_init(h);
    uint8_t *table = (uint8_t *)meta + h->class_of, *map = (uint8_t *)meta + h->page_map;
    for (uint32_t k = h->n_classes; k-- > 0;) { /* sizes up to class k's map to class k */
        memset(table, (int)k, h->pools[k].size / 8u);
    }
    for (uint32_t k = 0, page = 0; k < h->n_classes; ++k) { /* a page maps to the pool holding its first byte */
        for (; page << h->page_shift < h->pools[k + 1u].base; ++page) {
            map[page] = (uint8_t)k;
        }
        const uint32_t count = (h->pools[k + 1u].base - h->pools[k].base) / h->pools[k].size;
        set_range(W(h, h->pools[k].bits) + 1, 0, count);
        set_range(W(h, h->pools[k].bits), 0, words(count));
        h->class_mask |= MSB(k);
    }
    return h;
}

/* ---- errors ------------------------------------------------------------------------------- */

/* Reported to the heap's handler; a heap never initialised (the default one, before its first
 * allocation) has none yet: the default handler. */
static void fault(tm_heap_t *h, int error, const void *p)
{
    (h->magic == MAGIC ? h->on_error.f : tm_alloc_on_error)(error, p);
}

/* ---- blocks ------------------------------------------------------------------------------- */

/* The default heap's metadata: zero until its first allocation initialises it. A zero header
 * sends every call down a slow path (no class has a free slot, no size fits), which initialises
 * it, so the fast paths need no test for that. */
static uint64_t default_meta[(TM_ALLOC_META_BYTES + 7u) / 8u]; /* a region of its own */
static tm_heap_t *default_init(void);
#define DEFAULT_H ((tm_heap_t *)(void *)default_meta)
#define DEFAULT_GUARD (TM_ALLOC_CANARIES ? 4u : 0u)
#define DEFAULT_CLASS_OF ((uint32_t)(sizeof(tm_heap_t) + (TM_ALLOC_NUM_CLASSES + 1u) * sizeof(pool_t)))

/* A request that failed: counted, and errno set as the C library's malloc does. */
void *tm_alloc_failed(tm_heap_t *h)
{
    ++h->failed;
    SET_ERRNO(ENOMEM);
    return NULL;
}

/* Everything the fast path does not take: zero or huge sizes, over-alignment, full pools; and the
 * default heap's first allocation. */
SLOW void *alloc_slow(tm_heap_t *h, size_t n, size_t align)
{
    if (h->magic != MAGIC) {
        return h == DEFAULT_H && default_init() ? alloc_slow(h, n, align) : NULL;
    }
    if (n <= h->heap_end && align <= h->heap_end) { /* also keeps n + guard from wrapping */
        const uint32_t need = (uint32_t)(n ? n : 1u) + h->guard;
        if (need <= small_max(h) && align <= TM_ALLOC_ALIGN) {
            uint8_t *p = from_pool(h, need);
            if (p) {
                return p;
            }
            ++h->spills;
        }
        if (align <= (1u << h->shift)) {
            return tm_large_alloc(h, need - h->guard); /* counts its own failure */
        }
        uint8_t *p = tm_large_aligned(h, need, (uint32_t)align >> h->shift);
        if (p) {
            return p;
        }
    }
    return tm_alloc_failed(h);
}

/* guard, class_of: the heap's (see tm_alloc_pool.h). */
INLINE void *alloc(tm_heap_t *h, size_t n, uint32_t guard, uint32_t class_of)
{
    if (n - 1u < h->small_lim) { /* n = 0 wraps: the slow path */
        const uint32_t m = class_fits(h, (uint32_t)n + guard, class_of);
        if (m) {
            return pool_take(h, CLZ(m), guard);
        }
    } else if (n - 1u < h->heap_end) { /* no class fits: the large region */
        return tm_large_alloc(h, n);
    }
    return alloc_slow(h, n, TM_ALLOC_ALIGN); /* zero, full pools, huge (to count and report) */
}

#define ALLOC(h, n) alloc(h, n, (h)->guard, (h)->class_of)

/* Which live block p is; reports and returns 0 if it is none. */
static int find(tm_heap_t *h, const void *ptr, block_t *b)
{
    const uintptr_t at = (uintptr_t)ptr, base = (uintptr_t)h->heap.p;
    int error = TM_ALLOC_ERR_INVALID_FREE;
    if (h->magic == MAGIC && at >= base && at - base < h->heap_end) {
        const uint32_t off = (uint32_t)(at - base), g = (off - h->large_off) >> h->shift;
        if (off < h->pool_bytes) {
            const pool_t *p = pool_at(h, off);
            const uint32_t k = (uint32_t)(p - h->pools);
            const uint32_t i = (off - p->base) / p->size;
            if (i * p->size == off - p->base) { /* else inside a slot */
                if (!get(W(h, p->bits) + 1, i)) {
                    *b = (block_t){(int)k, i, 0, p->size};
                    return 1;
                }
                error = TM_ALLOC_ERR_DOUBLE_FREE;
            }
        } else if (off >= h->large_off && !((off - h->large_off) & ((1u << h->shift) - 1u)) &&
                   (error = tm_large_block(h, g, &b->end)) == TM_ALLOC_OK) {
            *b = (block_t){-1, g, b->end, (b->end - g) << h->shift};
            return 1;
        }
    }
    fault(h, error, ptr);
    return 0;
}

static void release(tm_heap_t *h, const block_t *b)
{
    if (b->pool >= 0) {
        uint32_t *sum = W(h, h->pools[b->pool].bits);
        sum[1u + (b->index >> 5)] |= MSB(b->index);
        *sum |= MSB(b->index >> 5);
        h->class_mask |= MSB((uint32_t)b->pool);
    } else {
        tm_large_give(h, b->index, b->end);
        h->large_in_use -= b->cap;
    }
    h->in_use -= b->cap;
}

/* A block found, its guard checked (an overflow is reported; the block is still sound). */
static int take_block(tm_heap_t *h, const void *p, block_t *b)
{
    if (!find(h, p, b)) {
        return 0;
    }
    if (!guard_ok(h, p, b->cap)) {
        fault(h, TM_ALLOC_ERR_OVERFLOW, p);
    }
    return 1;
}

/* A pool slot the fast path would not free: a bad free, or an overflow to report. */
SLOW void free_slow(tm_heap_t *h, void *p)
{
    block_t b;
    if (take_block(h, p, &b)) {
        release(h, &b);
    }
}

INLINE void dealloc(tm_heap_t *h, void *p, uint32_t guard)
{
    const uintptr_t off = (uintptr_t)p - (uintptr_t)h->heap.p; /* below the heap: wraps high */
    if (off >= h->pool_bytes) {
        if (p) {
            tm_large_free(h, p); /* or not this heap's at all (or a heap never initialised) */
        }
    } else if (!pool_give(h, p, (uint32_t)off, guard)) {
        free_slow(h, p);
    }
}

static void *calloc_(tm_heap_t *h, size_t n, size_t size)
{
    if (size && n > (size_t)-1 / size) {
        ++h->failed;
        SET_ERRNO(ENOMEM);
        return NULL;
    }
    void *p = ALLOC(h, n * size);
    if (p) {
        memset(p, 0, n * size);
    }
    return p;
}

static void *memalign_(tm_heap_t *h, size_t align, size_t n)
{
    if (!align || (align & (align - 1u))) {
        SET_ERRNO(EINVAL);
        return NULL;
    }
    return alloc_slow(h, n, align);
}

static void *realloc_(tm_heap_t *h, void *p, size_t n)
{
    block_t b;
    if (!p) {
        return ALLOC(h, n);
    }
    if (!take_block(h, p, &b)) {
        return NULL;
    }
    if (!n) {
        release(h, &b);
        return NULL;
    }
    if (n <= b.cap - h->guard && b.pool >= 0) {
        return p; /* the slot already holds it */
    }
    if (b.pool < 0 && n <= ((size_t)h->large_n << h->shift)) { /* resize in place: shrink, or grow into free granules */
        const uint32_t k = ((uint32_t)n + h->guard + (1u << h->shift) - 1u) >> h->shift, cap = k << h->shift;
        if (tm_large_resize(h, b.index, b.end, k)) {
            h->in_use -= b.cap;
            account(h, cap);
            large_account(h, b.cap, cap);
            guard_put(h, p, cap);
            return p;
        }
    }
    uint8_t *q = ALLOC(h, n);
    if (q) {
        memcpy(q, p, n < b.cap - h->guard ? n : b.cap - h->guard);
        release(h, &b);
    }
    return q;
}

uint32_t tm_heap_owned(const tm_heap_t *h)
{
    const uint32_t large = h->high_water ? h->large_off - h->pool_bytes + (h->high_water << h->shift) : 0;
    return h->pool_bytes + large + meta_size(h) - 4u * (large_words(h->large_n) - large_words(h->high_water));
}

/* ---- the API: each call under the lock ----------------------------------------------------- */

void *tm_heap_malloc(tm_heap_t *h, size_t n)
{
    TM_ALLOC_LOCK();
    void *q = ALLOC(h, n);
    TM_ALLOC_UNLOCK();
    return q;
}

void tm_heap_free(tm_heap_t *h, void *p)
{
    TM_ALLOC_LOCK();
    dealloc(h, p, h->guard);
    TM_ALLOC_UNLOCK();
}

void *tm_heap_calloc(tm_heap_t *h, size_t n, size_t size)
{
    TM_ALLOC_LOCK();
    void *q = calloc_(h, n, size);
    TM_ALLOC_UNLOCK();
    return q;
}

void *tm_heap_memalign(tm_heap_t *h, size_t align, size_t n)
{
    TM_ALLOC_LOCK();
    void *q = memalign_(h, align, n);
    TM_ALLOC_UNLOCK();
    return q;
}

void *tm_heap_realloc(tm_heap_t *h, void *p, size_t n)
{
    TM_ALLOC_LOCK();
    void *q = realloc_(h, p, n);
    TM_ALLOC_UNLOCK();
    return q;
}

size_t tm_heap_usable_size(tm_heap_t *h, const void *p)
{
    block_t b;
    TM_ALLOC_LOCK();
    const size_t n = p && find(h, p, &b) ? b.cap - h->guard : 0;
    TM_ALLOC_UNLOCK();
    return n;
}

/* ---- the default heap ---------------------------------------------------------------------- */

static const tm_alloc_class_t default_classes[] = {TM_ALLOC_CLASSES};
static uint8_t default_heap[TM_ALLOC_HEAP_BYTES] __attribute__((aligned(TM_ALLOC_GRANULE)));

/* Called under the lock, so two threads never both initialise it. */
static __attribute__((noinline)) tm_heap_t *default_init(void)
{
    const tm_alloc_config_t cfg = {default_classes, TM_ALLOC_NUM_CLASSES, TM_ALLOC_GRANULE, TM_ALLOC_CANARIES};
    tm_heap_t *h = tm_heap_init(&cfg, default_heap, sizeof default_heap, default_meta, sizeof default_meta);
    if (!h) { /* tinymem_alloc_config.h disagrees with itself (its header stays zero): regenerate it */
        tm_alloc_on_error(TM_ALLOC_ERR_CORRUPT, default_meta);
    }
    return h;
}

static inline tm_heap_t *heap(void)
{
    return DEFAULT_H->magic == MAGIC ? DEFAULT_H : default_init();
}

tm_heap_t *tm_alloc_default_heap(void)
{
    TM_ALLOC_LOCK();
    tm_heap_t *h = heap();
    TM_ALLOC_UNLOCK();
    return h;
}

/* Traced under the lock: the trace's order is the heap's (a free is logged before the malloc
 * that reuses its address). */
#if TM_ALLOC_TRACE
#define TRACE(op, in, n, align, out) tm_alloc_trace(op, in, n, align, out)
#else
#define TRACE(op, in, n, align, out) (void)(out)
#endif

void *tm_malloc(size_t n)
{
    TM_ALLOC_LOCK();
    void *q = alloc(DEFAULT_H, n, DEFAULT_GUARD, DEFAULT_CLASS_OF); /* initialised by its slow path */
    TRACE('a', NULL, n, 0, q);
    TM_ALLOC_UNLOCK();
    return q;
}

void tm_free(void *p)
{
    TM_ALLOC_LOCK();
    TRACE('f', p, 0, 0, NULL);
    dealloc(DEFAULT_H, p, DEFAULT_GUARD); /* a zero header takes no pointer: reported, if not NULL */
    TM_ALLOC_UNLOCK();
}

void *tm_calloc(size_t n, size_t size)
{
    TM_ALLOC_LOCK();
    void *q = calloc_(DEFAULT_H, n, size);
    TRACE('c', NULL, n * size, 0, q);
    TM_ALLOC_UNLOCK();
    return q;
}

void *tm_realloc(void *p, size_t n)
{
    TM_ALLOC_LOCK();
    void *q = realloc_(DEFAULT_H, p, n);
    TRACE('r', p, n, 0, q);
    TM_ALLOC_UNLOCK();
    return q;
}

void *tm_memalign(size_t align, size_t n)
{
    TM_ALLOC_LOCK();
    void *q = memalign_(DEFAULT_H, align, n);
    TRACE('m', NULL, n, align, q);
    TM_ALLOC_UNLOCK();
    return q;
}

void *tm_aligned_alloc(size_t align, size_t n)
{
    return tm_memalign(align, n);
}

void tm_alloc_set_handler(tm_alloc_handler_t handler)
{
    TM_ALLOC_LOCK();
    tm_heap_t *h = heap();
    if (h) {
        tm_heap_set_handler(h, handler);
    }
    TM_ALLOC_UNLOCK();
}

__attribute__((weak)) void tm_alloc_trace(char op, const void *in, size_t size, size_t align, const void *out)
{
    (void)op, (void)in, (void)size, (void)align, (void)out;
}

#if defined(__unix__) || defined(__APPLE__)
#include <stdio.h>
#include <stdlib.h>
__attribute__((weak)) void tm_alloc_on_error(int error, const void *ptr)
{
    static const char *const what[] = {"ok", "double free", "invalid free", "overflow", "corrupt heap"};
    fprintf(stderr, "tm_alloc: %s at %p\n", what[error >= 0 && error <= 4 ? error : 4], ptr);
    abort();
}
#else
__attribute__((weak)) void tm_alloc_on_error(int error, const void *ptr)
{
    (void)error, (void)ptr;
    for (;;) { /* halt: the board runtime overrides this to report over serial first */
    }
}
#endif
