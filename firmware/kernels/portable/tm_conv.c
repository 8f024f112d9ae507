#include "tm_conv.h"

/* Filters a conv pass computes at once, from the windows of TM_CONV_PIXELS pixels: each window
 * element loaded feeds TM_CONV_FILTERS MACs, each filter element TM_CONV_PIXELS (see dot_piece). */
#define TM_CONV_FILTERS 4

/* Unroll the loop that follows completely (GCC, Clang): a loop over accumulators otherwise keeps
 * them in memory. Only a hint; other compilers just run the loop. */
#if defined(__GNUC__)
#define TM_UNROLLED _Pragma("GCC unroll 16")
#else
#define TM_UNROLLED
#endif

/* TFLite's double-rounding MultiplyByQuantizedMultiplier (what LiteRT's reference ConvPerChannel
 * and DepthwiseConvPerChannel use: single rounding differs by 1 LSB on ~0.1% of outputs), in a
 * cheaper but identical form, as it runs once per output. With 0 <= multiplier < 2^31:
 * - SaturatingRoundingDoublingHighMul never saturates, and its nudged truncating division is
 *   floor(q / 2^31) with q = x * multiplier + 2^30;
 * - for shift = -r < 0, RoundingDivideByPOT (half away from zero) of that is
 *   floor((floor(q / 2^31) - [q < 0] + 2^(r-1)) / 2^r), where floor(q / 2^31) - [q < 0] =
 *   floor((q - 2^31 [q < 0]) / 2^31) = floor((x * multiplier +- 2^30) / 2^31) =: high, with the
 *   sign of q;
 * - the sign of x may stand in for the sign of q: they differ only for x < 0 with
 *   -2^30 <= x * multiplier <= 0, where both end in 0. The nudge then depends on x alone (off
 *   the multiply's critical path), and high lies in [-2^31, 2^31 - 2];
 * - floor((high + 2^(r-1)) / 2^r) = floor((floor(high / 2^(r-1)) + 1) / 2): int32 throughout
 *   (high + 1 cannot overflow; >> of a negative value is arithmetic on every compiler we target),
 *   so 32-bit cores need no 64-bit shift by a variable amount.
 * Conv scales are almost always < 0.5 (shift < 0); shift >= 0 keeps TFLite's left shift, which
 * wraps in int32. tests/test_op_conv.py checks this against tm_requantize_double_rounding. */
static inline int32_t tm_conv_requantize(int32_t x, int32_t multiplier, int32_t shift)
{
    if (shift < 0) {
        const int64_t nudge = x < 0 ? -(INT64_C(1) << 30) : INT64_C(1) << 30;
        const int32_t high = (int32_t)(((int64_t)x * multiplier + nudge) >> 31);
        return ((high >> (-shift - 1)) + 1) >> 1;
    }
    const int32_t shifted = (int32_t)((uint32_t)x << shift);
    return (int32_t)(((int64_t)shifted * multiplier + (INT64_C(1) << 30)) >> 31);
}

/* One output from its accumulator and its channel's parameters. bias + acc wraps like TFLite's
 * int32 accumulator does in practice; going through uint32 keeps that free of signed-overflow UB
 * (the conversion back is modulo 2^32 on every target we build). The clamp is two independent
 * selects, which compilers make branch-free where the target has conditional moves (x86 cmov,
 * Thumb-2 IT): with RELU/RELU6 a large share of outputs clamp, in no predictable pattern, and the
 * branchy form (tm_clamp_s8 compiles to a compare-and-jump) mispredicted often enough to cost
 * about 45% of MobileNetV2's host time. */
static inline int8_t conv_output(const tm_conv_quant *q, int32_t bias, int32_t multiplier, int32_t shift,
                                 int32_t acc)
{
    const int32_t total = (int32_t)((uint32_t)bias + (uint32_t)acc);
    int32_t v = tm_conv_requantize(total, multiplier, shift) + q->output_offset;
    v = v > q->act_min ? v : q->act_min;
    v = v < q->act_max ? v : q->act_max;
    return (int8_t)v;
}

/* ---- CONV_2D ------------------------------------------------------------------------------ */

