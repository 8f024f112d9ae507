#include "tm_activation.h"

#include "tm_quant.h"

void tm_requant_s8(const tm_requant_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t i = 0; i < p->size; ++i) {
        const int32_t x = (int32_t)input[i] - p->input_offset;
        /* LiteRT's activation kernels requantize with gemmlowp's double rounding (measured: the
         * single-rounding form misses ties), unlike its FULLY_CONNECTED. */
        int32_t y;
        if (x >= 0) {
            y = tm_requantize_double_rounding(x, p->mult_pos, p->shift_pos);
        } else if (p->mult_neg >= 0) {
            y = tm_requantize_double_rounding(x, p->mult_neg, p->shift_neg);
        } else { /* negative alpha: negate after rounding, as LiteRT does (rounding is not odd) */
            y = (int32_t)(0u - (uint32_t)tm_requantize_double_rounding(x, -p->mult_neg, p->shift_neg));
        }
        /* TFLite adds the zero point in (wrapping) int32; only absurd scale ratios get near it. */
        const int32_t z = (int32_t)((uint32_t)y + (uint32_t)p->output_offset);
        output[i] = tm_clamp_s8(z, p->act_min, p->act_max);
    }
}

void tm_lut_s8(const tm_lut_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t i = 0; i < p->size; ++i) {
        output[i] = p->table[(int32_t)input[i] + 128];
    }
}

/* ---- gemmlowp fixed point on raw int32 values (Qm.n: m integer bits, 31 - m fraction bits) ---- */

#define FP_MUL tm_sat_round_doubling_high_mul /* Qa * Qb -> Q(a+b) */

/* x * 2^exponent (exponent > 0), saturating: a rescale to fewer integer bits. */
static int32_t fp_sat_shift_left(int32_t x, int exponent)
{
    const int32_t limit = (int32_t)((UINT32_C(1) << (31 - exponent)) - 1u);
    if (x > limit) {
        return INT32_MAX;
    }
    if (x < -limit) {
        return INT32_MIN;
    }
    return (int32_t)((uint32_t)x << exponent);
}

/* exp(a) for a in [-1/4, 0), Q0.31 -> Q0.31: Taylor series around -1/8. */
static int32_t fp_exp_quarter(int32_t a)
{
    const int32_t exp_minus_one_eighth = 1895147668;
    const int32_t one_third = 715827883;
    const int32_t x = a + (INT32_C(1) << 28); /* a + 1/8 */
    const int32_t x2 = FP_MUL(x, x);
    const int32_t x3 = FP_MUL(x2, x);
    const int32_t x4_over_4 = tm_rounding_divide_by_pot(FP_MUL(x2, x2), 2);
    const int32_t tail = tm_rounding_divide_by_pot(FP_MUL(x4_over_4 + x3, one_third) + x2, 1);
    return exp_minus_one_eighth + FP_MUL(exp_minus_one_eighth, x + tail);
}

/* exp(a) for a <= 0, Q5.26 -> Q0.31: exp of (a mod 1/4) times exp(-2^k) for each bit k of the rest. */
static int32_t fp_exp_negative_q5(int32_t a)
{
    static const int32_t exp_minus_pow2[7] = { /* exp(-1/4), exp(-1/2), ..., exp(-16) in Q0.31 */
        1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242,
    };
    const int32_t quarter = INT32_C(1) << 24;
    const int32_t a_mod_quarter_minus_quarter = (a & (quarter - 1)) - quarter;
    const int32_t remainder = a_mod_quarter_minus_quarter - a;
    int32_t result = fp_exp_quarter(fp_sat_shift_left(a_mod_quarter_minus_quarter, 5));
    for (int k = 0; k < 7; ++k) {
        if (remainder & (INT32_C(1) << (24 + k))) {
            result = FP_MUL(result, exp_minus_pow2[k]);
        }
    }
    return a == 0 ? INT32_MAX : result;
}

/* 1 / (1 + a) for a in [0, 1), Q0.31 -> Q0.31: three Newton-Raphson steps in Q2.29. */
static int32_t fp_one_over_one_plus_x(int32_t a)
{
    const int64_t sum = (int64_t)a + INT32_MAX;
    const int32_t half_denominator = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
    const int32_t c48_over_17 = 1515870810, c_neg32_over_17 = -1010580540;
    int32_t x = c48_over_17 + FP_MUL(half_denominator, c_neg32_over_17);
    for (int i = 0; i < 3; ++i) {
        const int32_t one_minus_hd_x = (INT32_C(1) << 29) - FP_MUL(half_denominator, x);
        x += fp_sat_shift_left(FP_MUL(x, one_minus_hd_x), 2);
    }
    return fp_sat_shift_left(x, 1); /* x / 2, from Q1.30 to Q0.31 */
}

static int count_leading_zeros(uint32_t v)
{
    int n = 0;
    while (n < 32 && !(v & UINT32_C(0x80000000))) {
        v <<= 1;
        ++n;
    }
    return n;
}

/* exp(beta * input_scale * diff) in Q0.31 for diff = x - row max >= diff_min. */
static int32_t softmax_exp(const tm_softmax_params *p, int32_t diff)
{
    /* MultiplyByQuantizedMultiplierGreaterThanOne of the double-rounding build: shift >= 1 and
     * |diff| bounded by diff_min, so an exact left shift and one rounding high multiply. */
    return fp_exp_negative_q5(tm_requantize_double_rounding(diff, p->input_multiplier, p->input_left_shift));
}

void tm_softmax_s8(const tm_softmax_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t r = 0; r < p->rows; ++r) {
        const int8_t *x = input + r * p->depth;
        int8_t *y = output + r * p->depth;
        int32_t max = -128;
        for (int32_t c = 0; c < p->depth; ++c) {
            max = x[c] > max ? x[c] : max;
        }
        int32_t sum = 0; /* Q12.19; saturates where TFLite's would wrap (rows of >= 4096 maxima) */
        for (int32_t c = 0; c < p->depth; ++c) {
            const int32_t diff = (int32_t)x[c] - max;
            if (diff >= p->diff_min) {
                const int32_t e = tm_rounding_divide_by_pot(softmax_exp(p, diff), 12);
                sum = sum > INT32_MAX - e ? INT32_MAX : sum + e;
            }
        }
        /* sum >= 1.0 (the maximum contributes exp(0)), so its reciprocal is 2^-n * 1/(1 + frac) */
        const int headroom = count_leading_zeros((uint32_t)sum);
        const int32_t frac = (int32_t)(((uint32_t)sum << headroom) - UINT32_C(0x80000000));
        const int32_t scale = fp_one_over_one_plus_x(frac);
        const int exponent = (12 - headroom) + 31 - 8;
        /* exponent > 31 means sum >= 512: every output rounds to 0 (TFLite aborts on it instead). */
        for (int32_t c = 0; c < p->depth; ++c) {
            const int32_t diff = (int32_t)x[c] - max;
            int32_t q = -128;
            if (diff >= p->diff_min && exponent <= 31) {
                q = tm_rounding_divide_by_pot(FP_MUL(scale, softmax_exp(p, diff)), exponent) - 128;
            }
            y[c] = tm_clamp_s8(q, -128, 127);
        }
    }
}
