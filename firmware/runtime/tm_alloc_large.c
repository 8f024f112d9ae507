/* tm_alloc's large region: address-ordered first fit over granules, its metadata out of band.
 *
 * The region is a sequence of runs below `top` (each a block or a hole: a maximal free run, so
 * no two holes touch and the last run is a block), then the tail, free up to the region's end.
 * Its maps (tm_alloc_impl.h lays them out):
 *   runs     per word of granules, two bitmaps side by side (one load fetches both): a bit at the
 *            first granule of every run, and a bit at the first granule of every hole;
 *   sum      a bit per word that has a run start: a run's end, or the run before a block, is the
 *            next or previous start, and the summary crosses long runs 32 words at a time;
 *   longest  per word, its longest hole (of those starting in it; 0: none; LONG_HOLE: at least);
 *   rows     per chunk of 32 words and hole-size bin b (longest holes of 2^b .. 2^(b+1) - 1
 *            granules), a bit per word whose longest hole is in that bin: each word with a hole is
 *            in exactly one row.
 * A request for k granules ORs the rows of its bin and up: the first word set whose longest hole
 * holds k (all of them past k's own bin do) has the lowest hole that fits, and the block is that
 * hole's end: first fit, as newlib-nano (which also returns the end), so the hole keeps its start.
 * Freeing merges with the holes before and after, found through the start bits. Each operation
 * sets or clears a few bits and the longest hole of one or two words, measuring a word's holes
 * again only when its longest shrank and it has others (a word has one hole, mostly). Nothing
 * scans the heap: a search reads n_bins - b rows per chunk and the words of k's own bin whose
 * longest hole is too short; a start is found through the summary, a bit per word. And h->fit_max
 * bounds every hole (raised as holes grow, lowered to k - 1 by a search that found none), so a
 * request no hole can hold goes to the tail without a search. */
#include "tm_alloc_impl.h"

/* The maps, read through h at each use: an operation touches a few words of several maps, and
 * keeping every map's address in a register (as a local copy would) only makes the compiler
 * spill them to the stack and read them back, one instruction more each. */
typedef struct {
    tm_heap_t *h;
} view_t;

/* (The read-only users, tm_large_block and word_longest, never write through it.) */
INLINE view_t view_of(const tm_heap_t *h) { return (view_t){(tm_heap_t *)(uintptr_t)h}; }
#define RUNS(v) ((uint32_t *)AT((v)->h, (v)->h->runs)) /* runs[2j]: word j's starts; runs[2j + 1]: its hole starts */
#define SUM(v) ((uint32_t *)AT((v)->h, (v)->h->sum))   /* a bit per word with a run start */
#define ROWS(v) ((uint32_t *)AT((v)->h, (v)->h->rows)) /* chunk c's rows: ROWS(v)[c * nb + bin] */
#define LONGEST(v) ((uint16_t *)AT((v)->h, (v)->h->longest)) /* per word: its longest hole, LONG_HOLE at most */
#define NB(v) ((v)->h->n_bins)
#define TOPG(v) ((v)->h->top)

void tm_large_init(tm_heap_t *h)
{
    uint32_t *at = W(h, h->st_at);
    h->base = LARGE_AT_VALUE(h);
    h->runs = AT_VALUE(h, at);
    h->sum = AT_VALUE(h, at += 2u * words(h->large_n));
    h->rows = AT_VALUE(h, at += h->nc);
    h->longest = AT_VALUE(h, at + h->nc * h->n_bins);
}

INLINE uint32_t *starts_of(const view_t *v, uint32_t j) { return RUNS(v) + 2u * j; }
INLINE uint32_t capped(uint32_t n) { return n < LONG_HOLE ? n : LONG_HOLE; }

/* ---- run starts ---------------------------------------------------------------------------- */

/* The first start in a word after j, or top: the end of a run that is its word's last. */
static __attribute__((noinline)) uint32_t far_end(const tm_heap_t *h, uint32_t j)
{
    j = next_bit(AT(h, h->sum), h->nc << 5, j + 1u, 0); /* no summary bits past the last word */
    return j < h->nc << 5 ? (j << 5) + CLZ(((const uint32_t *)AT(h, h->runs))[2u * j]) : h->top;
}

/* The end of the run starting at x: the next start in its word, else in a later word of its
 * chunk (one summary word), else further. */
INLINE uint32_t run_end(const view_t *v, uint32_t x)
{
    const uint32_t later = *starts_of(v, x >> 5) & (MSB(x) - 1u), j = x >> 5;
    if (later) {
        return (x & ~31u) + CLZ(later);
    }
    const uint32_t next = SUM(v)[j >> 5] & ((ALL >> (j & 31u)) >> 1);
    if (next) {
        const uint32_t i = (j & ~31u) + CLZ(next);
        return (i << 5) + CLZ(*starts_of(v, i));
    }
    return far_end(v->h, j);
}

