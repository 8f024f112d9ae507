/* tm_alloc: see tm_alloc.h.
 *
 * Layout. The heap (user bytes only) holds one pool per size class, back to back, then the
 * large region, granule-aligned. The metadata region holds, in order: struct tm_heap with its
 * pool records, a size -> class table, a page -> pool map of the pool region, each pool's
 * free-slot bitmap (a summary word, then one bit per slot), and the large region's `used` and
 * `start` bitmaps (1 bit per granule each). Offsets, never pointers, link them, so the metadata
 * has the same size on a 64-bit host as on a 32-bit board (alloc-config computes it).
 *
 * Bitmaps are MSB-first: index i is bit 31 - (i % 32) of word i / 32, so count-leading-zeros
 * finds the lowest index set (the lowest address: first fit, fewer bytes touched). */
#include "tm_alloc_impl.h"

#if defined(__has_include)
#if __has_include("tinymem_alloc_config.h")
#include "tinymem_alloc_config.h"
#endif
#endif
#ifndef TM_ALLOC_HEAP_BYTES
#include "tm_alloc_default_config.h"
#endif

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

static void set_range(uint32_t *bm, uint32_t from, uint32_t to, int on)
{
    if (from >= to) {
        return;
    }
    uint32_t j = from >> 5, m = ALL >> (from & 31u);
    const uint32_t last = (to - 1u) >> 5, end = ALL << (31u - ((to - 1u) & 31u)); /* bits up to to - 1 */
    if (j < last) {
        bm[j] = on ? bm[j] | m : bm[j] & ~m;
        for (const uint32_t fill = on ? ALL : 0u; ++j < last;) {
            bm[j] = fill;
        }
        m = ALL;
    }
    m &= end;
    bm[j] = on ? bm[j] | m : bm[j] & ~m;
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
    const uint32_t small_max = prev, table = (small_max / 8u + 3u) & ~3u;
    uint32_t page_shift = 3u;
    while ((pool_bytes >> page_shift) >= MAX_PAGES) { /* a page map of MAX_PAGES bytes at most */
        ++page_shift;
    }
    const uint32_t pages = pool_bytes ? ((pool_bytes - 1u) >> page_shift) + 1u : 0u;
    uint32_t words_at = (off + table + ((pages + 3u) & ~3u)) / 4u;
    if (h) {
        h->n_classes = c->n_classes;
        h->small_max = small_max;
        h->class_of = off;
        h->page_shift = page_shift;
        h->page_map = off + table;
        h->pool_bytes = pool_bytes;
        h->pools[c->n_classes] = (pool_t){0, 0, pool_bytes, 0};
    }
    for (uint32_t k = 0, base = 0; k < c->n_classes; ++k) {
        const uint32_t n = c->classes[k].count;
        if (h) {
            h->pools[k] = (pool_t){c->classes[k].size, n, base, words_at};
            base += c->classes[k].size * n;
        }
        words_at += 1u + words(n);
    }
    const uint32_t large_off = (pool_bytes + c->granule - 1u) & ~(c->granule - 1u);
    const uint32_t large_n = heap_bytes > large_off ? (uint32_t)(heap_bytes - large_off) / c->granule : 0;
    if (h) {
        h->large_off = large_off;
        h->large_n = large_n;
        h->used = words_at;
        h->shift = (uint32_t)__builtin_ctz(c->granule);
        h->heap_end = large_off + (large_n << h->shift);
    }
    return 4u * (words_at + bitmap_words(large_n));
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
    h->canary = cfg->canaries ? 1u : 0u;
    h->meta_bytes = need;
    uint8_t *table = (uint8_t *)meta + h->class_of, *map = (uint8_t *)meta + h->page_map;
    for (uint32_t k = h->n_classes; k-- > 0;) { /* sizes up to class k's map to class k */
        memset(table, (int)k, h->pools[k].size / 8u);
    }
    for (uint32_t k = 0, page = 0; k < h->n_classes; ++k) { /* a page maps to the pool holding its first byte */
        for (; page << h->page_shift < h->pools[k].base + h->pools[k].size * h->pools[k].count; ++page) {
            map[page] = (uint8_t)k;
        }
    }
    for (uint32_t k = 0; k < h->n_classes; ++k) {
        const pool_t *p = &h->pools[k];
        set_range(W(h, p->bits) + 1, 0, p->count, 1);
        set_range(W(h, p->bits), 0, words(p->count), 1);
        h->class_mask |= MSB(k);
    }
    set_range(any_free(h), 0, words(h->large_n), 1);
    return h;
}

