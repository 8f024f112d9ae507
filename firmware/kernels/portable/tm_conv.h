/* CONV_2D and DEPTHWISE_CONV_2D, int8 NHWC, per-channel requantization (TFLite's reference
 * arithmetic, bit for bit).
 *
 * The input zero point is folded into the bias at codegen. That is only exact where every tap
 * lies inside the image: TFLite skips taps outside it, which is the same as reading the zero
 * point there, so the kernels make padded taps read the zero point (conv: the gathered window
 * holds it; depthwise: a padded tap reads a row of zero points). */
#ifndef TM_CONV_H
#define TM_CONV_H

#include <stdint.h>

/* Conv dot products run in whole chunks of this many products (constant-length loops, which
 * compilers vectorize or unroll): the gathered window is padded with zeros up to a multiple of
 * it, and a filter's last chunk reads on into the next filter (or, for the last one, into
 * padding codegen appends to the weights), where it meets those zeros. tinymem/ops/conv.py sizes
 * the window and the weight padding for 16; a port may define a smaller power of two (less
 * padding to multiply through on a scalar core: 4 saves ~6% of MobileNetV2's instructions on a
 * Cortex-M3), never a larger one. */
#ifndef TM_CONV_DOT_CHUNK
#define TM_CONV_DOT_CHUNK 16
#endif

/* Output pixels a conv pass computes together (raster order, across rows and batches): their
 * windows are gathered, every group's, before any of their outputs is written.
 * tinymem/ops/conv.py derives the overlap rule and the scratch size from it: keep the two equal. */
#define TM_CONV_PIXELS 2

/* Output channels a depthwise kernel accumulates at once (int32 accumulators on the stack). A
 * partial last block still reads whole blocks: of weights (codegen pads them) and of the input
 * where that stays inside it. tinymem/ops/conv.py derives the overlap rule and the weight padding
 * from it: keep the two equal. */
#define TM_DEPTHWISE_BLOCK 16

typedef struct {
    int32_t batches;
    int32_t in_h, in_w, in_c;
    int32_t out_h, out_w, out_c;
    int32_t k_h, k_w;
    int32_t stride_h, stride_w;
    int32_t dil_h, dil_w;
    int32_t pad_top, pad_left; /* TFLite's SAME padding puts an odd extra pad at bottom/right */
} tm_conv_geometry;

typedef struct {
    int32_t input_zp;      /* what a padded tap reads once the zero point is folded */
    int32_t output_offset; /* output zero point */
    int32_t act_min, act_max;
    const int32_t *bias;   /* [out_c]: bias - input_zp * sum(filter of that channel) */
    const int32_t *multiplier, *shift; /* [out_c] */
} tm_conv_quant;

typedef struct {
    tm_conv_geometry geo;
    tm_conv_quant q;
    int32_t groups;        /* in_c / filter_c; out_c / groups filters per group */
    const int8_t *weights; /* [out_c][k_h][k_w][filter_c], zero point 0, then padding (above) */
} tm_conv_params;

typedef struct {
    tm_conv_geometry geo;
    tm_conv_quant q;
    int32_t depth_mult;    /* out_c / in_c; output channel c reads input channel c / depth_mult */
    const int8_t *weights; /* [k_h][k_w][out_c], zero point 0, then padding (above) */
} tm_depthwise_conv_params;

/* Taps [*lo, *hi) of a filter axis whose input coordinate origin + k * dil lies in [0, size):
 * which taps of an output pixel lie inside the image. At most k steps, no division. Shared by the
 * portable and the DSP conv kernels. */
static inline void tm_conv_tap_range(int32_t origin, int32_t dil, int32_t k, int32_t size, int32_t *lo,
                                     int32_t *hi)
{
    int32_t a = 0, b = k;
    while (a < k && origin + a * dil < 0) {
        ++a;
    }
    while (b > a && origin + (b - 1) * dil >= size) {
        --b;
    }
    *lo = a;
    *hi = b;
}

/* TM_CONV_PIXELS output pixels at a time: every group's window of each is gathered into
 * `scratch`, widened to int16 and zero-padded to whole chunks (2 * TM_CONV_PIXELS * groups *
 * round_up(k_h * k_w * filter_c, TM_CONV_DOT_CHUNK) + 1 bytes; padded taps hold the input zero
 * point), before any of their outputs is written; then a few filters per pass over the windows. */
void tm_conv_s8(const tm_conv_params *p, const int8_t *input, int8_t *output, int8_t *scratch);

/* Pixel by pixel, TM_DEPTHWISE_BLOCK output channels at a time: a block is written after all of
 * its reads, and the next block reads nothing below its own first input channel. */
void tm_depthwise_conv_s8(const tm_depthwise_conv_params *p, const int8_t *input, int8_t *output);

#endif /* TM_CONV_H */
