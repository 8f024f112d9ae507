/* Replays an allocation trace on an allocator and measures it: the engine behind
 * `tinymem alloc-replay`, shared by the host driver and the board firmware (both generated from
 * codegen/templates/alloc/). The trace arrives as packed ops; block IDs are already slots. */
#ifndef TM_REPLAY_H
#define TM_REPLAY_H

#include <stddef.h>
#include <stdint.h>

enum { TM_TRACE_ALLOC, TM_TRACE_FREE, TM_TRACE_REALLOC, TM_TRACE_CALLOC, TM_TRACE_MEMALIGN, TM_TRACE_KINDS };

typedef struct { /* 16 bytes, little-endian: tinymem/alloc/trace.py packs the same */
    uint8_t op;
    uint8_t pad[3];
    uint32_t slot; /* the block, numbered densely: a freed block's slot is reused */
    uint32_t size;
    uint32_t align; /* memalign only */
} tm_trace_op_t;

typedef struct {
    void *(*malloc_)(size_t n);
    void (*free_)(void *p);
    void *(*realloc_)(void *p, size_t n);
    void *(*calloc_)(size_t n, size_t size);
    void *(*memalign_)(size_t align, size_t n);
    uint32_t (*owned)(void); /* heap bytes the allocator owns now, metadata included */
} tm_replay_allocator_t;

typedef uint64_t (*tm_replay_clock_t)(void);

typedef struct {
    uint32_t ops, failed, corrupted; /* corrupted: a block's bytes changed under it (a bug) */
    uint32_t peak_owned;
    uint32_t count[TM_TRACE_KINDS];
    uint64_t total[TM_TRACE_KINDS]; /* clock ticks, call overhead removed */
    uint32_t worst[TM_TRACE_KINDS];
    uint32_t worst_op; /* index of the slowest operation */
} tm_replay_result_t;

enum { TM_REPLAY_TOUCH = 1, TM_REPLAY_OWNED = 2 };

/* Ticks the replay's own code between its two clock reads takes (the op dispatch, a call to an
 * empty function), the smallest of many: taken off every op, so counts are the allocator's. */
uint32_t tm_replay_clock_overhead(tm_replay_clock_t clock);

/* Replays ops[0..n). slots and sizes hold n_slots entries. clock NULL: untimed. flags:
 * TOUCH writes each block's first and last byte and checks them at free (outside the timing),
 * OWNED tracks the allocator's peak. dt, if not NULL, receives every op's ticks. What is still
 * live at the end is freed, untimed. */
void tm_replay_run(const tm_replay_allocator_t *a, const tm_trace_op_t *ops, uint32_t n, void **slots,
                   uint32_t *sizes, uint32_t n_slots, tm_replay_clock_t clock, uint32_t overhead, unsigned flags,
                   uint32_t *dt, tm_replay_result_t *r);

#endif /* TM_REPLAY_H */