/* ---- guards ------------------------------------------------------------------------------ */

static void guard_put(const tm_heap_t *h, uint8_t *p, uint32_t cap)
{
    if (h->canary) {
        const uint32_t g = GUARD ^ (uint32_t)(uintptr_t)p;
        memcpy(p + cap - 4u, &g, 4);
    }
}

static void fault(tm_heap_t *h, int error, const void *p)
{
    h->on_error.f(error, p);
}

/* ---- small path: O(1) ------------------------------------------------------------------- */

/* Two count-leading-zeros find the pool's lowest free slot; a slot word that empties clears its
 * summary bit, and an empty pool clears its class bit. */
INLINE uint8_t *pool_take(tm_heap_t *h, uint32_t k)
{
    const pool_t *p = &h->pools[k];
    uint32_t *sum = W(h, p->bits), *slots = sum + 1;
    const uint32_t j = CLZ(*sum), i = (j << 5) + CLZ(slots[j]);
    if (!(slots[j] &= ~MSB(i)) && !(*sum &= ~MSB(j))) {
        h->class_mask &= ~MSB(k);
    }
    return h->heap.p + p->base + i * p->size;
}

INLINE void pool_give(tm_heap_t *h, uint32_t k, uint32_t i)
{
    uint32_t *sum = W(h, h->pools[k].bits);
    sum[1 + (i >> 5)] |= MSB(i);
    *sum |= MSB(i >> 5);
    h->class_mask |= MSB(k);
}

/* ---- large path: first fit over the granule bitmap ------------------------------------
 * Free runs below `top` are holes; everything from top on is the tail. A search visits holes
 * only when the request could fit one (max_hole bounds them: each failed search lowers it, each
 * free raises it to the run it merged into), so its cost is bounded by the holes, not the heap. */

/* The first granule >= i and < lim that is used (flip 0) or free (flip ALL); lim if none.
 * Whole words without one are skipped through the summary: a scan costs the words it
 * inspects, not the width of the stretch it crosses. */
INLINE uint32_t next_granule(const tm_heap_t *h, uint32_t i, uint32_t lim, uint32_t flip)
{
    if (i >= lim) {
        return lim;
    }
    const uint32_t *used = used_bm(h);
    uint32_t j = i >> 5, w = (used[j] ^ flip) & (ALL >> (i & 31u));
    if (!w) {
        j = next_bit(flip ? any_free(h) : any_used(h), words(h->large_n), j + 1u, 0);
        if (j >= words(h->large_n)) {
            return lim;
        }
        w = used[j] ^ flip;
    }
    i = (j << 5) + CLZ(w);
    return i < lim ? i : lim;
}

/* The last used granule before g, or ALL if none. */
static uint32_t prev_used(const tm_heap_t *h, uint32_t g)
{
    const uint32_t *used = used_bm(h), *sum = any_used(h);
    uint32_t j = g >> 5, w = (g & 31u) ? used[j] & ~(ALL >> (g & 31u)) : 0u;
    while (!w) { /* the previous word with a used granule: back through the summary */
        if (!j) {
            return ALL;
        }
        uint32_t sj = (j - 1u) >> 5, sw = sum[sj] & ~(((j - 1u) & 31u) == 31u ? 0u : ALL >> (((j - 1u) & 31u) + 1u));
        while (!sw && sj) {
            sw = sum[--sj];
        }
        if (!sw) {
            return ALL;
        }
        j = (sj << 5) + 31u - (uint32_t)__builtin_ctz(sw);
        w = used[j];
    }
    return (j << 5) + 31u - (uint32_t)__builtin_ctz(w);
}

/* Granules [from, to) become used (on) or free, with the word summaries kept in step: the words
 * strictly inside the range are now all used or all free; the two end words are looked at. */
