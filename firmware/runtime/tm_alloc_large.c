/* tm_alloc's large region: address-ordered first fit over granules, its metadata out of band.
 *
 * The region is a sequence of runs below `top` (each a block or a hole: a maximal free run, so
 * no two holes touch and the last run is a block), then the tail, free up to the region's end.
 * It is described by:
 *   start  a bit at the first granule of every run;
 *   used   a bit at the first granule of every block (a subset of start);
 *   sum    a bit per word of `start` that has one, to cross long runs in words / 32 steps;
 *   len    per word of `start`, the length of its last run (16 bits; LONG_RUN: longer): a run's
 *          end is the next start in its word, else its start plus this, so ends are never
 *          scanned for;
 *   bins   per word of `start` and hole-size bin b (holes of 2^b .. 2^(b+1) - 1 granules): a
 *          hole of that bin may start in the word. Set whenever a hole is made, cleared when its
 *          hole goes if no other hole starts in the word, else by the first search that finds it
 *          stale. Chunk c (words 32c .. 32c + 31) has a row per bin and a summary of its rows, so
 *          a few loads answer "which word has a hole of bin >= b".
 * Taking or freeing a block sets or clears a few bits (never a range: a block is its start bit)
 * and merges with the neighbouring holes. A search visits only the words whose bins say a hole
 * might fit, lowest first: it is first fit (newlib-nano's policy, and on the benchmark's traces
 * the least heap), and its cost is bounded by the holes of the request's own bin (plus stale
 * bits, each cleared once) and the bin rows. */
#include "tm_alloc_impl.h"

/* The bitmaps, located once per operation: the compiler cannot know that stores into them never
 * move them, so through h it would reload every offset after every store. */
typedef struct {
    uint32_t *st, *us, *sum, *rows; /* rows: chunk 0's row summary, its rows, chunk 1's ... */
    uint16_t *len;                  /* per word: its last run's length, or LONG_RUN */
    uint32_t nw, top, stride;       /* stride: words per chunk of rows */
} view_t;

INLINE view_t view_of(const tm_heap_t *h)
{
    return (view_t){starts(h), useds(h), sums(h), bin_rows(h, 0), run_lengths(h), h->nw, h->top, h->n_bins + 1u};
}

/* Starts after x in x's word. */
INLINE uint32_t later_in_word(const view_t *v, uint32_t x)
{
    return v->st[x >> 5] & ((ALL >> (x & 31u)) >> 1);
}

/* The end of a long run starting at x: the next word with a start, through the summary. (Given
 * h, not the view: a view whose address is taken stays in memory, not in registers.) */
static __attribute__((noinline)) uint32_t far_end(const tm_heap_t *h, uint32_t x)
{
    const uint32_t j = next_bit(sums(h), h->nw, (x >> 5) + 1u, 0);
    return j < h->nw ? (j << 5) + CLZ(starts(h)[j]) : h->top;
}

/* The end of the run starting at x: the next start in its word, else its recorded length. */
INLINE uint32_t run_end(const tm_heap_t *h, const view_t *v, uint32_t x)
{
    const uint32_t later = later_in_word(v, x);
    if (later) {
        return (x & ~31u) + CLZ(later);
    }
    return v->len[x >> 5] != LONG_RUN ? x + v->len[x >> 5] : far_end(h, x);
}

/* Run [x, end) is now so (start bits already set): recorded if it is its word's last. */
INLINE void set_run(const view_t *v, uint32_t x, uint32_t end)
{
    if (!later_in_word(v, x)) {
        v->len[x >> 5] = (uint16_t)(end - x < LONG_RUN ? end - x : LONG_RUN);
    }
}

/* The last run start before g (> 0: the run at granule 0 starts below it). */
INLINE uint32_t prev_start(const view_t *v, uint32_t g)
{
    uint32_t j = g >> 5, w = v->st[j] & ~(ALL >> (g & 31u));
    if (!w && (!j || !(w = v->st[--j]))) { /* further back: through the summary */
        uint32_t c = j >> 5, s = v->sum[c] & ~(ALL >> (j & 31u));
        while (!s) {
            s = v->sum[--c];
        }
        j = (c << 5) + 31u - CTZ(s);
        w = v->st[j];
    }
    return (j << 5) + 31u - CTZ(w);
}

INLINE void set_start(const view_t *v, uint32_t i)
{
    v->st[i >> 5] |= MSB(i);
    v->sum[i >> 10] |= MSB(i >> 5);
}

INLINE void clear_start(const view_t *v, uint32_t i)
{
    if (!(v->st[i >> 5] &= ~MSB(i))) {
        v->sum[i >> 10] &= ~MSB(i >> 5);
    }
}

INLINE uint32_t holes_in(const view_t *v, uint32_t j)
{
    return v->st[j] & ~v->us[j];
}

/* A hole of n granules now starts at s. */
INLINE void note_hole(const view_t *v, uint32_t s, uint32_t n)
{
    uint32_t *rows = v->rows + (s >> 10) * v->stride;
    const uint32_t b = bin_of(n);
    rows[1u + b] |= MSB(s >> 5);
    rows[0] |= MSB(b);
}