/* sum[p * filters + j] += window p . filter j over `len` elements, for TM_CONV_PIXELS windows
 * `x_step` elements apart and `filters` filters `stride` bytes apart. Element by element, all
 * the products of that element at once: called with constant `filters` and `len`, the unrolled
 * inner loops leave every sum in a register, and each window and filter element is loaded once
 * per pass (TM_CONV_PIXELS * filters MACs per TM_CONV_PIXELS + filters loads on a scalar core).
 * The constant length also lets -O2 vectorize the element loop (GCC's cheapest cost model wants
 * a trip count that is a multiple of the vector width; x86 gets multiply-add-pairs, pmaddwd). */
static inline void dot_piece(int32_t *sum, const int16_t *x, int32_t x_step, const int8_t *w, int32_t stride,
                             int32_t filters, int32_t len)
{
    for (int32_t k = 0; k < len; ++k) {
        TM_UNROLLED for (int32_t j = 0; j < filters; ++j) {
            TM_UNROLLED for (int32_t p = 0; p < TM_CONV_PIXELS; ++p) {
                sum[p * filters + j] += (int32_t)x[p * x_step + k] * (int32_t)w[j * stride + k];
            }
        }
    }
}

/* acc[p * filters + j] = window p . filter j over n elements (a multiple of TM_CONV_DOT_CHUNK:
 * the zero padding of the windows makes the overrun harmless), in pieces of constant length. */
static inline void dot_filters(int32_t *acc, const int16_t *x, int32_t x_step, const int8_t *w, int32_t stride,
                               int32_t filters, int32_t n)
{
    for (int32_t j = 0; j < TM_CONV_PIXELS * filters; ++j) {
        acc[j] = 0;
    }
    int32_t i = 0;
    for (; i + 2 * TM_CONV_DOT_CHUNK <= n; i += 2 * TM_CONV_DOT_CHUNK) {
        dot_piece(acc, x + i, x_step, w + i, stride, filters, 2 * TM_CONV_DOT_CHUNK);
    }
    if (i < n) {
        dot_piece(acc, x + i, x_step, w + i, stride, filters, TM_CONV_DOT_CHUNK);
    }
}

/* Output channels c.. c + filters - 1 of the first `pixels` of the pass, from dot_filters' acc;
 * each pixel's outputs start `y_step` bytes after the previous one's. A channel's parameters are
 * loaded once for all pixels (stores through int8_t * would force reloads in between). */
static inline void conv_outputs(int8_t *y, int32_t y_step, int32_t pixels, const tm_conv_quant *q, int32_t c,
                                const int32_t *acc, int32_t filters)
{
    TM_UNROLLED for (int32_t j = 0; j < filters; ++j) {
        const int32_t bias = q->bias[c + j], multiplier = q->multiplier[c + j], shift = q->shift[c + j];
        int8_t out[TM_CONV_PIXELS];
        TM_UNROLLED for (int32_t p = 0; p < TM_CONV_PIXELS; ++p) {
            out[p] = conv_output(q, bias, multiplier, shift, acc[p * filters + j]);
        }
        for (int32_t p = 0; p < pixels; ++p) {
            y[p * y_step + j] = out[p];
        }
    }
}

static void fill_s16(int16_t *dst, int16_t v, int32_t n)
{
    for (int32_t i = 0; i < n; ++i) {
        dst[i] = v;
    }
}

/* In fixed 16-element pieces, with restrict: an int8_t source may alias anything, and a loop of
 * unknown length that needs a runtime overlap check is not vectorized at -O2. */