static void set_granules(tm_heap_t *h, uint32_t from, uint32_t to, int on)
{
    uint32_t *used = used_bm(h), *au = any_used(h), *af = any_free(h);
    const uint32_t j0 = from >> 5, j1 = (to - 1u) >> 5;
    set_range(used, from, to, on);
    set_range(au, j0, j1 + 1u, on);
    set_range(af, j0, j1 + 1u, !on);
    for (uint32_t j = j0;; j = j1) {
        au[j >> 5] = used[j] ? au[j >> 5] | MSB(j) : au[j >> 5] & ~MSB(j);
        af[j >> 5] = used[j] != ALL ? af[j >> 5] | MSB(j) : af[j >> 5] & ~MSB(j);
        if (j == j1) {
            break;
        }
    }
}

static void large_mark(tm_heap_t *h, uint32_t from, uint32_t to)
{
    set_granules(h, from, to, 1);
    if (to > h->top) {
        h->top = to;
        h->high_water = to > h->high_water ? to : h->high_water;
    }
    if (h->hint >= from && h->hint < to) {
        h->hint = next_granule(h, to, h->top, ALL);
    }
}

/* A hole of m granules now starts at `at`: lower the bounds it falls under. They stay ascending
 * (a hole of 2^(b+1) is also one of 2^b), so the walk stops at the first bound already below. */
static void note_hole(tm_heap_t *h, uint32_t at, uint32_t m)
{
    h->max_hole = m > h->max_hole ? m : h->max_hole;
    for (uint32_t b = bin_of(m) + 1u; b-- > 0 && h->bin_start[b] > at;) {
        h->bin_start[b] = at;
    }
}

/* Granules [from, to) become free: the hint, top and the hole bounds stay true. */
static void large_unmark(tm_heap_t *h, uint32_t from, uint32_t to)
{
    set_granules(h, from, to, 0);
    h->hint = from < h->hint ? from : h->hint;
    const uint32_t before = prev_used(h, from) + 1u; /* ALL + 1 = 0: nothing used below */
    if (to >= h->top) {
        h->top = before;
        h->hint = h->hint < h->top ? h->hint : h->top;
        return;
    }
    note_hole(h, before, next_granule(h, to, h->top, 0) - before);
}

static uint8_t *large_take(tm_heap_t *h, uint32_t need, size_t align)
{
    const uint32_t n = h->large_n, k = (need + (1u << h->shift) - 1u) >> h->shift, top = h->top;
    const uint32_t a = align > (1u << h->shift) ? (uint32_t)(align >> h->shift) : 1u;
    const uint32_t r = (uint32_t)((uintptr_t)(h->heap.p + h->large_off) >> h->shift) & (a - 1u);
    uint32_t t = ALL;
    if (k <= h->max_hole) { /* first fit among the holes that could be long enough */
        const uint32_t *used = used_bm(h), b = bin_of(k);
        uint32_t s = h->bin_start[b] > h->hint ? h->bin_start[b] : h->hint, first = ALL;
        for (s = next_granule(h, s, top, ALL); s < top;) {
            /* The hole's end, and then the next hole: usually in the same word, found inline. */
            uint32_t w = used[s >> 5] & (ALL >> (s & 31u));
            const uint32_t e = w ? (s & ~31u) + CLZ(w) : next_granule(h, (s | 31u) + 1u, top, 0);
            const uint32_t c = s + ((0u - (r + s)) & (a - 1u)); /* its first aligned granule */
            first = first == ALL && e - s >= (1u << b) ? s : first;
            if (c < e && k <= e - c) {
                t = c;
                break;
            }
            w = ~used[e >> 5] & (ALL >> (e & 31u));
            s = w ? (e & ~31u) + CLZ(w) : next_granule(h, (e | 31u) + 1u, top, ALL);
        }
        /* No hole of bin b, so none of a larger bin, before `first` (or anywhere, if none was
         * seen): those bounds rise to it, and stay ascending (note_hole relies on that). */
        const uint32_t rise = first != ALL ? first : top;
        for (uint32_t bb = b; bb < BINS && h->bin_start[bb] < rise; ++bb) {
            h->bin_start[bb] = rise;
        }
        if (t == ALL && a == 1u) {
            h->max_hole = k - 1u; /* every hole is shorter than k */
        }
    }
    if (t == ALL) { /* the tail */
        t = top + ((0u - (r + top)) & (a - 1u));
        if (t > n || k > n - t) {
            return NULL;
        }
        if (t > top) {
            note_hole(h, top, t - top); /* an alignment gap is a hole */
        }
    }
    large_mark(h, t, t + k);
    start_bm(h)[t >> 5] |= MSB(t);
    return h->heap.p + h->large_off + (t << h->shift);
}

