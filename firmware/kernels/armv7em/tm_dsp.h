/* The Armv7E-M DSP instructions the tinymem DSP kernels use, one name each, and the requantization
 * built on them.
 *
 * On a core with the DSP extension (Cortex-M4/M7: __ARM_FEATURE_DSP and __ARM_FEATURE_SIMD32)
 * each tm_* below is the ACLE intrinsic from arm_acle.h, or one instruction of inline assembly
 * where GCC's ACLE has no intrinsic for the form we need (SMMULR; SXTB16 with its rotation, which
 * GCC does not fold from a separate rotate). Elsewhere (the host, Cortex-M0+/M3) each is plain
 * C99 with the instruction's exact semantics, so the same kernel source builds and is tested
 * bit for bit on x86, under ASan/UBSan too (tests/test_kernels_dsp.py).
 *
 * A packed int16x2 is an int32_t: bits 0..15 the bottom half, 16..31 the top half. Define
 * TM_DSP_FORCE_C to use the C versions on an Arm core as well. */
#ifndef TM_DSP_H
#define TM_DSP_H

#include <stdint.h>
#include <string.h>

#if defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SIMD32) && !defined(TM_DSP_FORCE_C)
#define TM_DSP_NATIVE 1
#include <arm_acle.h>
#else
#define TM_DSP_NATIVE 0
#endif

#if defined(__GNUC__)
#define TM_DSP_INLINE static inline __attribute__((always_inline))
#else
#define TM_DSP_INLINE static inline
#endif

#if TM_DSP_NATIVE

/* acc + a.bottom * b.bottom + a.top * b.top (wraps modulo 2^32; the Q flag is never read) */
TM_DSP_INLINE int32_t tm_smlad(int32_t a, int32_t b, int32_t acc) { return __smlad(a, b, acc); }
TM_DSP_INLINE int32_t tm_smlabb(int32_t a, int32_t b, int32_t acc) { return __smlabb(a, b, acc); }
TM_DSP_INLINE int32_t tm_smlatt(int32_t a, int32_t b, int32_t acc) { return __smlatt(a, b, acc); }
/* bytes 0 and 2, sign-extended into the two halves */
TM_DSP_INLINE int32_t tm_sxtb16(int32_t x) { return __sxtb16(x); }

/* bytes 1 and 3, sign-extended into the two halves */
TM_DSP_INLINE int32_t tm_sxtb16_ror8(int32_t x)
{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}

/* round(a * b / 2^32), halves rounded up: the top word of a * b + 2^31 */
TM_DSP_INLINE int32_t tm_smmulr(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

#define tm_ssat8(x) __ssat((x), 8)

/* Bytewise signed max of four int8 lanes: SSUB8 sets a GE flag per lane where a >= b, SEL picks
 * a there (the flags pass between the two; GCC orders the builtins by them). */
TM_DSP_INLINE int32_t tm_max_s8x4(int32_t a, int32_t b)
{
    (void)__ssub8(a, b);
    return (int32_t)__sel((uint32_t)a, (uint32_t)b);
}

#else /* C versions, bit for bit the instructions above */

TM_DSP_INLINE int32_t tm_lo16(int32_t x) { return (int16_t)(uint16_t)((uint32_t)x & 0xFFFFu); }
TM_DSP_INLINE int32_t tm_hi16(int32_t x) { return (int16_t)(uint16_t)((uint32_t)x >> 16); }

/* Products of two int16 fit int32; their sum and the accumulation wrap as the hardware does,
 * through uint32 (no signed overflow). */
TM_DSP_INLINE int32_t tm_smlad(int32_t a, int32_t b, int32_t acc)
{
    const uint32_t sum = (uint32_t)acc + (uint32_t)(tm_lo16(a) * tm_lo16(b)) + (uint32_t)(tm_hi16(a) * tm_hi16(b));
    return (int32_t)sum;
}

TM_DSP_INLINE int32_t tm_smlabb(int32_t a, int32_t b, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)(tm_lo16(a) * tm_lo16(b)));
}

TM_DSP_INLINE int32_t tm_smlatt(int32_t a, int32_t b, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)(tm_hi16(a) * tm_hi16(b)));
}

TM_DSP_INLINE int32_t tm_pack16(int32_t lo, int32_t hi)
{
    return (int32_t)(((uint32_t)hi << 16) | ((uint32_t)lo & 0xFFFFu));
}

TM_DSP_INLINE int32_t tm_sxtb16(int32_t x)
{
    const uint32_t u = (uint32_t)x;
    return tm_pack16((int8_t)(uint8_t)(u & 0xFFu), (int8_t)(uint8_t)((u >> 16) & 0xFFu));
}

TM_DSP_INLINE int32_t tm_sxtb16_ror8(int32_t x)
{
    const uint32_t u = (uint32_t)x;
    return tm_pack16((int8_t)(uint8_t)((u >> 8) & 0xFFu), (int8_t)(uint8_t)(u >> 24));
}

/* >> of a negative int64 is arithmetic on every compiler we target (as in tm_quant.h) */
TM_DSP_INLINE int32_t tm_smmulr(int32_t a, int32_t b)
{
    return (int32_t)(((int64_t)a * (int64_t)b + (INT64_C(1) << 31)) >> 32);
}

TM_DSP_INLINE int32_t tm_ssat8(int32_t x)
{
    return x < -128 ? -128 : (x > 127 ? 127 : x);
}

