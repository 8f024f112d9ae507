/* tm_alloc's invariant checker and stats: everything the operations rely on, recomputed from the
 * bitmaps (tests call tm_heap_check() after every operation); kept apart from the operations. */
#include "tm_alloc_impl.h"

void tm_heap_stats(tm_heap_t *h, tm_alloc_stats_t *s)
{
    uint32_t free_large = 0, largest = 0, pool_free = 0, largest_slot = 0, live = 0;
    const uint32_t *used = used_bm(h), *start = start_bm(h);
    for (uint32_t s0 = next_bit(used, h->large_n, 0, ALL); s0 < h->large_n;) {
        const uint32_t e = next_bit(used, h->large_n, s0, 0);
        free_large += e - s0;
        largest = e - s0 > largest ? e - s0 : largest;
        s0 = next_bit(used, h->large_n, e, ALL);
    }
    for (uint32_t j = 0; j < words(h->large_n); ++j) {
        live += (uint32_t)__builtin_popcount(start[j]);
    }
    for (uint32_t k = 0; k < h->n_classes; ++k) {
        uint32_t nfree = 0;
        for (uint32_t j = 0; j < words(h->pools[k].count); ++j) {
            nfree += (uint32_t)__builtin_popcount(W(h, h->pools[k].bits)[1 + j]);
        }
        pool_free += nfree * h->pools[k].size;
        live += h->pools[k].count - nfree;
        largest_slot = nfree ? h->pools[k].size : largest_slot;
    }
    *s = (tm_alloc_stats_t){
        .in_use_bytes = h->in_use, .peak_in_use_bytes = h->peak_in_use, .live_blocks = live,
        .failed_allocs = h->failed, .free_bytes = pool_free + (free_large << h->shift),
        .largest_free_bytes = (largest << h->shift) > largest_slot ? largest << h->shift : largest_slot,
        .fragmentation_permille = free_large ? 1000u - (uint32_t)(1000ull * largest / free_large) : 0u,
        .heap_bytes = h->heap_end, .pool_bytes = h->pool_bytes,
        .meta_bytes = h->meta_bytes, .owned_bytes = tm_heap_owned(h),
        .large_peak_bytes = h->large_peak, .large_max_block_bytes = h->large_max,
        .large_high_water_bytes = h->high_water << h->shift, .pool_spills = h->spills};
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
    if (h->magic != MAGIC || h->n_classes > TM_ALLOC_MAX_CLASSES || h->shift < 3u || h->shift > 12u || h->canary > 1u) {
        return 0;
    }
    if (h->page_shift < 3u || h->page_shift > 31u || (h->pool_bytes >> h->page_shift) >= MAX_PAGES ||
        (h->page_shift > 3u && (h->pool_bytes >> (h->page_shift - 1u)) < MAX_PAGES)) {
        return 0; /* the page size is the smallest that keeps the map within MAX_PAGES */
    }
    const uint32_t off = (uint32_t)(sizeof(tm_heap_t) + (h->n_classes + 1u) * sizeof(pool_t));
    const pool_t *end = &h->pools[h->n_classes];
    if (end->size || end->count || end->base != h->pool_bytes || end->bits) {
        return 0;
    }
    const uint32_t pages = h->pool_bytes ? ((h->pool_bytes - 1u) >> h->page_shift) + 1u : 0u;
    uint32_t at = (off + ((h->small_max / 8u + 3u) & ~3u) + ((pages + 3u) & ~3u)) / 4u, base = 0, prev = 0;
    if (h->page_map != off + ((h->small_max / 8u + 3u) & ~3u)) {
        return 0;
    }
    for (uint32_t k = 0; k < h->n_classes; ++k) {
        const pool_t *p = &h->pools[k];
        if (p->size <= prev || p->size % 8u || p->size > 65536u || !p->count || p->count > TM_ALLOC_MAX_SLOTS ||
            p->base != base || p->bits != at) {
            return 0;
        }
        base += p->size * p->count;
        prev = p->size;
        at += 1u + words(p->count);
    }
    const uint32_t g = 1u << h->shift;
    return h->small_max == prev && h->class_of == off && h->pool_bytes == base && h->used == at &&
           h->large_off == ((base + g - 1u) & ~(g - 1u)) && h->large_n <= 0x7FFFFFFFu >> h->shift &&
           h->meta_bytes == 4u * (at + bitmap_words(h->large_n)) && h->heap_end == h->large_off + (h->large_n << h->shift);
}

