/* tm_alloc from several threads at once, on the default heap (initialised by whichever thread
 * calls first) and on a heap of their own: each thread allocates, fills, verifies, reallocates and
 * frees random blocks; at the end every heap must check clean and be empty.
 * usage: alloc_threads THREADS OPS_PER_THREAD
 * Built with TM_ALLOC_LOCK (alloc_lock_pthread.h) and ThreadSanitizer it must run clean; built
 * without the lock, ThreadSanitizer reports the races (the test expects both). */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "alloc_test.h"

#define MAX_THREADS 8
#define SLOTS 24
pthread_mutex_t alloc_test_mutex = PTHREAD_MUTEX_INITIALIZER;
static uint8_t heap[32768] __attribute__((aligned(64)));
static uint64_t meta[512];
static const tm_alloc_class_t classes[] = {{16, 48}, {32, 32}, {64, 16}};
static tm_heap_t *shared;
static unsigned long ops;
static int bad[MAX_THREADS];

static uint32_t rnd(uint64_t *s, uint32_t n) /* xorshift64*: each thread its own stream */
{
    *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
    return (uint32_t)((*s * 2685821657736338717ull) >> 33) % n;
}

static int intact(const uint8_t *p, size_t n, uint8_t tag)
{
    for (size_t k = 0; k < n; ++k) {
        if (p[k] != tag) {
            return 0;
        }
    }
    return 1;
}

static void *worker(void *arg)
{
    const int id = (int)(intptr_t)arg;
    uint64_t s = 0x9E3779B97F4A7C15ull * (uint64_t)(id + 1);
    struct { uint8_t *p; size_t n; int own; } live[SLOTS] = {{0}};
    for (unsigned long op = 0; op < ops; ++op) {
        const int i = (int)rnd(&s, SLOTS), own = (int)rnd(&s, 2); /* own: the shared explicit heap */
        const uint8_t tag = (uint8_t)(id * 37 + i);
        if (live[i].p) {
            bad[id] |= !intact(live[i].p, live[i].n, tag);
            if (rnd(&s, 4) == 0) { /* grow or shrink, contents kept */
                const size_t n = 1 + rnd(&s, 700);
                uint8_t *q = live[i].own ? tm_heap_realloc(shared, live[i].p, n) : tm_realloc(live[i].p, n);
                if (q) {
                    bad[id] |= !intact(q, n < live[i].n ? n : live[i].n, tag);
                    memset(q, tag, n);
                    live[i].p = q, live[i].n = n;
                }
            } else {
                live[i].own ? tm_heap_free(shared, live[i].p) : tm_free(live[i].p);
                live[i].p = NULL;
            }
        } else {
            const size_t n = rnd(&s, 8) ? 1 + rnd(&s, 80) : 100 + rnd(&s, 900);
            live[i].p = own ? tm_heap_malloc(shared, n) : tm_calloc(1, n);
            live[i].n = live[i].p ? n : 0;
            live[i].own = own;
            if (live[i].p) {
                bad[id] |= !own && !intact(live[i].p, n, 0); /* calloc: zeroed */
                memset(live[i].p, tag, n);
            }
        }
        if (op % 512 == 0) {
            bad[id] |= tm_heap_check(shared) != TM_ALLOC_OK || tm_heap_check(tm_alloc_default_heap()) != TM_ALLOC_OK;
        }
    }
    for (int i = 0; i < SLOTS; ++i) {
        if (live[i].p) {
            bad[id] |= !intact(live[i].p, live[i].n, (uint8_t)(id * 37 + i));
            live[i].own ? tm_heap_free(shared, live[i].p) : tm_free(live[i].p);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const int threads = argc > 1 ? atoi(argv[1]) : 4;
    ops = argc > 2 ? strtoul(argv[2], NULL, 0) : 20000;
    const tm_alloc_config_t cfg = {classes, 3, 16, 1};
    shared = tm_heap_init(&cfg, heap, sizeof heap, meta, sizeof meta);
    CHECK(shared != NULL && threads >= 2 && threads <= MAX_THREADS);
    if (!shared || threads < 2 || threads > MAX_THREADS) {
        return 1;
    }
    tm_heap_set_handler(shared, record_error);
    pthread_t t[MAX_THREADS];
    for (int i = 0; i < threads; ++i) {
        CHECK(pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i) == 0);
    }
    for (int i = 0; i < threads; ++i) {
        pthread_join(t[i], NULL);
        CHECK(!bad[i]);
    }
    tm_alloc_stats_t a, b;
    tm_heap_stats(shared, &a);
    tm_heap_stats(tm_alloc_default_heap(), &b);
    CHECK(tm_heap_check(shared) == TM_ALLOC_OK && tm_heap_check(tm_alloc_default_heap()) == TM_ALLOC_OK);
    CHECK(a.live_blocks == 0 && a.in_use_bytes == 0 && b.live_blocks == 0 && b.in_use_bytes == 0);
    CHECK(a.peak_in_use_bytes > 0 && b.peak_in_use_bytes > 0 && error_count == 0);
    printf("threads %d ops %lu peak %u %u\n", threads, ops, (unsigned)a.peak_in_use_bytes, (unsigned)b.peak_in_use_bytes);
    return failures ? 1 : 0;
}
