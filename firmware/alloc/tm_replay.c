/* See tm_replay.h. Only the allocator call sits between the two clock reads. */
#include "tm_replay.h"

#include <string.h>

/* One trace op on an allocator: the only code between the two clock reads. */
static inline __attribute__((always_inline)) void *call(const tm_replay_allocator_t *a, const tm_trace_op_t *o, void *old)
{
    switch (o->op) {
    case TM_TRACE_ALLOC: return a->malloc_(o->size);
    case TM_TRACE_FREE: a->free_(old); return NULL;
    case TM_TRACE_REALLOC: return a->realloc_(old, o->size);
    case TM_TRACE_CALLOC: return a->calloc_(1, o->size);
    default: return a->memalign_(o->align, o->size);
    }
}

static void nop_free(void *p) { (void)p; }
static void *nop_malloc(size_t n) { (void)n; return NULL; }
static void *nop_realloc(void *p, size_t n) { (void)p, (void)n; return NULL; }
static void *nop_calloc(size_t n, size_t s) { (void)n, (void)s; return NULL; }
static void *nop_memalign(size_t a, size_t n) { (void)a, (void)n; return NULL; }
static uint32_t nop_owned(void) { return 0; }

uint32_t tm_replay_clock_overhead(tm_replay_clock_t clock)
{
    static const tm_replay_allocator_t nop = {nop_malloc, nop_free, nop_realloc, nop_calloc, nop_memalign, nop_owned};
    /* volatile: the compiler must neither know the functions nor skip the dispatch */
    static const tm_replay_allocator_t *volatile empty = &nop;
    static volatile tm_trace_op_t op = {TM_TRACE_FREE, {0}, 0, 0, 0};
    uint64_t best = (uint64_t)-1;
    for (int i = 0; i < 64; ++i) {
        const tm_trace_op_t o = op;
        const tm_replay_allocator_t *a = empty;
        const uint64_t t0 = clock();
        call(a, &o, NULL);
        const uint64_t t1 = clock();
        best = t1 - t0 < best ? t1 - t0 : best;
    }
    return (uint32_t)best;
}

static uint8_t tag(uint32_t slot)
{
    return (uint8_t)(slot * 37u + 11u);
}

static void mark(uint8_t *p, uint32_t n, uint32_t slot)
{
    if (p && n) {
        p[0] = tag(slot);
        p[n - 1] = tag(slot);
    }
}

static int marked(const uint8_t *p, uint32_t n, uint32_t slot)
{
    return !p || !n || (p[0] == tag(slot) && p[n - 1] == tag(slot));
}

void tm_replay_run(const tm_replay_allocator_t *a, const tm_trace_op_t *ops, uint32_t n, void **slots,
                   uint32_t *sizes, uint32_t n_slots, tm_replay_clock_t clock, uint32_t overhead, unsigned flags,
                   uint32_t *dt, tm_replay_result_t *r)
{
    memset(r, 0, sizeof *r);
    memset(slots, 0, n_slots * sizeof *slots);
    const int touch = (flags & TM_REPLAY_TOUCH) != 0;
    uint32_t worst = 0;
    for (uint32_t i = 0; i < n; ++i) {
        const tm_trace_op_t *o = &ops[i];
        const uint32_t s = o->slot;
        void *old = slots[s], *p = NULL;
        if (touch && (o->op == TM_TRACE_FREE || o->op == TM_TRACE_REALLOC) && !marked(old, sizes[s], s)) {
            ++r->corrupted;
        }
        const uint64_t t0 = clock ? clock() : 0;
        p = call(a, o, old);
        const uint64_t t1 = clock ? clock() : 0;
        const uint32_t ticks = t1 - t0 > overhead ? (uint32_t)(t1 - t0) - overhead : 0;
        const uint32_t kind = o->op < TM_TRACE_KINDS ? o->op : TM_TRACE_MEMALIGN;
        r->count[kind]++;
        r->total[kind] += ticks;
        if (ticks > r->worst[kind]) {
            r->worst[kind] = ticks;
        }
        if (ticks > worst) {
            worst = ticks;
            r->worst_op = i;
        }
        if (dt) {
            dt[i] = ticks;
        }
        if (o->op == TM_TRACE_FREE || (o->op == TM_TRACE_REALLOC && o->size == 0)) {
            slots[s] = NULL; /* realloc(p, 0) freed p */
            sizes[s] = 0;
        } else if (!p && o->size) {
            ++r->failed; /* a failed realloc keeps the old block */
        } else {
            if (touch && o->op == TM_TRACE_REALLOC && p && sizes[s] && !marked(p, 1u, s)) {
                ++r->corrupted; /* the first byte must survive the move */
            }
            if (touch && o->op == TM_TRACE_CALLOC && p && (((uint8_t *)p)[0] || ((uint8_t *)p)[o->size - 1])) {
                ++r->corrupted;
            }
            slots[s] = p;
            sizes[s] = p ? o->size : 0;
            if (touch) {
                mark(p, sizes[s], s);
            }
        }
        if (flags & TM_REPLAY_OWNED) {
            const uint32_t owned = a->owned();
            r->peak_owned = owned > r->peak_owned ? owned : r->peak_owned;
        }
        ++r->ops;
    }
    for (uint32_t s = 0; s < n_slots; ++s) {
        if (slots[s]) {
            a->free_(slots[s]);
            slots[s] = NULL;
        }
    }
}