TM_DSP_INLINE int32_t tm_max_s8x4(int32_t a, int32_t b)
{
    uint32_t r = 0;
    for (int lane = 0; lane < 32; lane += 8) {
        const int8_t x = (int8_t)(uint8_t)((uint32_t)a >> lane), y = (int8_t)(uint8_t)((uint32_t)b >> lane);
        r |= (uint32_t)(uint8_t)(x >= y ? x : y) << lane;
    }
    return (int32_t)r;
}

#endif

/* A scheduling fence for four accumulators: the MACs before it complete before any after it
 * start. Without it GCC reorders a 3x3 tap loop into one accumulator chain at a time, which keeps
 * every tap's operands live at once and spills them to the stack. No code of its own. */
#if defined(__GNUC__)
#define TM_DSP_FENCE4(a, b, c, d) __asm__("" : "+r"(a), "+r"(b), "+r"(c), "+r"(d))
#else
#define TM_DSP_FENCE4(a, b, c, d) ((void)0)
#endif

/* Hides a pointer's value from the optimizer: keeps GCC from turning the nine taps of a 3x3
 * window into nine induction variables (more than the registers, so they spill) where one row
 * pointer and register offsets do. No code of its own. */
#if defined(__GNUC__)
#define TM_DSP_OPAQUE(p) __asm__("" : "+r"(p))
#else
#define TM_DSP_OPAQUE(p) ((void)0)
#endif

/* For short copy loops: GCC otherwise turns them into calls of the C library's memcpy, which
 * costs more than the copy at these lengths (a window row of a first layer is 3 to 12 bytes). */
#if defined(__GNUC__) && !defined(__clang__)
#define TM_DSP_NO_MEMCPY __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define TM_DSP_NO_MEMCPY
#endif

/* Four int8 from any address (a plain LDR on cores with unaligned access, as Armv7-M has). */
TM_DSP_INLINE int32_t tm_read_s8x4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

TM_DSP_INLINE void tm_write_s8x4(int8_t *p, int32_t v)
{
    memcpy(p, &v, sizeof v);
}

/* TFLite's double-rounding requantization of a conv accumulator (tm_conv_requantize, itself
 * MultiplyByQuantizedMultiplier for shift < 0) plus the output zero point, saturated to int8,
 * from acc2 = 2 * acc. out_round = 1 + 2 * output zero point.
 *
 * Codegen picks a DSP kernel only where |acc| < 2^30 for every possible input (bias and weights
 * are known: |bias| + 128 * sum |w| bounds it), so 2 * acc fits int32 and
 *   floor((acc * m +- 2^30) / 2^31) = round(2 * acc * m / 2^32) - [acc < 0] = SMMULR - [acc < 0],
 * the +- nudge having the sign of acc as in tm_conv_requantize. Then
 *   ((high >> (r - 1)) + 1) >> 1 + zp = ((high >> rshift) + out_round) >> 1
 * (adding 2 zp before the halving is adding zp after it). Five instructions on a Cortex-M4. */
TM_DSP_INLINE int32_t tm_dsp_requant2(int32_t acc2, int32_t mult, int32_t rshift, int32_t out_round)
{
    const int32_t high = tm_smmulr(acc2, mult) + (acc2 >> 31);
    return tm_ssat8(((high >> rshift) + out_round) >> 1);
}

/* The same from the accumulator itself (kernels whose products are not doubled). */
TM_DSP_INLINE int32_t tm_dsp_requant(int32_t acc, int32_t mult, int32_t rshift, int32_t out_round)
{
    return tm_dsp_requant2((int32_t)((uint32_t)acc << 1), mult, rshift, out_round);
}

/* The activation's clamp beyond int8's own range (RELU6, RELU_N1_TO_1, narrow output ranges);
 * kernels skip it when act_min = -128 and act_max = 127, the common case. */
TM_DSP_INLINE int32_t tm_dsp_clamp(int32_t v, int32_t act_min, int32_t act_max)
{
    v = v > act_min ? v : act_min;
    return v < act_max ? v : act_max;
}

/* gemmlowp's double rounding, RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x, mult), e)
 * with e = -shift >= 0 (TFLite's *SmallerThanOneExp rescales: ADD), for |x| < 2^30, from x2 = 2x.
 * SaturatingRoundingDoublingHighMul rounds x * mult / 2^31 half up for either sign (its
 * -2^30 + 1 nudge and truncation do that for negative products) and never saturates here
 * (mult < 2^31); SMMULR(2x, mult) = floor((2x * mult + 2^31) / 2^32) is the same number.
 * RoundingDivideByPOT(h, e) rounds half away from zero: (h + 2^(e-1) - [h < 0]) >> e for e > 0,
 * h for e = 0 (neg_e masks the sign term off). Four instructions on a Cortex-M4. */
typedef struct {
    int32_t mult, e, half, neg_e; /* neg_e: -1 if e > 0, else 0 */
} tm_dsp_rescaler;

TM_DSP_INLINE tm_dsp_rescaler tm_dsp_rescale_of(int32_t mult, int32_t shift)
{
    const int32_t e = -shift;
    return (tm_dsp_rescaler){mult, e, e ? 1 << (e - 1) : 0, e ? -1 : 0};
}

TM_DSP_INLINE int32_t tm_dsp_rescale(int32_t x2, tm_dsp_rescaler r)
{
    const int32_t h = tm_smmulr(x2, r.mult);
    return (h + r.half + ((h >> 31) & r.neg_e)) >> r.e;
}

#endif /* TM_DSP_H */