/* One past the last granule of the block starting at g: the next start, or the next free granule. */
static uint32_t block_end(const tm_heap_t *h, uint32_t g)
{
    const uint32_t *used = used_bm(h), *start = start_bm(h);
    for (uint32_t i = g + 1u; i < h->top; i = (i | 31u) + 1u) {
        const uint32_t w = (start[i >> 5] | ~used[i >> 5]) & (ALL >> (i & 31u));
        if (w) {
            i = (i & ~31u) + CLZ(w);
            return i < h->top ? i : h->top;
        }
    }
    return h->top;
}

/* Large-region accounting: its peak and its largest block bound the worst case (alloc-config). */
INLINE void large_account(tm_heap_t *h, uint32_t old_cap, uint32_t new_cap)
{
    h->large_in_use = h->large_in_use - old_cap + new_cap;
    h->large_peak = h->large_in_use > h->large_peak ? h->large_in_use : h->large_peak;
    h->large_max = new_cap > h->large_max ? new_cap : h->large_max;
}

INLINE void account(tm_heap_t *h, uint32_t cap)
{
    h->in_use += cap;
    h->peak_in_use = h->in_use > h->peak_in_use ? h->in_use : h->peak_in_use;
}

/* The O(1) path: the smallest class that fits need, or any larger one with a free slot. */
INLINE uint8_t *from_pool(tm_heap_t *h, uint32_t need)
{
    const uint32_t c = ((const uint8_t *)h)[h->class_of + ((need - 1u) >> 3)];
    const uint32_t m = h->class_mask & (ALL >> c);
    if (!m) {
        return NULL;
    }
    const uint32_t k = CLZ(m), cap = h->pools[k].size;
    uint8_t *p = pool_take(h, k);
    guard_put(h, p, cap);
    account(h, cap);
    return p;
}

/* Everything the fast path does not take: zero or huge sizes, over-alignment, full pools. */
SLOW void *alloc_slow(tm_heap_t *h, size_t n, size_t align)
{
    uint8_t *p = NULL;
    if (n <= h->heap_end) { /* also keeps n + guard from wrapping */
        const uint32_t need = (uint32_t)(n ? n : 1u) + 4u * h->canary;
        if (need <= h->small_max && align <= TM_ALLOC_ALIGN && (p = from_pool(h, need)) == NULL) {
            ++h->spills;
        }
        if (!p && (p = large_take(h, need, align)) != NULL) {
            const uint32_t cap = ((need + (1u << h->shift) - 1u) >> h->shift) << h->shift;
            large_account(h, 0, cap);
            guard_put(h, p, cap);
            account(h, cap);
        }
    }
    if (!p) {
        ++h->failed;
        SET_ERRNO(ENOMEM);
    }
    return p;
}

INLINE void *alloc(tm_heap_t *h, size_t n)
{
    if (n <= h->small_max) {
        const uint32_t need = (uint32_t)n + 4u * h->canary;
        uint8_t *p = need - 1u < h->small_max ? from_pool(h, need) : NULL; /* n = 0 without guard: slow */
        if (p) {
            return p;
        }
    }
    return alloc_slow(h, n, TM_ALLOC_ALIGN);
}

/* The pool holding heap offset off (< pool_bytes): O(1), the page map then at most the pools
 * that share the page (one or two, unless pools are smaller than a page). */
static uint32_t pool_at(const tm_heap_t *h, uint32_t off)
{
    uint32_t k = ((const uint8_t *)h)[h->page_map + (off >> h->page_shift)];
    while (off >= h->pools[k + 1u].base) {
        ++k;
    }
    return k;
}

