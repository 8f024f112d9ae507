/* tm_alloc's invariant checker and stats: everything the operations rely on, recomputed from the
 * bitmaps (tests call tm_heap_check() after every operation); kept apart from the operations. */
#include "tm_alloc_impl.h"

static uint32_t pool_count(const tm_heap_t *h, uint32_t k)
{
    return (h->pools[k + 1u].base - h->pools[k].base) / h->pools[k].size;
}

static uint32_t popcount(const uint32_t *bm, uint32_t n_words)
{
    uint32_t n = 0;
    for (uint32_t j = 0; j < n_words; ++j) {
        n += (uint32_t)__builtin_popcount(bm[j]);
    }
    return n;
}

/* The first run start at or after i, or top (the start bits: every other word of runs). */
static uint32_t next_start(const uint32_t *runs, uint32_t top, uint32_t i)
{
    for (; i < top; i = (i | 31u) + 1u) {
        const uint32_t w = runs[2u * (i >> 5)] & (ALL >> (i & 31u));
        if (w) {
            i = (i & ~31u) + CLZ(w);
            return i < top ? i : top;
        }
    }
    return top;
}

/* The large region's free granules below top, and its longest hole (for the stats). */
static uint32_t large_runs(const tm_heap_t *h, uint32_t *largest_hole)
{
    const uint32_t *runs = AT(h, h->runs);
    uint32_t free_below = 0, largest = 0;
    for (uint32_t s = 0, e; s < h->top; s = e) {
        e = next_start(runs, h->top, s + 1u);
        if (runs[2u * (s >> 5) + 1u] & MSB(s)) {
            free_below += e - s;
            largest = e - s > largest ? e - s : largest;
        }
    }
    *largest_hole = largest;
    return free_below;
}

void tm_heap_stats(tm_heap_t *h, tm_alloc_stats_t *s)
{
    TM_ALLOC_LOCK();
    uint32_t largest = 0, pool_free = 0, largest_slot = 0, live = 0;
    for (const uint32_t *w = AT(h, h->runs), *end = w + 2u * words(h->large_n); w < end; w += 2) { /* block starts */
        live += (uint32_t)__builtin_popcount(w[0] & ~w[1]);
    }
    const uint32_t tail = h->large_n - h->top, free_large = large_runs(h, &largest) + tail;
    largest = tail > largest ? tail : largest;
    for (uint32_t k = 0; k < h->n_classes; ++k) {
        const uint32_t count = pool_count(h, k), nfree = popcount(W(h, h->pools[k].bits) + 1, words(count));
        pool_free += nfree * h->pools[k].size;
        live += count - nfree;
        largest_slot = nfree ? h->pools[k].size : largest_slot;
    }
    *s = (tm_alloc_stats_t){
        .in_use_bytes = h->in_use, .peak_in_use_bytes = h->peak_in_use, .live_blocks = live,
        .failed_allocs = h->failed, .free_bytes = pool_free + (free_large << h->shift),
        .largest_free_bytes = (largest << h->shift) > largest_slot ? largest << h->shift : largest_slot,
        .fragmentation_permille = free_large ? 1000u - (uint32_t)(1000ull * largest / free_large) : 0u,
        .heap_bytes = h->heap_end, .pool_bytes = h->pool_bytes,
        .meta_bytes = meta_size(h), .owned_bytes = tm_heap_owned(h),
        .large_peak_bytes = h->large_peak, .large_max_block_bytes = h->large_max,
        .large_high_water_bytes = h->high_water << h->shift, .pool_spills = h->spills};
    TM_ALLOC_UNLOCK();
}

/* A bit set at index >= valid in a bitmap of `count` words: something wrote past its end. */
static int stray(const uint32_t *bm, uint32_t valid, uint32_t count)
{
    return next_bit(bm, 32u * count, valid, 0) < 32u * count;
}

/* The header and pool records describe exactly the layout their config gives: checked before
 * the checker follows any offset, so it survives damaged metadata. */
