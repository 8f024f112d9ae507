#include "tm_conv.h"

#include "tm_quant.h"

/* The conv inner loop: the widened window against one filter. int16 x int8 is a form compilers
 * turn into multiply-add-pairs instructions (x86 pmaddwd), and the window is widened once per
 * pixel instead of once per output channel. Fixed 16- and 8-element chunks get vectorized even at
 * -O2 (GCC's cheapest cost model needs a trip count that is a multiple of the vector width); on a
 * scalar core they are simply unrolled. */
static inline int32_t dot_s16_s8(const int16_t *x, const int8_t *w, int32_t n)
{
    int32_t acc = 0, i = 0;
    for (; i + 16 <= n; i += 16) {
        for (int32_t k = 0; k < 16; ++k) {
            acc += (int32_t)x[i + k] * (int32_t)w[i + k];
        }
    }
    for (; i + 8 <= n; i += 8) {
        for (int32_t k = 0; k < 8; ++k) {
            acc += (int32_t)x[i + k] * (int32_t)w[i + k];
        }
    }
    for (; i < n; ++i) {
        acc += (int32_t)x[i] * (int32_t)w[i];
    }
    return acc;
}

/* The depthwise inner loop, acc[j] += x[j] * w[j], in fixed chunks for the same reason. */
static inline void mac_s8(int32_t *acc, const int8_t *x, const int8_t *w, int32_t n)
{
    int32_t j = 0;
    for (; j + 16 <= n; j += 16) {
        for (int32_t k = 0; k < 16; ++k) {
            acc[j + k] += (int32_t)x[j + k] * (int32_t)w[j + k];
        }
    }
    for (; j < n; ++j) {
        acc[j] += (int32_t)x[j] * (int32_t)w[j];
    }
}

/* TFLite's double-rounding MultiplyByQuantizedMultiplier (what LiteRT's reference ConvPerChannel
 * and DepthwiseConvPerChannel use: single rounding differs by 1 LSB on ~0.1% of outputs), in a
 * cheaper but identical form, as it runs once per output. With 0 <= multiplier < 2^31,
 * SaturatingRoundingDoublingHighMul never saturates and its nudged truncating division equals a
 * floor shift of product + 2^30; RoundingDivideByPOT (half away from zero) equals a floor shift
 * of v + 2^(e-1) - (v < 0). tests/test_op_conv.py checks it against
 * tm_requantize_double_rounding. */
static inline int32_t tm_conv_requantize(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    const int64_t product = (int64_t)(int32_t)((uint32_t)x << left) * multiplier;
    const int32_t high = (int32_t)((product + (INT64_C(1) << 30)) >> 31);
    if (right == 0) {
        return high;
    }
    return (int32_t)(((int64_t)high + (INT64_C(1) << (right - 1)) - (high < 0)) >> right);
}

/* bias + acc wraps like TFLite's int32 accumulator does in practice; going through uint32 keeps
 * that free of signed-overflow UB (the conversion back is modulo 2^32 on every target we build). */
static inline int8_t conv_output(const tm_conv_quant *q, int32_t c, int32_t acc)
{
    const int32_t total = (int32_t)((uint32_t)q->bias[c] + (uint32_t)acc);
    const int32_t scaled = tm_conv_requantize(total, q->multiplier[c], q->shift[c]);
    return tm_clamp_s8(scaled + q->output_offset, q->act_min, q->act_max);
}

/* Taps [*lo, *hi) of a filter axis whose input coordinate origin + k * dil lies in [0, size).
 * At most k steps, once per output row or column: no division. */
static void tap_range(int32_t origin, int32_t dil, int32_t k, int32_t size, int32_t *lo, int32_t *hi)
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

static void fill_s16(int16_t *dst, int16_t v, int32_t n)
{
    for (int32_t i = 0; i < n; ++i) {
        dst[i] = v;
    }
}

static void widen_s8(int16_t *dst, const int8_t *src, int32_t n)
{
    for (int32_t i = 0; i < n; ++i) {
        dst[i] = src[i];
    }
}

/* Copy one group's window of a pixel into `patch`, widened, in filter order [k_h][k_w][filter_c].
 * Padded taps get the input zero point, which is exactly what the folded bias expects. */
static void gather_patch(const tm_conv_geometry *g, const int8_t *x, int32_t iy0, int32_t ix0,
                         int32_t ky_lo, int32_t ky_hi, int32_t kx_lo, int32_t kx_hi, int32_t fc, int16_t pad,
                         int16_t *patch)
{
    const int32_t row = g->k_w * fc;
    /* Taps next to each other in the input too (no width dilation, no groups): one copy per row. */
    const int contiguous = g->dil_w == 1 && fc == g->in_c;
    for (int32_t ky = 0; ky < g->k_h; ++ky, patch += row) {
        if (ky < ky_lo || ky >= ky_hi) {
            fill_s16(patch, pad, row);
            continue;
        }
        /* Offsets stay integers until they point inside the input (ix0 may be negative). */
        const int32_t at = ((iy0 + ky * g->dil_h) * g->in_w + ix0) * g->in_c;
        fill_s16(patch, pad, kx_lo * fc);
        if (contiguous) {
            widen_s8(patch + kx_lo * fc, x + at + kx_lo * g->in_c, (kx_hi - kx_lo) * fc);
        } else {
            for (int32_t kx = kx_lo; kx < kx_hi; ++kx) {
                widen_s8(patch + kx * fc, x + at + kx * g->dil_w * g->in_c, fc);
            }
        }
        fill_s16(patch + kx_hi * fc, pad, (g->k_w - kx_hi) * fc);
    }
}

