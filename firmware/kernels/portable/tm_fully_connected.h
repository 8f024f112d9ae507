#ifndef TM_FULLY_CONNECTED_H
#define TM_FULLY_CONNECTED_H

#include <stdint.h>

typedef struct {
    int32_t batches;
    int32_t in_features;
    int32_t out_features;
    int32_t output_offset; /* output zero point */
    int32_t act_min, act_max;
    const int8_t *weights; /* [out_features][in_features], zero point 0 */
    const int32_t *bias;   /* [out_features]: bias - input_zp * sum(weights row), folded at codegen */
    const int32_t *multiplier, *shift; /* [out_features] */
} tm_fully_connected_params;

/* Writes output elements in order, each right after the reads it needs (its input row); the
 * planner's raster rule (tinymem/ops/fc.py) derives the allowed input/output overlap from that. */
void tm_fully_connected_s8(const tm_fully_connected_params *p, const int8_t *input, int8_t *output);

#endif
