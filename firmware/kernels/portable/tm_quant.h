/* TFLite's fixed-point requantization arithmetic, the specification every tinymem kernel follows.
 *
 * Written from the definitions (TFLite's MultiplyByQuantizedMultiplier in its single-rounding
 * form; gemmlowp's SaturatingRoundingDoublingHighMul and RoundingDivideByPOT for the fixed-point
 * math some activations use): integer only, no float. */
#ifndef TM_QUANT_H
#define TM_QUANT_H

#include <stdint.h>

/* round(a * b / 2^31), rounding half away from zero; saturates the one overflowing case. */
static inline int32_t tm_sat_round_doubling_high_mul(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    const int64_t ab = (int64_t)a * (int64_t)b;
    const int64_t nudge = ab >= 0 ? (INT64_C(1) << 30) : (INT64_C(1) - (INT64_C(1) << 30));
    return (int32_t)((ab + nudge) / (INT64_C(1) << 31)); /* C division truncates toward zero */
}

/* x / 2^exponent, rounding half away from zero. */
static inline int32_t tm_rounding_divide_by_pot(int32_t x, int exponent)
{
    const int32_t mask = (int32_t)((UINT32_C(1) << exponent) - 1u);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* x * multiplier * 2^(shift - 31), rounded once, half toward +infinity.
 *
 * This is TFLite's MultiplyByQuantizedMultiplier as LiteRT (ai-edge-litert 2.x) and CMSIS-NN build
 * it: the TFLITE_SINGLE_ROUNDING variant, one 64-bit product and one rounding shift. The older
 * gemmlowp double rounding (tm_sat_round_doubling_high_mul + tm_rounding_divide_by_pot) differs
 * by 1 LSB when the first rounding lands on a half; measured against BUILTIN_REF, single rounding
 * is the one that matches. `shift` is in [-31, 30] (quantize_multiplier guarantees it). */
static inline int32_t tm_requantize(int32_t x, int32_t multiplier, int32_t shift)
{
    const int total_shift = 31 - shift;
    const int64_t round = INT64_C(1) << (total_shift - 1);
    /* >> of a negative int64 is an arithmetic shift on every compiler we target (GCC, Clang). */
    const int64_t result = ((int64_t)x * (int64_t)multiplier + round) >> total_shift;
    return (int32_t)(result < INT32_MIN ? INT32_MIN : (result > INT32_MAX ? INT32_MAX : result));
}

/* The gemmlowp double-rounding requantization, for kernels whose reference still uses it
 * explicitly (some fixed-point activation paths). */
static inline int32_t tm_requantize_double_rounding(int32_t x, int32_t multiplier, int32_t shift)
{
    const int left = shift > 0 ? shift : 0;
    const int right = shift > 0 ? 0 : -shift;
    const int32_t shifted = (int32_t)((uint32_t)x << left);
    return tm_rounding_divide_by_pot(tm_sat_round_doubling_high_mul(shifted, multiplier), right);
}

/* Two independent selects, not a nested ternary: compilers turn these into conditional moves,
 * where the nested form became a compare-and-jump that ReLU-shaped outputs mispredict often. */
static inline int8_t tm_clamp_s8(int32_t v, int32_t lo, int32_t hi)
{
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    return (int8_t)v;
}

#endif /* TM_QUANT_H */