/* Which live block p is; reports and returns 0 if it is none. */
static int find(tm_heap_t *h, const void *ptr, block_t *b)
{
    const uintptr_t at = (uintptr_t)ptr, base = (uintptr_t)h->heap.p;
    const uint32_t off = (uint32_t)(at - base);
    if (h->magic != MAGIC || at < base || at - base >= h->heap_end) {
        fault(h, TM_ALLOC_ERR_INVALID_FREE, ptr);
        return 0;
    }
    if (off < h->pool_bytes) {
        const uint32_t lo = pool_at(h, off);
        const pool_t *p = &h->pools[lo];
        const uint32_t i = (off - p->base) / p->size;
        if (i * p->size != off - p->base) {
            fault(h, TM_ALLOC_ERR_INVALID_FREE, ptr);
            return 0;
        }
        if (get(W(h, p->bits) + 1, i)) {
            fault(h, TM_ALLOC_ERR_DOUBLE_FREE, ptr);
            return 0;
        }
        *b = (block_t){(int)lo, i, 0, p->size};
        return 1;
    }
    if (off < h->large_off || ((off - h->large_off) & ((1u << h->shift) - 1u))) {
        fault(h, TM_ALLOC_ERR_INVALID_FREE, ptr); /* between the pools and the large region, or not on a granule */
        return 0;
    }
    const uint32_t g = (off - h->large_off) >> h->shift;
    if (!get(start_bm(h), g)) { /* inside a live block: invalid; in free space: freed already */
        fault(h, get(used_bm(h), g) ? TM_ALLOC_ERR_INVALID_FREE : TM_ALLOC_ERR_DOUBLE_FREE, ptr);
        return 0;
    }
    const uint32_t end = block_end(h, g);
    *b = (block_t){-1, g, end, (end - g) << h->shift};
    return 1;
}