/* Word j has no hole of bin b (the rows' summary follows). */
INLINE void unbin(uint32_t *rows, uint32_t b, uint32_t j)
{
    if (!(rows[1u + b] &= ~MSB(j))) {
        rows[0] &= ~MSB(b);
    }
}

/* The hole of n granules at s is gone (taken, or merged into another): its bin bit goes with it
 * if it was the only hole starting in its word; otherwise a search clears it when stale. */
INLINE void drop_hole(const view_t *v, uint32_t s, uint32_t n)
{
    if (!(holes_in(v, s >> 5) & ~MSB(s))) {
        unbin(v->rows + (s >> 10) * v->stride, bin_of(n), s >> 5);
    }
}

/* The lowest word at or after j with a bit in a row of bin >= b; nw if none. Only the rows the
 * row summary names are read. */
static uint32_t next_word(const tm_heap_t *h, uint32_t b, uint32_t j)
{
    for (uint32_t c = j >> 5, mask = ALL >> (j & 31u); c < words(h->nw); ++c, mask = ALL) {
        const uint32_t *rows = bin_rows(h, c);
        uint32_t any = 0;
        for (uint32_t m = rows[0] & (ALL >> b); m; m &= ~MSB(CLZ(m))) {
            any |= rows[1u + CLZ(m)];
        }
        if (any & mask) {
            return (c << 5) + CLZ(any & mask);
        }
    }
    return h->nw;
}

/* A search found no hole that fits in word j, whose holes are of the bins in `seen`: its bits in
 * the other rows from b up were stale. */
static void clean_word(tm_heap_t *h, uint32_t j, uint32_t b, uint32_t seen)
{
    uint32_t *rows = bin_rows(h, j >> 5);
    for (uint32_t m = rows[0] & (ALL >> b) & ~seen; m; m &= ~MSB(CLZ(m))) {
        unbin(rows, CLZ(m), j);
    }
}

/* k granules (>= 1), first fit: the lowest hole with k granules from a granule c with
 * (r + c) % a == 0 (a a power of two, r the region's start in granules mod a), else the tail.
 * Returns c, or ALL if there is no room. */
INLINE uint32_t take(tm_heap_t *h, uint32_t k, uint32_t a)
{
    const view_t v = view_of(h);
    const uint32_t r = (uint32_t)((uintptr_t)(h->heap.p + h->large_off) >> h->shift) & (a - 1u), b = bin_of(k);
    uint32_t s = 0, e = 0, c = ALL;
    for (uint32_t j = next_word(h, b, 0); j < v.nw; j = next_word(h, b, j + 1u)) {
        uint32_t seen = 0;
        for (uint32_t holes = holes_in(&v, j); holes; holes &= ~MSB(s)) {
            s = (j << 5) + CLZ(holes);
            e = run_end(h, &v, s); /* a hole is never last: a block starts there */
            const uint32_t at = s + ((0u - (r + s)) & (a - 1u));
            if (at < e && k <= e - at) {
                c = at;
                break;
            }
            seen |= MSB(bin_of(e - s));
        }
        if (c != ALL) {
            break;
        }
        clean_word(h, j, b, seen);
    }
    if (c != ALL) {
        drop_hole(&v, s, e - s);
        if (c > s) { /* the alignment gap stays a hole */
            note_hole(&v, s, c - s);
            set_start(&v, c);
        }
    } else { /* the tail */
        s = v.top;
        c = s + ((0u - (r + s)) & (a - 1u));
        if (c > h->large_n || k > h->large_n - c) {
            return ALL;
        }
        if (c > s) {
            set_start(&v, s);
            note_hole(&v, s, c - s);
        }
        set_start(&v, c);
        e = h->top = c + k;
        h->high_water = e > h->high_water ? e : h->high_water;
    }
    v.us[c >> 5] |= MSB(c);
    if (c + k < e) { /* the rest of the hole */
        set_start(&v, c + k);
        note_hole(&v, c + k, e - c - k);
        set_run(&v, c + k, e);
    }
    set_run(&v, c, c + k);
    if (c > s) {
        set_run(&v, s, c);
    }
    return c;
}

/* need bytes (guard included) on a multiple of a granules, accounted. */
INLINE void *place(tm_heap_t *h, uint32_t need, uint32_t a)
{
    const uint32_t k = (need + (1u << h->shift) - 1u) >> h->shift, c = take(h, k, a);
    if (c == ALL) {
        return NULL;
    }
    uint8_t *p = h->heap.p + h->large_off + (c << h->shift);
    large_account(h, 0, k << h->shift);
    guard_put(h, p, k << h->shift);
    account(h, k << h->shift);
    return p;
}

void *tm_large_alloc(tm_heap_t *h, size_t n)
{
    return place(h, (uint32_t)n + h->guard, 1u); /* the common case, its alignment folded away */
}

void *tm_large_aligned(tm_heap_t *h, uint32_t need, uint32_t a)
{
    return place(h, need, a);
}

