/* tm_alloc: a hardened heap allocator for microcontrollers, configured from the application's
 * allocation profile (`tinymem alloc-config` writes tinymem_alloc_config.h).
 *
 * All metadata lives out of band, in a region of its own (as in SJMalloc): the heap holds user
 * bytes only, so an overflow or a use-after-free write in the application cannot corrupt the
 * allocator. Small requests come from segregated size-class pools found with count-leading-zeros
 * on bitmaps (O(1)); larger ones from an address-ordered first-fit region described by bitmaps
 * of its runs, searched through each bitmap word's longest hole and rows of hole-size bins
 * (bounded by the words of the request's own bin).
 * Double frees, frees of pointers it never returned and (with canaries) overflows past a
 * block's end are reported to a handler; tm_heap_check() verifies every invariant.
 *
 * Two APIs: tm_heap_*() on a heap you place yourself (tests, the replay tool), and the drop-in
 * tm_malloc() family on the default heap sized by tinymem_alloc_config.h. Every call holds
 * TM_ALLOC_LOCK() (none by default; see tm_alloc_impl.h for a mutex or an interrupt mask). */
#ifndef TM_ALLOC_H
#define TM_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#define TM_ALLOC_MAX_CLASSES 32u
#define TM_ALLOC_MAX_SLOTS 1024u /* per class: a summary word over 32 words of slot bits */
#define TM_ALLOC_ALIGN 8u         /* what malloc() guarantees */

typedef struct {
    uint32_t size;  /* slot bytes: a multiple of 8, ascending across classes */
    uint32_t count; /* slots in the pool */
} tm_alloc_class_t;

typedef struct {
    const tm_alloc_class_t *classes;
    uint32_t n_classes;
    uint32_t granule;  /* large-block granule: a power of two, 8..4096; the heap is aligned to it */
    uint32_t canaries; /* 1: each block's last 4 bytes hold a guard word checked at free */
} tm_alloc_config_t;

enum {
    TM_ALLOC_OK = 0,
    TM_ALLOC_ERR_DOUBLE_FREE = 1,  /* the block is not in use */
    TM_ALLOC_ERR_INVALID_FREE = 2, /* not a pointer this heap returned */
    TM_ALLOC_ERR_OVERFLOW = 3,     /* the guard word past the block's end was overwritten */
    TM_ALLOC_ERR_CORRUPT = 4       /* tm_heap_check(): an invariant does not hold */
};

/* Called on a detected error with the pointer at fault; if it returns, the operation is
 * abandoned (a bad free frees nothing) and the heap stays consistent. */
typedef void (*tm_alloc_handler_t)(int error, const void *ptr);

typedef struct tm_heap tm_heap_t; /* lives at the start of the metadata region */

typedef struct {
    uint32_t in_use_bytes;      /* capacity of the live blocks */
    uint32_t peak_in_use_bytes;
    uint32_t live_blocks;
    uint32_t failed_allocs;
    uint32_t free_bytes;        /* free pool slots + free large granules */
    uint32_t largest_free_bytes;
    uint32_t fragmentation_permille; /* large region: 1000 * (1 - largest free run / free bytes) */
    uint32_t heap_bytes;        /* user-data region: pools + large region */
    uint32_t pool_bytes;
    uint32_t meta_bytes;
    uint32_t owned_bytes;       /* heap needed to serve what happened so far, metadata included */
    uint32_t large_peak_bytes;  /* the most the large region ever held at once */
    uint32_t large_high_water_bytes; /* its highest byte ever used, from its start */
    uint32_t pool_spills;       /* requests a class fits, served by the large region: every fitting pool was full */
    uint32_t large_max_block_bytes;
} tm_alloc_stats_t;

/* Metadata bytes a heap of heap_bytes with this config needs (0: the config is invalid). */
size_t tm_alloc_meta_bytes(const tm_alloc_config_t *cfg, size_t heap_bytes);
/* NULL if the config is invalid, heap is not aligned to the granule, or meta is too small. */
tm_heap_t *tm_heap_init(const tm_alloc_config_t *cfg, void *heap, size_t heap_bytes, void *meta, size_t meta_bytes);
void tm_heap_set_handler(tm_heap_t *h, tm_alloc_handler_t handler);

void *tm_heap_malloc(tm_heap_t *h, size_t n);
void tm_heap_free(tm_heap_t *h, void *p);
void *tm_heap_calloc(tm_heap_t *h, size_t n, size_t size);
void *tm_heap_realloc(tm_heap_t *h, void *p, size_t n);
void *tm_heap_memalign(tm_heap_t *h, size_t align, size_t n); /* align: a power of two */
size_t tm_heap_usable_size(tm_heap_t *h, const void *p);

int tm_heap_check(tm_heap_t *h); /* TM_ALLOC_OK, or the first violated invariant's error */
void tm_heap_stats(tm_heap_t *h, tm_alloc_stats_t *s);
uint32_t tm_heap_owned(const tm_heap_t *h); /* stats.owned_bytes, O(1) */

/* The default heap (tinymem_alloc_config.h, or tm_alloc_default_config.h without one). */
void *tm_malloc(size_t n);
void tm_free(void *p);
void *tm_calloc(size_t n, size_t size);
void *tm_realloc(void *p, size_t n);
void *tm_memalign(size_t align, size_t n);
void *tm_aligned_alloc(size_t align, size_t n);
tm_heap_t *tm_alloc_default_heap(void);
void tm_alloc_set_handler(tm_alloc_handler_t handler);

/* Weak default handler: on a hosted build it prints and aborts; on a board it halts. The board
 * runtime replaces it with one that reports over the serial link, then halts. */
void tm_alloc_on_error(int error, const void *ptr);
/* Trace mode (TM_ALLOC_TRACE 1 in the config): every call on the default heap is passed here
 * (op 'a'lloc, 'f'ree, 'r'ealloc, 'c'alloc, 'm'emalign; the pointer in, the size, the pointer
 * out). The weak default does nothing; the board runtime streams it over the serial link. */
void tm_alloc_trace(char op, const void *in, size_t size, size_t align, const void *out);

#endif /* TM_ALLOC_H */