static void release(tm_heap_t *h, const block_t *b)
{
    if (b->pool >= 0) {
        pool_give(h, (uint32_t)b->pool, b->index);
    } else {
        start_bm(h)[b->index >> 5] &= ~MSB(b->index);
        large_unmark(h, b->index, b->end);
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

/* ---- the API ---------------------------------------------------------------------------- */

void *tm_heap_malloc(tm_heap_t *h, size_t n)
{
    return alloc(h, n);
}

SLOW void free_slow(tm_heap_t *h, void *p)
{
    block_t b;
    if (take_block(h, p, &b)) {
        release(h, &b);
    }
}

INLINE void free_fast(tm_heap_t *h, void *p)
{
    const uintptr_t off = (uintptr_t)p - (uintptr_t)h->heap.p; /* below the heap: wraps, fails the test */
    if (off < h->pool_bytes) { /* the O(1) path: a live pool slot */
        const uint32_t k = pool_at(h, (uint32_t)off);
        const pool_t *pool = &h->pools[k];
        const uint32_t i = ((uint32_t)off - pool->base) / pool->size;
        if (i * pool->size == (uint32_t)off - pool->base && !get(W(h, pool->bits) + 1, i) && guard_ok(h, p, pool->size)) {
            pool_give(h, k, i);
            h->in_use -= pool->size;
            return;
        }
    }
    if (p) {
        free_slow(h, p); /* the large region, or a bad free / overflow to report */
    }
}

void tm_heap_free(tm_heap_t *h, void *p)
{
    free_fast(h, p);
}

void *tm_heap_calloc(tm_heap_t *h, size_t n, size_t size)
{
    if (size && n > (size_t)-1 / size) {
        ++h->failed;
        SET_ERRNO(ENOMEM);
        return NULL;
    }
    void *p = alloc(h, n * size);
    if (p) {
        memset(p, 0, n * size);
    }
    return p;
}

void *tm_heap_memalign(tm_heap_t *h, size_t align, size_t n)
{
    if (!align || (align & (align - 1u))) {
        SET_ERRNO(EINVAL);
        return NULL;
    }
    return alloc_slow(h, n, align);
}

size_t tm_heap_usable_size(tm_heap_t *h, const void *p)
{
    block_t b;
    return p && find(h, p, &b) ? b.cap - 4u * h->canary : 0;
}

void *tm_heap_realloc(tm_heap_t *h, void *p, size_t n)
{
    block_t b;
    if (!p) {
        return alloc(h, n);
    }
    if (!take_block(h, p, &b)) {
        return NULL;
    }
    if (!n) {
        release(h, &b);
        return NULL;
    }
    const uint32_t guard = 4u * h->canary;
    if (n <= b.cap - guard && b.pool >= 0) {
        return p; /* the slot already holds it */
    }
    if (b.pool < 0 && n <= ((size_t)h->large_n << h->shift)) { /* resize in place: shrink, or grow into free granules */
        const uint32_t k = ((uint32_t)n + guard + (1u << h->shift) - 1u) >> h->shift, g = b.index;
        const uint32_t next_used = next_granule(h, b.end, h->top, 0); /* top: the tail follows */
        if (g + k <= b.end || (g + k <= h->large_n && (next_used >= g + k || next_used == h->top))) {
            if (g + k < b.end) {
                large_unmark(h, g + k, b.end);
            } else {
                large_mark(h, b.end, g + k);
            }
            h->in_use = h->in_use - b.cap + (k << h->shift);
            large_account(h, b.cap, k << h->shift);
            h->peak_in_use = h->in_use > h->peak_in_use ? h->in_use : h->peak_in_use;
            guard_put(h, p, k << h->shift);
            return p;
        }
    }
    uint8_t *q = alloc(h, n);
    if (q) {
        memcpy(q, p, n < b.cap - guard ? n : b.cap - guard);
        release(h, &b);
    }
    return q;
}

uint32_t tm_heap_owned(const tm_heap_t *h)
{
    const uint32_t large = h->high_water ? h->large_off - h->pool_bytes + (h->high_water << h->shift) : 0;
    return h->pool_bytes + large + h->meta_bytes - 4u * (bitmap_words(h->large_n) - bitmap_words(h->high_water));
}

/* ---- the default heap ------------------------------------------------------------------- */

static const tm_alloc_class_t default_classes[] = {TM_ALLOC_CLASSES};
static uint8_t default_heap[TM_ALLOC_HEAP_BYTES] __attribute__((aligned(TM_ALLOC_GRANULE)));
static uint64_t default_meta[(TM_ALLOC_META_BYTES + 7u) / 8u]; /* a region of its own */
static tm_heap_t *default_h;

static __attribute__((noinline)) tm_heap_t *default_init(void)
{
    const tm_alloc_config_t cfg = {default_classes, TM_ALLOC_NUM_CLASSES, TM_ALLOC_GRANULE, TM_ALLOC_CANARIES};
    default_h = tm_heap_init(&cfg, default_heap, sizeof default_heap, default_meta, sizeof default_meta);
    if (!default_h) { /* tinymem_alloc_config.h disagrees with itself: regenerate it */
        tm_alloc_on_error(TM_ALLOC_ERR_CORRUPT, default_meta);
    }
    return default_h;
}

static inline tm_heap_t *heap(void)
{
    return default_h ? default_h : default_init();
}

tm_heap_t *tm_alloc_default_heap(void)
{
    return heap();
}

#if TM_ALLOC_TRACE
#define TRACE(op, in, n, align, out) tm_alloc_trace(op, in, n, align, out)
#else
#define TRACE(op, in, n, align, out) (void)(out)
#endif

void *tm_malloc(size_t n)
{
    void *q = alloc(heap(), n);
    TRACE('a', NULL, n, 0, q);
    return q;
}

void tm_free(void *p)
{
    TRACE('f', p, 0, 0, NULL);
    free_fast(heap(), p);
}

void *tm_calloc(size_t n, size_t size)
{
    void *q = tm_heap_calloc(heap(), n, size);
    TRACE('c', NULL, n * size, 0, q);
    return q;
}

void *tm_realloc(void *p, size_t n)
{
    void *q = tm_heap_realloc(heap(), p, n);
    TRACE('r', p, n, 0, q);
    return q;
}

void *tm_memalign(size_t align, size_t n)
{
    void *q = tm_heap_memalign(heap(), align, n);
    TRACE('m', NULL, n, align, q);
    return q;
}

void *tm_aligned_alloc(size_t align, size_t n)
{
    return tm_memalign(align, n);
}

void tm_alloc_set_handler(tm_alloc_handler_t handler)
{
    tm_heap_set_handler(heap(), handler);
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
