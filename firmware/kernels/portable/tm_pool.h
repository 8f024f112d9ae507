/* AVERAGE_POOL_2D and MAX_POOL_2D (int8 NHWC, input and output share their quantization), and
 * MEAN (TFLite's fixed-point QuantizedMeanOrSum path). */
#ifndef TM_POOL_H
#define TM_POOL_H

#include <stdint.h>

#include "tm_shape.h"

typedef struct {
    int32_t batches, in_h, in_w, channels;
    int32_t out_h, out_w;
    int32_t filter_h, filter_w;
    int32_t stride_h, stride_w;
    int32_t pad_h, pad_w; /* top/left; window taps outside the image are skipped */
    int32_t act_min, act_max;
} tm_pool_params;

/* Pixel by pixel, channel by channel, like a depthwise conv: output (y, x, c) is written right
 * after reading its window of channel c. tinymem/ops/pool.py derives the overlap rule from it. */
void tm_avg_pool_s8(const tm_pool_params *p, const int8_t *input, int8_t *output);
void tm_max_pool_s8(const tm_pool_params *p, const int8_t *input, int8_t *output);

/* The input seen as a box of kept axes (the output, in order) times a box of reduced axes,
 * both as input element strides, collapsed at codegen. */
typedef struct {
    int32_t out_dims;
    int32_t out_shape[TM_MAX_DIMS], out_stride[TM_MAX_DIMS];
    int32_t red_dims;
    int32_t red_shape[TM_MAX_DIMS], red_stride[TM_MAX_DIMS];
    int32_t sum_offset; /* input zero point * reduced count */
    int32_t multiplier, shift; /* input/output scale with 1/count folded in, as TFLite does */
    int32_t output_offset;
} tm_mean_params;

/* Output elements in order, each after summing its whole reduced box. */
void tm_mean_s8(const tm_mean_params *p, const int8_t *input, int8_t *output);

#endif /* TM_POOL_H */
