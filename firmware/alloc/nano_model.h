/* A model of newlib-nano's malloc (what --specs=nano.specs links on the boards), for replaying
 * traces on the host against the allocator Cortex-M firmware usually gets. Written from its
 * documented policy, on a 32-bit heap image so that sizes match the board's byte for byte. */
#ifndef NANO_MODEL_H
#define NANO_MODEL_H

#include <stddef.h>
#include <stdint.h>

void nano_model_init(uint8_t *arena, uint32_t bytes); /* arena: 8-byte aligned, plays sbrk's memory */
void *nano_model_malloc(size_t n);
void nano_model_free(void *p);
void *nano_model_realloc(void *p, size_t n);
void *nano_model_calloc(size_t n, size_t size);
void *nano_model_memalign(size_t align, size_t n);
uint32_t nano_model_owned(void); /* bytes taken from "sbrk" so far */

#endif
