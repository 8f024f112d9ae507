/* tm_alloc's lock for a hosted, threaded build: one pthread mutex around every call (what an RTOS
 * port does with its own mutex). Force-included (-include) into every file of alloc_threads'
 * build, so tm_alloc.c sees these before its own no-op defaults. */
#ifndef ALLOC_LOCK_PTHREAD_H
#define ALLOC_LOCK_PTHREAD_H

#include <pthread.h>

extern pthread_mutex_t alloc_test_mutex; /* defined in alloc_threads.c */
#define TM_ALLOC_LOCK() pthread_mutex_lock(&alloc_test_mutex)
#define TM_ALLOC_UNLOCK() pthread_mutex_unlock(&alloc_test_mutex)

#endif
