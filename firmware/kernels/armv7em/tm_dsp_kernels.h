/* int8 kernels for Armv7E-M (Cortex-M4/M7) built on the DSP instructions of tm_dsp.h, bit for bit
 * the portable kernels (firmware/kernels/portable) and LiteRT BUILTIN_REF. Codegen picks one per
 * layer where its conditions hold (tinymem/ops/armv7em.py) and the portable kernel elsewhere;
 * each has the portable kernels' signature: fn(const params *, inputs..., output[, scratch]).
 *
 * Each reads its constants from one stream that codegen lays out in the order the kernel reads
 * it (weights rearranged, per-channel parameters beside them: free at run time, and one pointer
 * for all of it leaves registers for the accumulators). Every kernel here writes an output
 * pixel only after reading all of that pixel's inputs, in the order the portable kernel of the
 * same op does (or finer), so the planner's overlap rules hold for both. */
#ifndef TM_DSP_KERNELS_H
#define TM_DSP_KERNELS_H

#include <stdint.h>

#include "tm_conv.h"
#include "tm_elementwise.h"
#include "tm_pool.h"

/* GEMM stream (conv and fully connected), per group of output channels (two for conv, four for
 * fully connected): their accumulator starts (bias - input_zp * sum(filter)), then per four
 * input elements one int8x4 weight word of each channel (elements zero-padded to a multiple of
 * four), then (multiplier, shift) of each channel; the channels left over alone, the same way.
 * The conv kernels store the shift as -shift - 1 (tm_dsp_requant), the fully connected kernel
 * TFLite's shift. */

typedef struct {
    tm_conv_geometry geo;   /* as in tm_conv_params: the patch stage sets geo.* per patch */
    int32_t input_zp;       /* what padded taps read (the zero point is folded into the bias) */
    int32_t out_round;      /* 1 + 2 * output zero point (see tm_dsp_requant) */
    int32_t act_min, act_max;
    const int32_t *stream;  /* the GEMM stream over [k_h][k_w][in_c] */
} tm_dsp_conv_params;

/* CONV_2D with a 1x1 filter and no groups, any stride: a GEMM over pixel pairs. Each pair is
 * widened into `scratch` (16 * ceil(in_c / 4) + 3 bytes) as int16 pairs (x0, x2), (x1, x3) per
 * four channels, then two output channels x two pixels at a time: four SMLAD per weight word. */
void tm_dsp_conv_1x1_s8(const tm_dsp_conv_params *p, const int8_t *input, int8_t *output, int8_t *scratch);

/* CONV_2D, any filter, stride, dilation and padding, no groups, where in_c is a multiple of 4
 * or the window has at most TM_DSP_STAGE elements (first layers with 1-3 input channels):
 * each pixel pair's window is gathered (padded taps read input_zp) and widened into `scratch`
 * (16 * ceil(k_h * k_w * in_c / 4) + 3 bytes), then the GEMM of the 1x1 kernel over them.
 * Windows of other in_c are staged on the stack first, TM_DSP_STAGE bytes. */
#define TM_DSP_STAGE 64
void tm_dsp_conv_s8(const tm_dsp_conv_params *p, const int8_t *input, int8_t *output, int8_t *scratch);

typedef struct {
    tm_conv_geometry geo;   /* as in tm_conv_params: the patch stage sets geo.* per patch */
    int32_t input_zp, out_round, act_min, act_max; /* as in tm_dsp_conv_params */
    const int32_t *quads;   /* per four channels TM_DSP_DW_WORDS words, see below */
} tm_dsp_depthwise_params;

/* Per four channels c..c+3, everything the kernel reads for them, in order: 2 * bias (4 words),
 * (multiplier, right shift) of each channel (8), then per tap of the 3x3 filter the int16 pairs
 * (2 w_c, 2 w_c+2), (2 w_c+1, 2 w_c+3) (18). Doubled weights and bias make the accumulator the
 * 2 * acc tm_dsp_requant2 starts from. */
#define TM_DSP_DW_WORDS 30

/* DEPTHWISE_CONV_2D, 3x3 filter, multiplier 1, no dilation, in_c a multiple of 4, any stride
 * and padding. Pixel by pixel, four channels at a time: one LDR of input per tap, SMLABB/SMLATT
 * on its sign-extended halves. */
void tm_dsp_depthwise_3x3_s8(const tm_dsp_depthwise_params *p, const int8_t *input, int8_t *output);

typedef struct {
    int32_t batches, in_features, out_features;
    int32_t output_offset;
    int32_t act_min, act_max;
    const int32_t *stream;  /* the GEMM stream over [in_features], TFLite's shifts */
} tm_dsp_fully_connected_params;

/* FULLY_CONNECTED: four outputs at a time (a GEMM stream in groups of four), the input row read
 * as int8x4 words; single-rounding requantization, as tm_fully_connected_s8. Row by row, each
 * row written after it is read. */
void tm_dsp_fully_connected_s8(const tm_dsp_fully_connected_params *p, const int8_t *input, int8_t *output);

/* MAX_POOL_2D with channels a multiple of 4 (tm_pool_params, as tm_max_pool_s8): four channels
 * per SSUB8/SEL pair per tap. Per pixel, four channels at a time, each four written after their
 * window is read: within the portable kernel's overlap rule. */
void tm_dsp_max_pool_s8(const tm_pool_params *p, const int8_t *input, int8_t *output);

/* ADD with the portable kernel's parameters (tm_add_params) and broadcasting: each of its three
 * rescales one SMMULR and three ALU instructions (tm_dsp_add.c says why that is exact). Any
 * int8 ADD codegen accepts (its rescales are right shifts, its values small enough). */
void tm_dsp_add_s8(const tm_add_params *p, const int8_t *a, const int8_t *b, int8_t *output);
void tm_dsp_add_const_s8(const tm_add_params *p, const int8_t *a, int8_t *output);

#endif /* TM_DSP_KERNELS_H */
