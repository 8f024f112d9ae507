/* libFuzzer target over tm_alloc op sequences (clang -fsanitize=fuzzer,address,undefined).
 * Each 4 input bytes are one op: kind, slot, size (16 bits). Besides the API's own calls it
 * makes bad ones (double and interior frees, a foreign pointer), which must be reported, change
 * nothing and crash nothing. After every op the invariant checker runs and every live block's
 * bytes are checked. Built with -DALLOC_FUZZ_STANDALONE it runs seeded random inputs instead
 * (for compilers without libFuzzer). */
#include <stdint.h>
#include <string.h>

#include "alloc_test.h"

#define SLOTS 32
static uint8_t heap[24576] __attribute__((aligned(64)));
static uint64_t meta[512];
static const tm_alloc_class_t classes[] = {{8, 8}, {16, 12}, {32, 8}, {64, 4}, {128, 2}};
static struct { uint8_t *p; size_t n; uint8_t tag; } live[SLOTS];

static void fill(int s, uint8_t *p, size_t n)
{
    live[s].p = p;
    live[s].n = p ? n : 0;
    live[s].tag = (uint8_t)(s * 29 + (int)n);
    if (p) {
        memset(p, live[s].tag, n);
    }
}

static int intact(int s)
{
    for (size_t k = 0; k < live[s].n; ++k) {
        if (live[s].p[k] != live[s].tag) {
            return 0;
        }
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const tm_alloc_config_t cfg = {classes, 5, data && size && (data[0] & 1) ? 8u : 16u, size > 1 && (data[1] & 1)};
    tm_heap_t *h = tm_heap_init(&cfg, heap, sizeof heap, meta, sizeof meta);
    if (!h) {
        abort();
    }
    tm_heap_set_handler(h, record_error);
    memset(live, 0, sizeof live);
    for (size_t at = 2; at + 4 <= size; at += 4) {
        const int s = data[at + 1] % SLOTS;
        const size_t n = (size_t)(data[at + 2] | data[at + 3] << 8) % 3000u;
        take_error();
        switch (data[at] % 8) {
        case 0: if (!live[s].p) fill(s, tm_heap_malloc(h, n), n); break;
        case 1: if (!live[s].p) fill(s, tm_heap_calloc(h, 1 + n % 7, n / 7), n / 7 * (1 + n % 7)); break;
        case 2: if (!live[s].p) fill(s, tm_heap_memalign(h, (size_t)8 << (n % 7), n), n); break;
        case 3:
            if (live[s].p) {
                if (!intact(s)) abort();
                uint8_t *q = tm_heap_realloc(h, live[s].p, n);
                if (q || !n) {
                    const size_t keep = n < live[s].n ? n : live[s].n;
                    for (size_t k = 0; k < keep; ++k) {
                        if (q[k] != live[s].tag) abort();
                    }
                    fill(s, q, n);
                }
            }
            break;
        case 4: case 5:
            if (live[s].p) {
                if (!intact(s)) abort();
                tm_heap_free(h, live[s].p);
                if (take_error()) abort();
                uint8_t *gone = live[s].p;
                fill(s, NULL, 0);
                if (data[at] & 8) { /* free it again: reported as such, nothing changes */
                    tm_heap_free(h, gone);
                    if (take_error() != TM_ALLOC_ERR_DOUBLE_FREE) abort();
                }
            }
            break;
        case 6: /* an interior or foreign pointer */
            if (live[s].p && live[s].n > 8) {
                tm_heap_free(h, live[s].p + 1 + n % (live[s].n - 1));
                if (take_error() != TM_ALLOC_ERR_INVALID_FREE) abort();
            } else {
                tm_heap_free(h, meta);
                if (take_error() != TM_ALLOC_ERR_INVALID_FREE) abort();
            }
            break;
        default: { /* usable size covers the request */
            if (live[s].p && tm_heap_usable_size(h, live[s].p) < live[s].n) abort();
            break;
        }
        }
        if (tm_heap_check(h) != TM_ALLOC_OK) abort();
    }
    for (int s = 0; s < SLOTS; ++s) {
        if (live[s].p && !intact(s)) abort();
        tm_heap_free(h, live[s].p);
    }
    tm_alloc_stats_t st;
    tm_heap_stats(h, &st);
    if (st.live_blocks || st.in_use_bytes || tm_heap_check(h) != TM_ALLOC_OK) abort();
    return 0;
}

#ifdef ALLOC_FUZZ_STANDALONE
int main(int argc, char **argv)
{
    unsigned long runs = argc > 1 ? strtoul(argv[1], NULL, 0) : 2000, state = 88172645463325252ul;
    static uint8_t input[4096];
    for (unsigned long r = 0; r < runs; ++r) {
        state ^= state << 13, state ^= state >> 7, state ^= state << 17;
        const size_t n = 2 + (state >> 20) % (sizeof input - 2);
        for (size_t k = 0; k < n; ++k) {
            state ^= state << 13, state ^= state >> 7, state ^= state << 17;
            input[k] = (uint8_t)(state >> 32);
        }
        LLVMFuzzerTestOneInput(input, n);
    }
    printf("ok %lu inputs\n", runs);
    return 0;
}
#endif