/* The last start in a word before j (one exists: granule 0 starts a run). */
static __attribute__((noinline)) uint32_t far_start(const tm_heap_t *h, uint32_t j)
{
    const uint32_t *sum = AT(h, h->sum);
    uint32_t c = j >> 5, s = sum[c] & ~(ALL >> (j & 31u));
    while (!s) {
        s = sum[--c];
    }
    j = (c << 5) + 31u - CTZ(s);
    return (j << 5) + 31u - CTZ(((const uint32_t *)AT(h, h->runs))[2u * j]);
}

/* The start of the run before granule g > 0: in g's word, else in an earlier word of its chunk,
 * else further back. */
INLINE uint32_t prev_start(const view_t *v, uint32_t g)
{
    const uint32_t w = *starts_of(v, g >> 5) & ~(ALL >> (g & 31u)), j = g >> 5;
    if (w) {
        return (g & ~31u) + 31u - CTZ(w);
    }
    const uint32_t before = SUM(v)[j >> 5] & ~(ALL >> (j & 31u));
    if (before) {
        const uint32_t i = (j & ~31u) + 31u - CTZ(before);
        return (i << 5) + 31u - CTZ(*starts_of(v, i));
    }
    return far_start(v->h, j);
}

INLINE void set_start(const view_t *v, uint32_t i)
{
    *starts_of(v, i >> 5) |= MSB(i);
    SUM(v)[i >> 10] |= MSB(i >> 5);
}

/* A hole now starts at i (a run start already, or not: both bits are set). */
INLINE void set_hole(const view_t *v, uint32_t i)
{
    uint32_t *w = starts_of(v, i >> 5);
    w[0] |= MSB(i);
    w[1] |= MSB(i);
    SUM(v)[i >> 10] |= MSB(i >> 5);
}

/* Granule i starts no run any more (nor a hole). */
INLINE void clear_start(const view_t *v, uint32_t i)
{
    uint32_t *w = starts_of(v, i >> 5);
    w[1] &= ~MSB(i);
    if (!(w[0] &= ~MSB(i))) {
        SUM(v)[i >> 10] &= ~MSB(i >> 5);
    }
}

/* ---- each word's longest hole, and its row --------------------------------------------------- */

/* Word j's longest hole (capped), measured from the start bits (its holes' ends: the next starts). */
static __attribute__((noinline)) uint32_t word_longest(const tm_heap_t *h, uint32_t j)
{
    const view_t v = view_of(h);
    uint32_t best = 0;
    for (uint32_t holes = starts_of(&v, j)[1]; holes; holes &= ~MSB(CLZ(holes))) {
        const uint32_t s = (j << 5) + CLZ(holes), n = run_end(&v, s) - s;
        best = n > best ? n : best;
    }
    return capped(best);
}

/* Word j's longest hole is now m, not old: its row follows when its bin changes. Two lengths
 * have the same top bit iff their xor is below their and. */
INLINE void set_longest(const view_t *v, uint32_t j, uint32_t old, uint32_t m)
{
    LONGEST(v)[j] = (uint16_t)m;
    if ((old ^ m) >= (old & m)) {
        uint32_t *rows = ROWS(v) + (j >> 5) * NB(v);
        if (old) {
            rows[bin_of(old)] &= ~MSB(j);
        }
        if (m) {
            rows[bin_of(m)] |= MSB(j);
        }
    }
}

/* A hole starting in word j is new, or grew, to n granules. */
INLINE void hole_grew(const view_t *v, uint32_t j, uint32_t n)
{
    const uint32_t old = LONGEST(v)[j];
    if (n > old && old != LONG_HOLE) {
        set_longest(v, j, old, capped(n));
    }
    if (n > v->h->fit_max) {
        v->h->fit_max = n;
    }
}

/* The hole at s had `was` granules and has `now` (0: gone; the bitmaps say so already); others:
 * the word's other hole starts. If it was the word's longest, the word's longest is measured
 * again, from its other holes if it has any. */
INLINE void hole_shrank(const view_t *v, uint32_t s, uint32_t was, uint32_t now, uint32_t others)
{
    const uint32_t j = s >> 5, old = LONGEST(v)[j];
    if (was >= old) { /* (was is at most the word's longest: this is capped(was) == old) */
        set_longest(v, j, old, others ? word_longest(v->h, j) : capped(now));
    }
}

