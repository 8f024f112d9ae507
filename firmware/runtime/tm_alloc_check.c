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

void tm_heap_stats(tm_heap_t *h, tm_alloc_stats_t *s)
{
    TM_ALLOC_LOCK();
    uint32_t largest = 0, pool_free = 0, largest_slot = 0;
    uint32_t live = popcount(useds(h), words(h->large_n));
    const uint32_t tail = h->large_n - h->top, free_large = tm_large_runs(h, &largest) + tail;
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
    const uint32_t g = 1u << h->shift;
    const uint32_t nw = words(h->large_n);
    return h->pool_bytes == base && h->st_at == at && h->large_off == ((base + g - 1u) & ~(g - 1u)) &&
           h->large_n <= 0x7FFFFFFFu >> h->shift && h->n_bins == bins_for(h->large_n) && h->nw == nw &&
           h->len_at == at + large_words(h->large_n) - (nw + 1u) / 2u &&
           h->heap_end == h->large_off + (h->large_n << h->shift);
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

/* The large region: runs (blocks and holes) from the start bits, holes maximal and binned,
 * summaries exact, nothing at or past top, live guards. Adds its bytes in use. */
static int large_ok(const tm_heap_t *h, uint32_t *in_use)
{
    const uint32_t n = h->large_n, nw = words(n), top = h->top, *st = starts(h), *us = useds(h), *sum = sums(h);
    if (top > n || top > h->high_water || h->high_water > n || (top && !get(st, 0)) ||
        stray(st, top, nw) || stray(us, top, nw) || stray(sum, nw, words(nw))) {
        return TM_ALLOC_ERR_CORRUPT; /* before any scan bounded by them */
    }
    for (uint32_t j = 0; j < nw; ++j) {
        if ((us[j] & ~st[j]) || get(sum, j) != (st[j] != 0)) {
            return TM_ALLOC_ERR_CORRUPT; /* a block not starting a run; a summary bit wrong */
        }
    }
    for (uint32_t c = 0; c < words(nw); ++c) { /* row summaries exact; no row bits past the last word */
        const uint32_t *rows = bin_rows(h, c);
        for (uint32_t b = 0; b < h->n_bins; ++b) {
            if (get(rows, b) != (rows[1u + b] != 0) || (c + 1u == words(nw) && stray(rows + 1u + b, nw - 32u * c, 1u))) {
                return TM_ALLOC_ERR_CORRUPT;
            }
        }
        if (stray(rows, h->n_bins, 1u)) {
            return TM_ALLOC_ERR_CORRUPT;
        }
    }
    uint32_t blocks = 0, hole_before = 1; /* granule 0 has nothing before it: as if a hole */
    for (uint32_t s = 0; s < top;) {
        const uint32_t e = next_bit(st, top, s + 1u, 0);
        const int last_in_word = e > (s | 31u) || e == top;
        if (last_in_word && run_lengths(h)[s >> 5] != (e - s < LONG_RUN ? e - s : LONG_RUN)) {
            return TM_ALLOC_ERR_CORRUPT; /* the last run of a word with a wrong length */
        }
        if (get(us, s)) {
            if (!guard_ok(h, h->heap.p + h->large_off + (s << h->shift), (e - s) << h->shift)) {
                return TM_ALLOC_ERR_OVERFLOW;
            }
            blocks += e - s;
            hole_before = 0;
        } else {
            if (hole_before == 2u || e == top || !get(bin_rows(h, s >> 10) + 1u + bin_of(e - s), s >> 5 & 31u)) {
                return TM_ALLOC_ERR_CORRUPT; /* holes touch, the last run is free, or a hole is not binned */
            }
            hole_before = 2u;
        }
        s = e;
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
