/* ADD and MUL, int8, with TFLite's reference arithmetic and NumPy-style broadcasting. */
#ifndef TM_ELEMENTWISE_H
#define TM_ELEMENTWISE_H

#include <stdint.h>

#include "tm_shape.h"

/* The output shape and each operand's element strides over it (0 where that operand is
 * broadcast), collapsed at codegen to as few dimensions as the pattern allows. */
typedef struct {
    int32_t dims; /* 1..TM_MAX_DIMS */
    int32_t shape[TM_MAX_DIMS];
    int32_t a_stride[TM_MAX_DIMS];
    int32_t b_stride[TM_MAX_DIMS];
} tm_broadcast;

typedef struct {
    tm_broadcast bc;
    int32_t a_offset, b_offset; /* minus the input zero points */
    int32_t left_shift;         /* 20 for int8: headroom before rescaling both inputs */
    int32_t a_multiplier, a_shift, b_multiplier, b_shift;
    int32_t output_multiplier, output_shift, output_offset;
    int32_t act_min, act_max;
    const int8_t *b_const; /* the constant operand (the *_const entry point), else NULL */
} tm_add_params;

typedef struct {
    tm_broadcast bc;
    int32_t a_offset, b_offset; /* minus the input zero points */
    int32_t output_multiplier, output_shift, output_offset;
    int32_t act_min, act_max;
    const int8_t *b_const;
} tm_mul_params;

/* One innermost row: n outputs, operands stepping by a_step / b_step (0 when broadcast). */
typedef void (*tm_row_fn)(const void *p, const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step,
                          int8_t *out, int32_t n);

/* Every row of the broadcast box bc, in order, through `row` (p: the op's params, passed on);
 * shared with the DSP kernels of the same ops (firmware/kernels/armv7em). */
void tm_broadcast_rows(const tm_broadcast *bc, const void *p, const int8_t *a, const int8_t *b, int8_t *out,
                       tm_row_fn row);

/* Write output elements in order, each right after reading its two operands: the planner's
 * raster rule (tinymem/ops/elementwise.py) derives the allowed overlaps from that.
 * The *_const forms take operand b from p->b_const (both ops are symmetric in a and b, so
 * codegen always makes the constant operand b). */
void tm_add_s8(const tm_add_params *p, const int8_t *a, const int8_t *b, int8_t *output);
void tm_add_const_s8(const tm_add_params *p, const int8_t *a, int8_t *output);
void tm_mul_s8(const tm_mul_params *p, const int8_t *a, const int8_t *b, int8_t *output);
void tm_mul_const_s8(const tm_mul_params *p, const int8_t *a, int8_t *output);

#endif /* TM_ELEMENTWISE_H */
