/* tm_alloc's size-class pools: the O(1) path, inlined into the API (tm_alloc.c).
 *
 * Pool k holds slots of pools[k].size bytes, back to back from pools[k].base; its free slots are a
 * bitmap (a bit per slot, set: free) under a summary word (a bit per slot word, set: the word has
 * a free slot), and class_mask has bit k while pool k has any. A request takes the smallest class
 * that fits it (a table from size / 8) or, if that pool is full, the next larger class with a
 * free slot: one count-leading-zeros on class_mask. A pointer finds its pool through a page map
 * and its slot by a multiply, so free() needs no division and no search.
 *
 * `guard` and `class_of` are the heap's (h->guard, h->class_of), passed in: the default heap's
 * are compile-time constants (its config header), which saves loads and a branch a call. */
#ifndef TM_ALLOC_POOL_H
#define TM_ALLOC_POOL_H

#include "tm_alloc_impl.h"

/* Two count-leading-zeros find the pool's lowest free slot; a slot word that empties clears its
 * summary bit, and an empty pool clears its class bit. (Indices below 32 need no mask: TOP.) */
#define TOP(i) (0x80000000u >> (i))
INLINE uint8_t *pool_take(tm_heap_t *h, uint32_t k, uint32_t guard)
{
    const pool_t *p = &h->pools[k];
    __asm__("" : "+r"(p)); /* the record's address in one register: GCC otherwise spends 3 more adds */
    const uint32_t size = p->size, base = p->base; /* read before the stores below, which may alias */
    uint32_t *sum = W(h, p->bits);
    const uint32_t s = *sum, j = CLZ(s), w = sum[1u + j], i = CLZ(w), left = w & ~TOP(i);
    sum[1u + j] = left;
    if (!left) {
        *sum = s & ~TOP(j);
        if (!(s & ~TOP(j))) {
            h->class_mask &= ~TOP(k);
        }
    }
    uint8_t *at = h->heap.p + base + ((j << 5) + i) * size;
    if (guard) {
        const uint32_t g = GUARD ^ (uint32_t)(uintptr_t)at;
        memcpy(at + size - 4u, &g, 4);
    }
    account(h, size);
    return at;
}

/* The classes with a free slot that fit need bytes (guard included): the first is the smallest. */
INLINE uint32_t class_fits(const tm_heap_t *h, uint32_t need, uint32_t class_of)
{
    return h->class_mask & (ALL >> ((const uint8_t *)h)[class_of + ((need - 1u) >> 3)]);
}

INLINE uint8_t *from_pool(tm_heap_t *h, uint32_t need)
{
    const uint32_t m = class_fits(h, need, h->class_of);
    return m ? pool_take(h, CLZ(m), h->guard) : NULL;
}

/* The pool holding heap offset off (< pool_bytes): the page map, then at most the pools that
 * share the page (one or two, unless pools are smaller than a page). */
INLINE const pool_t *pool_at(const tm_heap_t *h, uint32_t off)
{
    const pool_t *p = &h->pools[((const uint8_t *)h)[h->page_map + (off >> h->page_shift)]];
    while (off >= p[1].base) {
        ++p;
    }
    return p;
}

/* Frees p, at heap offset off in the pools, if it is a live slot with its guard intact; 0 (nothing
 * done) otherwise. The slot
 * comes from a multiply by the pool's reciprocal (no division), checked exactly by multiplying
 * back; only then is its bit read (a bad offset may point one word past the pool's bitmap). A
 * slot word that was empty sets its summary bit, and an empty pool its class bit. */
INLINE int pool_give(tm_heap_t *h, const uint8_t *p, uint32_t off, uint32_t guard) /* off: p's, below pool_bytes */
{
    const pool_t *pool = pool_at(h, off);
    const uint32_t size = pool->size, rel = off - pool->base;
    const uint32_t i = (uint32_t)(((uint64_t)rel * pool->recip) >> 32), bit = MSB(i);
    uint32_t *sum = W(h, pool->bits), *w = sum + 1u + (i >> 5);
    if (i * size != rel || (*w & bit) || (guard && !guard_ok(h, p, size))) {
        return 0;
    }
    const uint32_t old = *w;
    *w = old | bit;
    if (!old) {
        const uint32_t s = *sum;
        *sum = s | TOP(i >> 5);
        if (!s) {
            h->class_mask |= TOP((uint32_t)(pool - h->pools));
        }
    }
    h->in_use -= size;
    return 1;
}

#endif /* TM_ALLOC_POOL_H */
