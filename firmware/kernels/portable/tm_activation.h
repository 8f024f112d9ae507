/* Activations and int8 -> int8 requantization, bit-exact with TFLite's reference kernels.
 *
 * Every kernel here reads input element i before it writes output element i and never reads an
 * element again once its output is written (softmax reads a whole row twice before writing any of
 * it), so the output may sit exactly over the input (tinymem/ops/activation.py, `overlaps`). */
#ifndef TM_ACTIVATION_H
#define TM_ACTIVATION_H

#include <stdint.h>

/* out = clamp(output_offset + requantize(in - input_offset)), with the multiplier picked by the
 * sign of (in - input_offset): RELU, RELU6, RELU_N1_TO_1, RELU_0_TO_1, LEAKY_RELU, QUANTIZE. */
typedef struct {
    int32_t size;
    int32_t input_offset;  /* input zero point */
    int32_t output_offset; /* output zero point */
    int32_t mult_pos, shift_pos; /* for in - input_offset >= 0 */
    int32_t mult_neg, shift_neg; /* for in - input_offset < 0 (LEAKY_RELU's alpha); a negative
                                  * mult_neg means: use -mult_neg, then negate the result */
    int32_t act_min, act_max;
} tm_requant_params;

void tm_requant_s8(const tm_requant_params *p, const int8_t *input, int8_t *output);

/* out = table[in + 128]: LOGISTIC, TANH (tables LiteRT itself builds in float) and HARD_SWISH,
 * all tabulated at codegen time over the 256 int8 inputs. */
typedef struct {
    int32_t size;
    const int8_t *table; /* [256] */
} tm_lut_params;

void tm_lut_s8(const tm_lut_params *p, const int8_t *input, int8_t *output);

/* Softmax over the last axis, gemmlowp fixed point (TFLite's reference int8 softmax). The output
 * is quantized with scale 1/256 and zero point -128. */
typedef struct {
    int32_t rows, depth;
    int32_t input_multiplier, input_left_shift; /* beta * input_scale, as a Q5.26 rescale */
    int32_t diff_min; /* (x - row max) below this contributes exp() = 0 */
} tm_softmax_params;

void tm_softmax_s8(const tm_softmax_params *p, const int8_t *input, int8_t *output);

#endif