static int layout_ok(const tm_heap_t *h)
{
    if (h->magic != MAGIC || h->n_classes > TM_ALLOC_MAX_CLASSES || h->shift < 3u || h->shift > 12u ||
        (h->guard != 0u && h->guard != 4u)) {
        return 0;
    }
    if (h->page_shift < 3u || h->page_shift > 31u || (h->pool_bytes >> h->page_shift) >= MAX_PAGES ||
        (h->page_shift > 3u && (h->pool_bytes >> (h->page_shift - 1u)) < MAX_PAGES)) {
        return 0; /* the page size is the smallest that keeps the map within MAX_PAGES */
    }
    const uint32_t off = (uint32_t)(sizeof(tm_heap_t) + (h->n_classes + 1u) * sizeof(pool_t));
    const pool_t *end = &h->pools[h->n_classes];
    if (end->size || end->base != h->pool_bytes || end->recip || end->bits) {
        return 0;
    }
    const uint32_t max = h->n_classes ? h->pools[h->n_classes - 1u].size : 0u, table = (max / 8u + 3u) & ~3u;
    const uint32_t pages = h->pool_bytes ? ((h->pool_bytes - 1u) >> h->page_shift) + 1u : 0u;
    uint32_t at = (off + table + ((pages + 3u) & ~3u)) / 4u, base = 0, prev = 0;
    if (h->class_of != off || h->page_map != off + table || h->small_lim != (max > h->guard ? max - h->guard : 0u)) {
        return 0;
    }
    for (uint32_t k = 0; k < h->n_classes; ++k) {
        const pool_t *p = &h->pools[k];
        if (p->size <= prev || p->size % 8u || p->size > 65536u || p->base != base || p->bits != at ||
            p->recip != (uint32_t)(((1ull << 32) + p->size - 1u) / p->size) || h->pools[k + 1u].base <= base ||
            (h->pools[k + 1u].base - base) % p->size || pool_count(h, k) > TM_ALLOC_MAX_SLOTS) {
            return 0;
        }
        base += p->size * pool_count(h, k);
        prev = p->size;
        at += 1u + words(pool_count(h, k));
    }
    const uint32_t g = 1u << h->shift, n = h->large_n, nw = words(n), nc = words(nw), nb = bins_for(n);
    const uint32_t *maps = W(h, at);
    return h->pool_bytes == base && h->st_at == at && h->large_off == ((base + g - 1u) & ~(g - 1u)) &&
           n <= 0x7FFFFFFFu >> h->shift && h->n_bins == nb && h->nc == nc &&
           h->heap_end == h->large_off + (n << h->shift) && h->round == g - 1u + h->guard &&
           h->base == LARGE_AT_VALUE(h) && h->runs == AT_VALUE(h, maps) && h->sum == AT_VALUE(h, maps + 2u * nw) &&
           h->rows == AT_VALUE(h, maps + 2u * nw + nc) && h->longest == AT_VALUE(h, maps + 2u * nw + nc + nc * nb);
}

/* The pools: tables, bitmaps and their summaries, class bits, live guards. Their bytes in use. */
static int pools_ok(const tm_heap_t *h, uint32_t *in_use)
{
    uint32_t mask = 0;
    const uint8_t *table = (const uint8_t *)h + h->class_of;
    for (uint32_t i = 0, k = 0; h->n_classes && i < h->pools[h->n_classes - 1u].size / 8u; ++i) {
        k += 8u * (i + 1u) > h->pools[k].size; /* sizes up to class k's map to class k */
        if (table[i] != k) {
            return TM_ALLOC_ERR_CORRUPT;
        }
    }
    for (uint32_t page = 0, k = 0; page << h->page_shift < h->pool_bytes; ++page) {
        while (page << h->page_shift >= h->pools[k + 1u].base) {
            ++k;
        }
        if (table[h->page_map - h->class_of + page] != k) {
            return TM_ALLOC_ERR_CORRUPT;
        }
    }
    for (uint32_t k = 0; k < h->n_classes; ++k) {
        const pool_t *p = &h->pools[k];
        const uint32_t *sum = W(h, p->bits), *slots = sum + 1, count = pool_count(h, k);
        for (uint32_t j = 0; j < words(count); ++j) {
            if ((slots[j] != 0) != get(sum, j)) {
                return TM_ALLOC_ERR_CORRUPT; /* a summary bit disagrees with its word */
            }
        }
        if (stray(sum, words(count), 1u) || stray(slots, count, words(count))) {
            return TM_ALLOC_ERR_CORRUPT;
        }
        const uint32_t nfree = popcount(slots, words(count));
        mask |= nfree ? MSB(k) : 0u;
        *in_use += (count - nfree) * p->size;
        for (uint32_t i = 0; i < count; ++i) {
            if (!get(slots, i) && !guard_ok(h, h->heap.p + p->base + i * p->size, p->size)) {
                return TM_ALLOC_ERR_OVERFLOW;
            }
        }
    }
    return mask == h->class_mask ? TM_ALLOC_OK : TM_ALLOC_ERR_CORRUPT;
}

