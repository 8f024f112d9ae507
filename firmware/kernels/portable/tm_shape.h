/* Ops that move int8 bytes without arithmetic (PAD, PADV2, CONCATENATION), and the row-major
 * index walking the broadcast, reduce and pad kernels share. */
#ifndef TM_SHAPE_H
#define TM_SHAPE_H

#include <stdint.h>

/* Most dimensions any kernel walks; codegen collapses shapes to fit (tinymem/ops/shape.py). */
#define TM_MAX_DIMS 6

/* Element offset of multi-index idx under the given strides. */
static inline int32_t tm_index_offset(const int32_t *idx, const int32_t *stride, int32_t dims)
{
    int32_t off = 0;
    for (int32_t d = 0; d < dims; ++d) {
        off += idx[d] * stride[d];
    }
    return off;
}

/* Step idx to the next position in the box `shape`, last dimension fastest. Returns 0 once it
 * wraps back to all zeros, so `do { ... } while (tm_index_next(...))` visits every position
 * exactly once, and a 0-dimensional box exactly once. */
static inline int tm_index_next(int32_t *idx, const int32_t *shape, int32_t dims)
{
    for (int32_t d = dims - 1; d >= 0; --d) {
        if (++idx[d] < shape[d]) {
            return 1;
        }
        idx[d] = 0;
    }
    return 0;
}

typedef struct {
    int32_t dims;                  /* 1..TM_MAX_DIMS (inner unpadded dims merged at codegen) */
    int32_t in_shape[TM_MAX_DIMS];
    int32_t before[TM_MAX_DIMS];   /* padding before / after, per dimension */
    int32_t after[TM_MAX_DIMS];
    int32_t pad_value;             /* PAD: the output zero point; PADV2: its constant */
} tm_pad_params;

typedef struct {
    int32_t inputs;       /* number of inputs */
    int32_t outer;        /* product of the dimensions before the concatenation axis */
    const int32_t *chunk; /* [inputs]: bytes each input contributes per outer step */
} tm_concat_params;

/* Both write the output strictly in order, byte by byte, each byte right after reading its
 * source (if any): tinymem/ops/shape.py derives the allowed input/output overlap from that. */
void tm_pad_s8(const tm_pad_params *p, const int8_t *input, int8_t *output);
void tm_concat_s8(const tm_concat_params *p, const int8_t *const *inputs, int8_t *output);

#endif /* TM_SHAPE_H */
