/* Shared by the tm_alloc C tests: a CHECK that names the line, and a recording error handler. */
#ifndef ALLOC_TEST_H
#define ALLOC_TEST_H

#include <stdio.h>
#include <stdlib.h>

#include "tm_alloc.h"

static int failures __attribute__((unused));
#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            ++failures;                                                       \
        }                                                                     \
    } while (0)

/* Errors the allocator reported since the last take_error(). */
static int last_error, error_count;
static const void *last_error_ptr;
static void record_error(int error, const void *ptr)
{
    last_error = error;
    last_error_ptr = ptr;
    ++error_count;
}
__attribute__((unused)) static int take_error(void)
{
    const int e = last_error;
    last_error = 0;
    return e;
}

#endif