/* ---- malloc ---------------------------------------------------------------------------------- */

/* The first hole of word j with k granules or more (one exists), and its length: for a word with
 * several holes, or a longest hole past LONG_HOLE. */
static __attribute__((noinline)) uint32_t hole_in(const tm_heap_t *h, uint32_t j, uint32_t k, uint32_t *n)
{
    const view_t v = view_of(h);
    for (uint32_t holes = starts_of(&v, j)[1]; holes; holes &= ~MSB(CLZ(holes))) {
        const uint32_t s = (j << 5) + CLZ(holes);
        if ((*n = run_end(&v, s) - s) >= k) {
            return s;
        }
    }
    return ALL;
}

/* The rows of bins b .. nb - 1 of one chunk, ORed: the words with a hole of bin b or longer.
 * Unrolled (nb <= LARGE_BINS): two instructions a row, not four. */
INLINE uint32_t rows_from(const uint32_t *rows, uint32_t b, uint32_t nb)
{
    const uint32_t *end = rows + nb;
    uint32_t u = 0;
    switch (nb - b) {
    default: u |= end[-10]; /* fall through */
    case 9: u |= end[-9];   /* fall through */
    case 8: u |= end[-8];   /* fall through */
    case 7: u |= end[-7];   /* fall through */
    case 6: u |= end[-6];   /* fall through */
    case 5: u |= end[-5];   /* fall through */
    case 4: u |= end[-4];   /* fall through */
    case 3: u |= end[-3];   /* fall through */
    case 2: u |= end[-2];   /* fall through */
    case 1: u |= end[-1];
    }
    return u;
}

#if LARGE_BINS != 10
#error "rows_from() unrolls LARGE_BINS rows"
#endif

/* Block [c, c + k) taken: accounted, guarded; its address. */
INLINE void *placed(tm_heap_t *h, uint32_t c, uint32_t k)
{
    const uint32_t cap = k << h->shift;
    uint8_t *p = (uint8_t *)(LARGE_ADDR(h) + (c << h->shift));
    large_account(h, 0, cap);
    guard_put(h, p, cap);
    account(h, cap);
    return p;
}

/* k granules from the tail (at c >= top, the gap [top, c) left as a hole), or ALL if no room. */
INLINE uint32_t from_tail(tm_heap_t *h, const view_t *v, uint32_t c, uint32_t k)
{
    if (c > h->large_n || k > h->large_n - c) {
        return ALL;
    }
    if (c > TOPG(v)) { /* an alignment gap: a hole after the last block */
        set_hole(v, TOPG(v));
        hole_grew(v, TOPG(v) >> 5, c - TOPG(v));
    }
    set_start(v, c);
    h->top = c + k;
    h->high_water = c + k > h->high_water ? c + k : h->high_water;
    return c;
}

/* k granules from word j, which has a hole that holds them: the end of its first such hole. For
 * any word (several holes, or a longest past LONG_HOLE); tm_large_alloc takes the common one. */
static __attribute__((noinline)) void *take_in(tm_heap_t *h, uint32_t j, uint32_t k)
{
    const view_t v = view_of(h);
    uint32_t n_s;
    const uint32_t s = hole_in(h, j, k, &n_s), c = s + n_s - k, others = starts_of(&v, j)[1] & ~MSB(s);
    if (n_s == k) {
        starts_of(&v, j)[1] = others; /* the hole is now the block */
    } else {
        set_start(&v, c);
    }
    hole_shrank(&v, s, n_s, n_s - k, others);
    return placed(h, c, k);
}

/* First fit: the lowest word whose longest hole holds k granules, through the rows of k's bin and
 * up, chunk by chunk; the end of its first hole that does. A word with one hole (most have) is
 * taken here: the hole's length is the word's longest, and the word's longest is what remains of
 * it; others by take_in. */