int tm_large_block(const tm_heap_t *h, uint32_t g, uint32_t *end)
{
    const view_t v = view_of(h);
    if (g >= v.top) {
        return TM_ALLOC_ERR_DOUBLE_FREE; /* in the tail: free space */
    }
    if (get(v.us, g)) {
        *end = run_end(h, &v, g);
        return TM_ALLOC_OK;
    }
    if (get(v.st, g) || !get(v.us, prev_start(&v, g))) {
        return TM_ALLOC_ERR_DOUBLE_FREE; /* in a hole: freed already */
    }
    return TM_ALLOC_ERR_INVALID_FREE; /* inside a live block */
}

/* Granules [f, end) become free, f a run start, end the next run's or top: merged with the hole
 * at end, if any, or with the tail. */
INLINE void free_to(tm_heap_t *h, const view_t *v, uint32_t f, uint32_t end)
{
    if (end == v->top) {
        clear_start(v, f);
        h->top = f;
        const uint32_t before = v->st[f >> 5] & ~(ALL >> (f & 31u)); /* the run before, now its word's last */
        if (before) {
            const uint32_t x = (f & ~31u) + 31u - CTZ(before);
            set_run(v, x, f);
        }
        return;
    }
    if (!get(v->us, end)) { /* the hole there joins */
        const uint32_t hole_end = run_end(h, v, end);
        drop_hole(v, end, hole_end - end);
        clear_start(v, end);
        end = hole_end;
    }
    note_hole(v, f, end - f);
    set_run(v, f, end);
}

/* Block [g, end) becomes free: merged with the hole before it, if any. */
INLINE void give(tm_heap_t *h, const view_t *v, uint32_t g, uint32_t end)
{
    uint32_t f = g;
    if (g) {
        const uint32_t p = prev_start(v, g);
        if (!get(v->us, p)) { /* the hole before grows */
            drop_hole(v, p, g - p);
            f = p;
        }
    }
    v->us[g >> 5] &= ~MSB(g);
    if (f != g) {
        clear_start(v, g);
    }
    free_to(h, v, f, end);
}

void tm_large_give(tm_heap_t *h, uint32_t g, uint32_t end)
{
    const view_t v = view_of(h);
    give(h, &v, g, end);
}

void tm_large_free(tm_heap_t *h, const void *p)
{
    const view_t v = view_of(h);
    const uintptr_t off = (uintptr_t)p - (uintptr_t)h->heap.p - h->large_off;
    const uint32_t g = (uint32_t)off >> h->shift;
    uint32_t end;
    if (h->magic != MAGIC || off >= h->heap_end - h->large_off || (off & ((1u << h->shift) - 1u))) {
        h->on_error.f(TM_ALLOC_ERR_INVALID_FREE, p); /* between the pools and the region, past it, off a granule */
        return;
    }
    if (g >= v.top || !get(v.us, g)) {
        h->on_error.f(tm_large_block(h, g, &end), p);
        return;
    }
    end = run_end(h, &v, g);
    const uint32_t cap = (end - g) << h->shift;
    if (!guard_ok(h, p, cap)) {
        h->on_error.f(TM_ALLOC_ERR_OVERFLOW, p); /* reported; the block is still sound */
    }
    give(h, &v, g, end);
    h->large_in_use -= cap;
    h->in_use -= cap;
}

int tm_large_resize(tm_heap_t *h, uint32_t g, uint32_t end, uint32_t k)
{
    const view_t v = view_of(h);
    if (g + k < end) { /* shrink: the rest becomes free */
        if (end != v.top) {
            set_start(&v, g + k);
        }
        free_to(h, &v, g + k, end);
        set_run(&v, g, g + k);
        return 1;
    }
    if (g + k == end) {
        return 1;
    }
    if (end == v.top) { /* grow into the tail */
        if (k > h->large_n - g) {
            return 0;
        }
        h->top = g + k;
        h->high_water = h->top > h->high_water ? h->top : h->high_water;
        set_run(&v, g, g + k);
        return 1;
    }
    if (get(v.us, end)) {
        return 0;
    }
    const uint32_t hole_end = run_end(h, &v, end); /* grow into the hole that follows */
    if (g + k > hole_end) {
        return 0;
    }
    drop_hole(&v, end, hole_end - end);
    clear_start(&v, end);
    if (g + k < hole_end) {
        set_start(&v, g + k);
        note_hole(&v, g + k, hole_end - g - k);
        set_run(&v, g + k, hole_end);
    }
    set_run(&v, g, g + k);
    return 1;
}

uint32_t tm_large_runs(const tm_heap_t *h, uint32_t *largest_hole)
{
    const view_t v = view_of(h);
    uint32_t free_below = 0, largest = 0;
    for (uint32_t s = 0; s < v.top;) {
        const uint32_t e = run_end(h, &v, s);
        if (!get(v.us, s)) {
            free_below += e - s;
            largest = e - s > largest ? e - s : largest;
        }
        s = e;
    }
    *largest_hole = largest;
    return free_below;
}