void tm_conv_s8(const tm_conv_params *p, const int8_t *input, int8_t *output, int8_t *scratch)
{
    /* Local copies: stores through int8_t * may alias anything, so reading p-> in the loops would
     * reload it after every output byte. */
    const tm_conv_geometry g = p->geo;
    const tm_conv_quant q = p->q;
    const int8_t *const weights = p->weights;
    const int32_t groups = p->groups;
    const int32_t fc = g.in_c / groups;
    const int32_t group_out = g.out_c / groups;
    const int32_t filter_size = g.k_h * g.k_w * fc;
    /* The planner may hand out an odd offset: the scratch has one spare byte to realign. */
    int16_t *const patch = (int16_t *)(void *)(scratch + ((uintptr_t)scratch & 1u));
    int8_t *y = output;
    for (int32_t b = 0; b < g.batches; ++b) {
        const int8_t *x = input + b * g.in_h * g.in_w * g.in_c;
        for (int32_t oy = 0; oy < g.out_h; ++oy) {
            const int32_t iy0 = oy * g.stride_h - g.pad_top;
            int32_t ky_lo, ky_hi;
            tap_range(iy0, g.dil_h, g.k_h, g.in_h, &ky_lo, &ky_hi);
            for (int32_t ox = 0; ox < g.out_w; ++ox) {
                const int32_t ix0 = ox * g.stride_w - g.pad_left;
                int32_t kx_lo, kx_hi;
                tap_range(ix0, g.dil_w, g.k_w, g.in_w, &kx_lo, &kx_hi);
                for (int32_t grp = 0, c = 0; grp < groups; ++grp) {
                    gather_patch(&g, x + grp * fc, iy0, ix0, ky_lo, ky_hi, kx_lo, kx_hi, fc,
                                 (int16_t)q.input_zp, patch);
                    for (int32_t j = 0; j < group_out; ++j, ++c) {
                        *y++ = conv_output(&q, c, dot_s16_s8(patch, weights + c * filter_size, filter_size));
                    }
                }
            }
        }
    }
}

/* One tap of a depthwise block: acc[j] += input channel (c0 + j) / mult times w[j], the input
 * channel advanced by a counter rather than a division. */
static void depthwise_tap(int32_t *acc, const int8_t *x, const int8_t *w, int32_t n, int32_t mult, int32_t m0)
{
    if (mult == 1) {
        mac_s8(acc, x, w, n);
        return;
    }
    if (m0 + n <= mult) {
        /* The whole block reads one input channel (a large multiplier, e.g. on a 1-channel input). */
        const int32_t xv = *x;
        for (int32_t j = 0; j < n; ++j) {
            acc[j] += xv * (int32_t)w[j];
        }
        return;
    }
    for (int32_t j = 0, m = m0; j < n; ++j) {
        acc[j] += (int32_t)*x * (int32_t)w[j];
        if (++m == mult) {
            m = 0;
            ++x;
        }
    }
}

void tm_depthwise_conv_s8(const tm_depthwise_conv_params *p, const int8_t *input, int8_t *output)
{
    const tm_conv_geometry g = p->geo;
    const tm_conv_quant q = p->q;
    const int8_t *const weights = p->weights;
    const int32_t mult = p->depth_mult;
    const int32_t row = g.in_w * g.in_c;
    int8_t *y = output;
    for (int32_t b = 0; b < g.batches; ++b) {
        const int8_t *x = input + b * g.in_h * row;
        for (int32_t oy = 0; oy < g.out_h; ++oy) {
            const int32_t iy0 = oy * g.stride_h - g.pad_top;
            int32_t ky_lo, ky_hi;
            tap_range(iy0, g.dil_h, g.k_h, g.in_h, &ky_lo, &ky_hi);
            for (int32_t ox = 0; ox < g.out_w; ++ox) {
                const int32_t ix0 = ox * g.stride_w - g.pad_left;
                int32_t kx_lo, kx_hi;
                tap_range(ix0, g.dil_w, g.k_w, g.in_w, &kx_lo, &kx_hi);
                /* (ic0, m0): input channel and multiplier index of the block's first output channel. */
                for (int32_t c0 = 0, ic0 = 0, m0 = 0; c0 < g.out_c; c0 += TM_DEPTHWISE_BLOCK) {
                    const int32_t n = g.out_c - c0 < TM_DEPTHWISE_BLOCK ? g.out_c - c0 : TM_DEPTHWISE_BLOCK;
                    int32_t acc[TM_DEPTHWISE_BLOCK];
                    for (int32_t j = 0; j < n; ++j) {
                        acc[j] = 0;
                    }
                    const int8_t *w = weights + c0;
                    for (int32_t ky = 0; ky < g.k_h; ++ky) {
                        const int32_t iy = iy0 + ky * g.dil_h;
                        for (int32_t kx = 0; kx < g.k_w; ++kx, w += g.out_c) {
                            if (ky < ky_lo || ky >= ky_hi || kx < kx_lo || kx >= kx_hi) {
                                for (int32_t j = 0; j < n; ++j) {
                                    acc[j] += q.input_zp * w[j]; /* a padded tap reads the zero point */
                                }
                            } else {
                                const int32_t ix = ix0 + kx * g.dil_w;
                                depthwise_tap(acc, x + iy * row + ix * g.in_c + ic0, w, n, mult, m0);
                            }
                        }
                    }
                    for (int32_t j = 0; j < n; ++j) {
                        y[c0 + j] = conv_output(&q, c0 + j, acc[j]);
                    }
                    if (mult == 1) {
                        ic0 += n;
                    } else {
                        for (m0 += n; m0 >= mult; m0 -= mult) {
                            ++ic0;
                        }
                    }
                }
                y += g.out_c;
            }
        }
    }
}