void *tm_large_alloc(tm_heap_t *h, size_t n)
{
    const uint32_t k = ((uint32_t)n + h->round) >> h->shift;
    const uint32_t nb = h->n_bins, b = bin_of(capped(k)), end = h->nc << 5;
    uint32_t *rows = AT(h, h->rows);
    uint16_t *longest = AT(h, h->longest);
    for (uint32_t base = k <= h->fit_max ? 0 : end; base < end; base += 32u, rows += nb) {
        for (uint32_t u = rows_from(rows, b, nb); u; u &= ~MSB(CLZ(u))) {
            const uint32_t j = base + CLZ(u), m = longest[j];
            if (m < k && (m != LONG_HOLE || hole_in(h, j, k, &(uint32_t){0}) == ALL)) {
                continue; /* too short, though in k's bin */
            }
            uint32_t *w = (uint32_t *)AT(h, h->runs) + 2u * j;
            const uint32_t holes = w[1], s = (j << 5) + CLZ(holes), bit = MSB(j), c = s + m - k;
            if ((holes & ~MSB(s)) || m == LONG_HOLE) {
                return take_in(h, j, k);
            }
            uint32_t *row = rows + bin_of(m);
            longest[j] = (uint16_t)(m - k);
            if (m == k) {
                w[1] = 0; /* the hole is now the block */
                *row &= ~bit;
            } else {
                uint32_t *wc = (uint32_t *)AT(h, h->runs) + 2u * (c >> 5);
                if (!*wc) { /* the block's word had no start: the summary learns it */
                    ((uint32_t *)AT(h, h->sum))[c >> 10] |= MSB(c >> 5);
                }
                *wc |= MSB(c);
                if (((m - k) ^ m) >= ((m - k) & m)) { /* a shorter bin */
                    *row &= ~bit;
                    rows[bin_of(m - k)] |= bit;
                }
            }
            return placed(h, c, k);
        }
    }
    if (k <= h->fit_max) {
        h->fit_max = k - 1u; /* every hole was shorter */
    }
    const view_t v = view_of(h);
    const uint32_t c = from_tail(h, &v, TOPG(&v), k);
    return c != ALL ? placed(h, c, k) : tm_alloc_failed(h);
}

/* need bytes (guard included) on a multiple of a granules (a > 1: memalign): the lowest hole with
 * such a place for them, taken at its last one; a gap after the block stays a hole. */
void *tm_large_aligned(tm_heap_t *h, uint32_t need, uint32_t a)
{
    const uint32_t k = (need + (1u << h->shift) - 1u) >> h->shift;
    const uint32_t r = (uint32_t)(LARGE_ADDR(h) >> h->shift) & (a - 1u); /* (r + c) % a == 0 */
    const view_t v = view_of(h);
    const uint32_t b = bin_of(capped(k));
    for (uint32_t c = 0; k <= h->fit_max && c < h->nc; ++c) {
        for (uint32_t u = rows_from(ROWS(&v) + c * NB(&v), b, NB(&v)); u; u &= ~MSB(CLZ(u))) {
            const uint32_t j = (c << 5) + CLZ(u);
            for (uint32_t holes = starts_of(&v, j)[1]; holes; holes &= ~MSB(CLZ(holes))) {
                const uint32_t s = (j << 5) + CLZ(holes), e = run_end(&v, s), back = (r + e - k) & (a - 1u);
                if (e - s < k || back > e - k - s) {
                    continue;
                }
                const uint32_t at = e - k - back; /* the hole's last aligned place */
                if (at + k < e) { /* the gap after the block */
                    set_hole(&v, at + k);
                }
                if (at == s) {
                    starts_of(&v, j)[1] &= ~MSB(s); /* the hole's start is now the block's */
                } else {
                    set_start(&v, at);
                }
                hole_shrank(&v, s, e - s, at - s, starts_of(&v, j)[1] & ~MSB(s));
                if (at + k < e) {
                    hole_grew(&v, (at + k) >> 5, e - at - k);
                }
                return placed(h, at, k);
            }
        }
    }
    const uint32_t c = from_tail(h, &v, TOPG(&v) + ((0u - (r + TOPG(&v))) & (a - 1u)), k);
    return c != ALL ? placed(h, c, k) : NULL;
}

/* ---- free, realloc in place -------------------------------------------------------------------- */

/* What granule g is: TM_ALLOC_OK and its end if a block starts there, else the error to report. */
int tm_large_block(const tm_heap_t *h, uint32_t g, uint32_t *end)
{
    const view_t v = view_of(h);
    if (g >= TOPG(&v)) {
        return TM_ALLOC_ERR_DOUBLE_FREE; /* in the tail: free space */
    }
    const uint32_t *w = starts_of(&v, g >> 5);
    if (w[0] & ~w[1] & MSB(g)) {
        *end = run_end(&v, g);
        return TM_ALLOC_OK;
    }
    if (w[0] & MSB(g)) {
        return TM_ALLOC_ERR_DOUBLE_FREE; /* a hole: freed already */
    }
    const uint32_t p = prev_start(&v, g);
    return starts_of(&v, p >> 5)[1] & MSB(p) ? TM_ALLOC_ERR_DOUBLE_FREE /* inside a hole */
                                             : TM_ALLOC_ERR_INVALID_FREE; /* inside a live block */
}

/* Granules [g, e) become free, g a block's start (or, shrinking a block, a granule inside it with
 * no start bit yet), e the next run's start or top: merged with the holes before and after. */