/* Every invariant the operations rely on, recomputed from the bitmaps; and every live guard. */
int tm_heap_check(tm_heap_t *h)
{
    if (!layout_ok(h)) {
        return TM_ALLOC_ERR_CORRUPT;
    }
    uint32_t in_use = 0, mask = 0;
    const uint8_t *table = (const uint8_t *)h + h->class_of;
    for (uint32_t i = 0, k = 0; i < h->small_max / 8u; ++i) { /* sizes up to class k's map to class k */
        k += 8u * (i + 1u) > h->pools[k].size;
        if (table[i] != k) {
            return TM_ALLOC_ERR_CORRUPT;
        }
    }
    for (uint32_t page = 0, k = 0; page << h->page_shift < h->pool_bytes; ++page) {
        while (page << h->page_shift >= h->pools[k].base + h->pools[k].size * h->pools[k].count) {
            ++k;
        }
        if (table[h->page_map - h->class_of + page] != k) {
            return TM_ALLOC_ERR_CORRUPT;
        }
    }
    for (uint32_t k = 0; k < h->n_classes; ++k) {
        const pool_t *p = &h->pools[k];
        const uint32_t *sum = W(h, p->bits), *slots = sum + 1;
        uint32_t nfree = 0;
        for (uint32_t j = 0; j < words(p->count); ++j) {
            if ((slots[j] != 0) != get(sum, j)) {
                return TM_ALLOC_ERR_CORRUPT; /* a summary bit disagrees with its word */
            }
            nfree += (uint32_t)__builtin_popcount(slots[j]);
        }
        if (stray(sum, words(p->count), 1u) || stray(slots, p->count, words(p->count))) {
            return TM_ALLOC_ERR_CORRUPT;
        }
        mask |= nfree ? MSB(k) : 0u;
        in_use += (p->count - nfree) * p->size;
        for (uint32_t i = 0; i < p->count; ++i) {
            const uint8_t *at = h->heap.p + p->base + i * p->size;
            if (!get(slots, i) && !guard_ok(h, at, p->size)) {
                return TM_ALLOC_ERR_OVERFLOW;
            }
        }
    }
    const uint32_t *used = used_bm(h), *start = start_bm(h), n = h->large_n;
    uint32_t blocks = 0, marked = 0; /* granules in blocks (each begins at a start bit) vs used bits */
    for (uint32_t g = next_bit(start, n, 0, 0); g < n; g = next_bit(start, n, g + 1u, 0)) {
        const uint32_t e1 = next_bit(start, n, g + 1u, 0), e2 = next_bit(used, n, g + 1u, ALL);
        const uint32_t end = e1 < e2 ? e1 : e2;
        if (!get(used, g)) {
            return TM_ALLOC_ERR_CORRUPT;
        }
        if (!guard_ok(h, h->heap.p + h->large_off + (g << h->shift), (end - g) << h->shift)) {
            return TM_ALLOC_ERR_OVERFLOW;
        }
        blocks += end - g;
    }
    for (uint32_t j = 0; j < words(n); ++j) {
        marked += (uint32_t)__builtin_popcount(used[j]);
    }
    in_use += blocks << h->shift;
    if (h->large_in_use != blocks << h->shift || h->large_peak < h->large_in_use) {
        return TM_ALLOC_ERR_CORRUPT;
    }
    if (h->top > n || h->hint > h->top || h->top > h->high_water || h->high_water > n) {
        return TM_ALLOC_ERR_CORRUPT; /* before any scan bounded by them */
    }
    const uint32_t *au = any_used(h), *af = any_free(h);
    for (uint32_t j = 0; j < words(n); ++j) {
        if (get(au, j) != (used[j] != 0) || get(af, j) != (used[j] != ALL)) {
            return TM_ALLOC_ERR_CORRUPT; /* a word summary disagrees with its word */
        }
    }
    if (stray(au, words(n), words(words(n))) || stray(af, words(n), words(words(n)))) {
        return TM_ALLOC_ERR_CORRUPT;
    }
    uint32_t widest = 0; /* the longest hole below top; and each hole within its bin bounds */
    for (uint32_t s0 = next_bit(used, h->top, 0, ALL); s0 < h->top; s0 = next_bit(used, h->top, s0, ALL)) {
        const uint32_t e = next_bit(used, h->top, s0, 0);
        widest = e - s0 > widest ? e - s0 : widest;
        for (uint32_t b = 0; b <= bin_of(e - s0); ++b) {
            if (h->bin_start[b] > s0 || (b + 1u < BINS && h->bin_start[b] > h->bin_start[b + 1u])) {
                return TM_ALLOC_ERR_CORRUPT;
            }
        }
        s0 = e;
    }
    const int top_ok = next_bit(used, n, h->top, 0) == n && (!h->top || get(used, h->top - 1u));
    if (mask != h->class_mask || in_use != h->in_use || blocks != marked || !top_ok || widest > h->max_hole ||
        h->hint > next_bit(used, n, 0, ALL) || stray(used, n, words(n)) ||
        stray(start, n, words(n)) || h->peak_in_use < h->in_use) {
        return TM_ALLOC_ERR_CORRUPT;
    }
    return TM_ALLOC_OK;
}