static void widen_s8(int16_t *restrict dst, const int8_t *restrict src, int32_t n)
{
    int32_t i = 0;
    for (; i + 16 <= n; i += 16) {
        for (int32_t k = 0; k < 16; ++k) {
            dst[i + k] = src[i + k];
        }
    }
    for (; i < n; ++i) {
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

/* A raster position (batch, oy, ox) of the output. */
typedef struct {
    int32_t b, oy, ox;
} conv_pixel;

/* Gather every group's window of output pixel *at into `windows` (group after group, each
 * `padded` elements), then step *at to the next pixel. */
static void gather_pixel(const tm_conv_geometry *g, const int8_t *input, int32_t fc, int32_t groups,
                         int32_t padded, int16_t pad, conv_pixel *at, int16_t *windows)
{
    const int8_t *x = input + at->b * g->in_h * g->in_w * g->in_c;
    const int32_t iy0 = at->oy * g->stride_h - g->pad_top;
    const int32_t ix0 = at->ox * g->stride_w - g->pad_left;
    int32_t ky_lo, ky_hi, kx_lo, kx_hi;
    tm_conv_tap_range(iy0, g->dil_h, g->k_h, g->in_h, &ky_lo, &ky_hi);
    tm_conv_tap_range(ix0, g->dil_w, g->k_w, g->in_w, &kx_lo, &kx_hi);
    for (int32_t grp = 0; grp < groups; ++grp) {
        gather_patch(g, x + grp * fc, iy0, ix0, ky_lo, ky_hi, kx_lo, kx_hi, fc, pad, windows + grp * padded);
    }
    if (++at->ox == g->out_w) {
        at->ox = 0;
        if (++at->oy == g->out_h) {
            at->oy = 0;
            ++at->b;
        }
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
    const int32_t padded = (filter_size + TM_CONV_DOT_CHUNK - 1) / TM_CONV_DOT_CHUNK * TM_CONV_DOT_CHUNK;
    const int32_t pixel_windows = groups * padded;
    const int32_t total_pixels = g.batches * g.out_h * g.out_w;
    /* The planner may hand out an odd offset: the scratch has one spare byte to realign. */
    int16_t *const windows = (int16_t *)(void *)(scratch + ((uintptr_t)scratch & 1u));
    for (int32_t at = 0; at < TM_CONV_PIXELS * pixel_windows; at += padded) {
        fill_s16(windows + at + filter_size, 0, padded - filter_size); /* gathers never touch the padding */
    }
    conv_pixel next = {0, 0, 0};
    int8_t *y = output;
    for (int32_t done = 0; done < total_pixels;) {
        /* All reads of a pass come first: its pixels' windows, every group's. A last pixel
         * without a partner is computed twice (x_step 0) and written once. */
        const int32_t pixels = total_pixels - done < TM_CONV_PIXELS ? total_pixels - done : TM_CONV_PIXELS;
        for (int32_t t = 0; t < pixels; ++t) {
            gather_pixel(&g, input, fc, groups, padded, (int16_t)q.input_zp, &next, windows + t * pixel_windows);
        }
        const int32_t x_step = pixels == TM_CONV_PIXELS ? pixel_windows : 0;
        for (int32_t grp = 0, c = 0; grp < groups; ++grp) {
            const int16_t *x = windows + grp * padded;
            const int8_t *w = weights + c * filter_size;
            int32_t j = 0;
            for (; j + TM_CONV_FILTERS <= group_out; j += TM_CONV_FILTERS) {
                int32_t acc[TM_CONV_PIXELS * TM_CONV_FILTERS];
                dot_filters(acc, x, x_step, w, filter_size, TM_CONV_FILTERS, padded);
                conv_outputs(y + c, g.out_c, pixels, &q, c, acc, TM_CONV_FILTERS);
                c += TM_CONV_FILTERS;
                w += TM_CONV_FILTERS * filter_size;
            }
            for (; j < group_out; ++j, ++c, w += filter_size) {
                int32_t acc[TM_CONV_PIXELS];
                dot_filters(acc, x, x_step, w, filter_size, 1, padded);
                conv_outputs(y + c, g.out_c, pixels, &q, c, acc, 1);
            }
        }
        done += pixels;
        y += pixels * g.out_c;
    }
}

/* ---- DEPTHWISE_CONV_2D -------------------------------------------------------------------- */

/* One tap of a block: acc[j] += x[j] * w[j] over the whole block. A constant trip count into
 * accumulators that live on the caller's stack (nothing else can point at them): vectorized at
 * -O2, kept in registers across the taps, unrolled on a scalar core. */
static inline void mac_block(int32_t *acc, const int8_t *x, const int8_t *w)
{
    for (int32_t j = 0; j < TM_DEPTHWISE_BLOCK; ++j) {
        acc[j] += (int32_t)x[j] * (int32_t)w[j];
    }
}

/* The n inputs of a block's output channels (c0 + j) / mult, starting at multiplier index m0 of
 * input channel *x, copied into `dst`: for a partial last block (whole-block reads of the input
 * could run past its end) and for multipliers > 1. A counter instead of a division. */
static const int8_t *gather_block(int8_t *dst, const int8_t *x, int32_t n, int32_t mult, int32_t m0)
{
    for (int32_t j = 0, m = m0; j < n; ++j) {
        dst[j] = *x;
        if (++m == mult) {
            m = 0;
            ++x;
        }
    }
    return dst;
}

void tm_depthwise_conv_s8(const tm_depthwise_conv_params *p, const int8_t *input, int8_t *output)
{
    const tm_conv_geometry g = p->geo;
    const tm_conv_quant q = p->q;
    const int8_t *const weights = p->weights;
    const int32_t mult = p->depth_mult;
    const int32_t row = g.in_w * g.in_c;
    const int32_t tap_step = g.dil_w * g.in_c;
    /* A padded tap reads zero points (that is what the folded bias expects). Lanes past the end
     * of a partial block compute with whatever they read (the next pixel's channels, the next
     * tap's weights, the weight padding) into accumulators that are never written out. */
    int8_t zero_points[TM_DEPTHWISE_BLOCK], gathered[TM_DEPTHWISE_BLOCK];
    for (int32_t j = 0; j < TM_DEPTHWISE_BLOCK; ++j) {
        zero_points[j] = (int8_t)q.input_zp;
        gathered[j] = 0;
    }
    int8_t *y = output;
    for (int32_t b = 0; b < g.batches; ++b) {
        const int8_t *x = input + b * g.in_h * row;
        for (int32_t oy = 0; oy < g.out_h; ++oy) {
            const int32_t iy0 = oy * g.stride_h - g.pad_top;
            int32_t ky_lo, ky_hi;
            tm_conv_tap_range(iy0, g.dil_h, g.k_h, g.in_h, &ky_lo, &ky_hi);
            for (int32_t ox = 0; ox < g.out_w; ++ox) {
                const int32_t ix0 = ox * g.stride_w - g.pad_left;
                int32_t kx_lo, kx_hi;
                tm_conv_tap_range(ix0, g.dil_w, g.k_w, g.in_w, &kx_lo, &kx_hi);
                const int has_padding = ky_lo > 0 || ky_hi < g.k_h || kx_lo > 0 || kx_hi < g.k_w;
                /* Offsets of the first tap inside the image, and of the end of a whole-block read
                 * at the last one. */
                const int32_t first = ((iy0 + ky_lo * g.dil_h) * g.in_w + ix0 + kx_lo * g.dil_w) * g.in_c;
                const int32_t last = ((iy0 + (ky_hi - 1) * g.dil_h) * g.in_w + ix0 + (kx_hi - 1) * g.dil_w) * g.in_c
                                     + TM_DEPTHWISE_BLOCK;
                /* (ic0, m0): input channel and multiplier index of the block's first output channel. */
                for (int32_t c0 = 0, ic0 = 0, m0 = 0; c0 < g.out_c; c0 += TM_DEPTHWISE_BLOCK) {
                    const int32_t n = g.out_c - c0 < TM_DEPTHWISE_BLOCK ? g.out_c - c0 : TM_DEPTHWISE_BLOCK;
                    /* Whole blocks read the input where it lies; so does a partial one unless its
                     * block-wide reads could run past the end of the input. */
                    const int in_place = mult == 1 && (n == TM_DEPTHWISE_BLOCK || last + ic0 <= g.in_h * row);
                    int32_t acc[TM_DEPTHWISE_BLOCK];
                    for (int32_t j = 0; j < TM_DEPTHWISE_BLOCK; ++j) {
                        acc[j] = 0;
                    }
                    if (has_padding) {
                        const int8_t *w = weights + c0;
                        for (int32_t ky = 0; ky < g.k_h; ++ky) {
                            for (int32_t kx = 0; kx < g.k_w; ++kx, w += g.out_c) {
                                if (ky < ky_lo || ky >= ky_hi || kx < kx_lo || kx >= kx_hi) {
                                    mac_block(acc, zero_points, w);
                                }
                            }
                        }
                    }
                    for (int32_t ky = ky_lo, at = first + ic0; ky < ky_hi; ++ky, at += g.dil_h * row) {
                        const int8_t *w = weights + (ky * g.k_w + kx_lo) * g.out_c + c0;
                        for (int32_t kx = kx_lo, tap = at; kx < kx_hi; ++kx, tap += tap_step, w += g.out_c) {
                            mac_block(acc, in_place ? x + tap : gather_block(gathered, x + tap, n, mult, m0), w);
                        }
                    }
                    for (int32_t j = 0; j < n; ++j) {
                        const int32_t c = c0 + j;
                        y[c] = conv_output(&q, q.bias[c], q.multiplier[c], q.shift[c], acc[j]);
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