INLINE void give(tm_heap_t *h, const view_t *v, uint32_t g, uint32_t e, int is_start)
{
    uint32_t p = g, prev_hole = 0;
    if (g) {
        p = prev_start(v, g);
        prev_hole = starts_of(v, p >> 5)[1] & MSB(p);
    }
    if (e == TOPG(v)) { /* into the tail */
        if (is_start) {
            clear_start(v, g);
        }
        if (prev_hole) {
            clear_start(v, p);
            hole_shrank(v, p, g - p, 0, starts_of(v, p >> 5)[1]);
        }
        h->top = prev_hole ? p : g;
        return;
    }
    uint32_t end = e;
    const uint32_t holes_e = starts_of(v, e >> 5)[1];
    if (holes_e & MSB(e)) { /* the hole after joins: its length is its word's longest if it is alone */
        const uint32_t m = LONGEST(v)[e >> 5];
        end = (holes_e & ~MSB(e)) || m == LONG_HOLE ? run_end(v, e) : e + m;
        clear_start(v, e);
        hole_shrank(v, e, end - e, 0, holes_e & ~MSB(e));
    }
    if (prev_hole) { /* and the hole before grows */
        if (is_start) {
            clear_start(v, g);
        }
        hole_grew(v, p >> 5, end - p);
    } else {
        if (is_start) {
            starts_of(v, g >> 5)[1] |= MSB(g); /* the block's start is the hole's: its word is summed */
        } else {
            set_hole(v, g);
        }
        hole_grew(v, g >> 5, end - g);
    }
}

void tm_large_give(tm_heap_t *h, uint32_t g, uint32_t end)
{
    const view_t v = view_of(h);
    give(h, &v, g, end, 1);
}

/* A free the fast path did not take: reported. */
static __attribute__((noinline)) void free_error(tm_heap_t *h, const void *p)
{
    const uintptr_t off = (uintptr_t)p - LARGE_ADDR(h);
    uint32_t end;
    if (h->magic != MAGIC) {
        tm_alloc_on_error(TM_ALLOC_ERR_INVALID_FREE, p); /* a heap never initialised: nothing is its */
    } else if (off >= h->heap_end - h->large_off || (off & ((1u << h->shift) - 1u))) {
        h->on_error.f(TM_ALLOC_ERR_INVALID_FREE, p); /* between the pools and the region, past it, off a granule */
    } else {
        h->on_error.f(tm_large_block(h, (uint32_t)off >> h->shift, &end), p);
    }
}

void tm_large_free(tm_heap_t *h, const void *p)
{
    const uintptr_t off = (uintptr_t)p - LARGE_ADDR(h), g = off >> h->shift;
    const view_t v = view_of(h);
    if (g >= TOPG(&v) || (g << h->shift) != off) { /* not a granule of a run */
        free_error(h, p);
        return;
    }
    const uint32_t *w = starts_of(&v, (uint32_t)g >> 5);
    if (!(w[0] & ~w[1] & MSB(g))) { /* not a block's start */
        free_error(h, p);
        return;
    }
    const uint32_t e = run_end(&v, (uint32_t)g), cap = (e - (uint32_t)g) << h->shift;
    if (!guard_ok(h, p, cap)) {
        h->on_error.f(TM_ALLOC_ERR_OVERFLOW, p); /* reported; the block is still sound */
    }
    give(h, &v, (uint32_t)g, e, 1);
    h->large_in_use -= cap;
    h->in_use -= cap;
}

int tm_large_resize(tm_heap_t *h, uint32_t g, uint32_t end, uint32_t k)
{
    const view_t v = view_of(h);
    if (g + k < end) { /* shrink: the rest becomes free */
        give(h, &v, g + k, end, 0);
        return 1;
    }
    if (g + k == end) {
        return 1;
    }
    if (end == TOPG(&v)) { /* grow into the tail */
        if (k > h->large_n - g) {
            return 0;
        }
        h->top = g + k;
        h->high_water = h->top > h->high_water ? h->top : h->high_water;
        return 1;
    }
    if (!(starts_of(&v, end >> 5)[1] & MSB(end))) {
        return 0;
    }
    const uint32_t hole_end = run_end(&v, end); /* grow into the hole that follows */
    if (g + k > hole_end) {
        return 0;
    }
    clear_start(&v, end);
    hole_shrank(&v, end, hole_end - end, 0, starts_of(&v, end >> 5)[1]);
    if (g + k < hole_end) {
        set_hole(&v, g + k);
        hole_grew(&v, (g + k) >> 5, hole_end - g - k);
    }
    return 1;
}