/* The large region: runs (blocks and holes) from the start bits, holes maximal and within the
 * bound on the longest, the summary exact, each word's longest hole and its row exact, nothing at
 * or past top, live guards. Adds its bytes in use. */
static int large_ok(const tm_heap_t *h, uint32_t *in_use)
{
    const uint32_t n = h->large_n, nw = words(n), nb = h->n_bins, top = h->top;
    const uint32_t *runs = AT(h, h->runs), *sum = AT(h, h->sum), *rows = AT(h, h->rows);
    const uint16_t *longest = AT(h, h->longest);
    if (top > n || top > h->high_water || h->high_water > n || h->fit_max > n || (top && !(runs[0] & MSB(0))) ||
        stray(sum, nw, h->nc) || (nw & 1u && longest[nw])) {
        return TM_ALLOC_ERR_CORRUPT; /* before any scan bounded by them */
    }
    for (uint32_t j = 0; j < nw; ++j) {
        const uint32_t past = j << 5 >= top ? ALL : top - (j << 5) >= 32u ? 0u : ALL >> (top - (j << 5));
        if ((runs[2u * j] & past) || (runs[2u * j + 1u] & ~runs[2u * j]) || get(sum, j) != (runs[2u * j] != 0)) {
            return TM_ALLOC_ERR_CORRUPT; /* a start at or past top, a hole not starting a run, a wrong summary */
        }
    }
    for (uint32_t c = 0; c < h->nc; ++c) { /* no row bits past the last word */
        for (uint32_t b = 0; b < nb; ++b) {
            if (c + 1u == h->nc && stray(rows + c * nb + b, nw - 32u * c, 1u)) {
                return TM_ALLOC_ERR_CORRUPT;
            }
        }
    }
    uint32_t blocks = 0, hole_before = 0;
    for (uint32_t s = 0; s < top;) {
        const uint32_t e = next_start(runs, top, s + 1u);
        if (runs[2u * (s >> 5) + 1u] & MSB(s)) {
            if (hole_before || e == top || e - s > h->fit_max) {
                return TM_ALLOC_ERR_CORRUPT; /* holes touch, the last run is free, or a hole is past the bound */
            }
            hole_before = 1;
        } else {
            if (!guard_ok(h, (const uint8_t *)(LARGE_ADDR(h) + (s << h->shift)), (e - s) << h->shift)) {
                return TM_ALLOC_ERR_OVERFLOW;
            }
            blocks += e - s;
            hole_before = 0;
        }
        s = e;
    }
    for (uint32_t j = 0; j < nw; ++j) { /* each word's longest hole, and its row */
        uint32_t m = 0;
        for (uint32_t holes = runs[2u * j + 1u]; holes; holes &= ~MSB(CLZ(holes))) {
            const uint32_t s = (j << 5) + CLZ(holes), len = next_start(runs, top, s + 1u) - s;
            m = len > m ? len : m;
        }
        m = m < LONG_HOLE ? m : LONG_HOLE;
        if (longest[j] != m) {
            return TM_ALLOC_ERR_CORRUPT;
        }
        for (uint32_t b = 0; b < nb; ++b) {
            if (get(rows + (j >> 5) * nb + b, j & 31u) != (m && bin_of(m) == b)) {
                return TM_ALLOC_ERR_CORRUPT;
            }
        }
    }
    *in_use += blocks << h->shift;
    return h->large_in_use == blocks << h->shift && h->large_peak >= h->large_in_use ? TM_ALLOC_OK
                                                                                     : TM_ALLOC_ERR_CORRUPT;
}

/* Every invariant the operations rely on, recomputed from the bitmaps; and every live guard. */
int tm_heap_check(tm_heap_t *h)
{
    TM_ALLOC_LOCK();
    uint32_t in_use = 0;
    int error = layout_ok(h) ? pools_ok(h, &in_use) : TM_ALLOC_ERR_CORRUPT;
    if (error == TM_ALLOC_OK) {
        error = large_ok(h, &in_use);
    }
    if (error == TM_ALLOC_OK && (in_use != h->in_use || h->peak_in_use < h->in_use)) {
        error = TM_ALLOC_ERR_CORRUPT;
    }
    TM_ALLOC_UNLOCK();
    return error;
}
