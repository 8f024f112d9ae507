/* The GEMM core of the DSP conv kernels (tm_dsp_conv.c): out_c outputs for each of two pixels
 * whose inputs (a 1x1 pixel, or a gathered window) were widened into int16 pairs. */
#ifndef TM_DSP_GEMM_H
#define TM_DSP_GEMM_H

#include "tm_dsp.h"
#include "tm_dsp_kernels.h"

/* The two pixels' windows are interleaved by fours: per four input elements, four words
 * (A: x0 x2, A: x1 x3, B: x0 x2, B: x1 x3), sixteen bytes (TM_DSP_QUAD_BYTES). One pointer walks
 * both windows; each pair of words is the order SXTB16 gives a weight word, so every SMLAD
 * pairs matching elements. */
#define TM_DSP_QUAD_BYTES 16
#define TM_DSP_PIXEL_B 8 /* pixel B's words start 8 bytes into each quad */

/* Widen n int8 into a pixel's words of each quad (`dst` is the first quad's, at A or B);
 * missing tail elements are zeros. */
static inline void tm_dsp_widen(int32_t *dst, const int8_t *src, int32_t n)
{
    int32_t i = 0;
    for (; i + 4 <= n; i += 4, dst += TM_DSP_QUAD_BYTES / 4) {
        const int32_t v = tm_read_s8x4(src + i);
        dst[0] = tm_sxtb16(v);
        dst[1] = tm_sxtb16_ror8(v);
    }
    if (i < n) {
        uint32_t v = 0;
        for (int32_t k = 0; i + k < n; ++k) {
            v |= (uint32_t)(uint8_t)src[i + k] << (8 * k);
        }
        dst[0] = tm_sxtb16((int32_t)v);
        dst[1] = tm_sxtb16_ror8((int32_t)v);
    }
}

/* The per-layer values in locals: stores through int8_t * would otherwise reload them from *p. */
typedef struct {
    int32_t out_c, out_round, act_min, act_max;
} tm_dsp_gemm_layer;

/* One output from its accumulator; `clamp` is a constant at every call (see tm_dsp_gemm_body). */
TM_DSP_INLINE int8_t tm_dsp_out(const tm_dsp_gemm_layer *d, int32_t acc, int32_t mult, int32_t rshift, int clamp)
{
    int32_t v = tm_dsp_requant(acc, mult, rshift, d->out_round);
    if (clamp) {
        v = tm_dsp_clamp(v, d->act_min, d->act_max);
    }
    return (int8_t)v;
}

/* One quad of the 2 x 2 tile: four input words (A even, A odd, B even, B odd) against one
 * weight word of each channel: 4 SXTB16, 8 SMLAD. The fence keeps GCC from interleaving quads,
 * which spills (see TM_DSP_FENCE4). */
TM_DSP_INLINE void tm_dsp_quad(const int32_t *x, const int32_t *k, int32_t *a0, int32_t *a1, int32_t *b0, int32_t *b1)
{
    const int32_t we0 = tm_sxtb16(k[0]), wo0 = tm_sxtb16_ror8(k[0]);
    const int32_t we1 = tm_sxtb16(k[1]), wo1 = tm_sxtb16_ror8(k[1]);
    int32_t v = x[0];
    *a0 = tm_smlad(v, we0, *a0);
    *a1 = tm_smlad(v, we1, *a1);
    v = x[1];
    *a0 = tm_smlad(v, wo0, *a0);
    *a1 = tm_smlad(v, wo1, *a1);
    v = x[2];
    *b0 = tm_smlad(v, we0, *b0);
    *b1 = tm_smlad(v, we1, *b1);
    v = x[3];
    *b0 = tm_smlad(v, wo0, *b0);
    *b1 = tm_smlad(v, wo1, *b1);
    TM_DSP_FENCE4(*a0, *a1, *b0, *b1);
}

/* y[c] and y[b_at + c] (pixels A and B) for every output channel c, from the windows at x
 * (`quads` quads) and the GEMM stream k; b_at is out_c, or 0 for a lone last pixel (computed
 * twice: B's window repeats A's). Two channels x two pixels per pass. The stream puts each
 * pair's requantization parameters after its weights, so they are read where they are used and
 * nothing but k lives across the loop. */
TM_DSP_INLINE void tm_dsp_gemm_body(const tm_dsp_gemm_layer *d, const int32_t *k, const int32_t *x, int32_t quads,
                                    int8_t *y, int32_t b_at, int clamp)
{
    const int32_t *const end = x + 4 * (quads & ~1);
    for (int32_t pairs = d->out_c / 2; pairs > 0; --pairs, y += 2) {
        int32_t a0 = k[0], a1 = k[1];
        int32_t b0 = a0, b1 = a1;
        k += 2;
        const int32_t *xq = x;
        for (; xq != end; xq += 8, k += 4) { /* two quads a turn: half the loop overhead */
            tm_dsp_quad(xq, k, &a0, &a1, &b0, &b1);
            tm_dsp_quad(xq + 4, k + 2, &a0, &a1, &b0, &b1);
        }
        if (quads & 1) {
            tm_dsp_quad(xq, k, &a0, &a1, &b0, &b1);
            k += 2;
        }
        const int32_t m0 = k[0], s0 = k[1], m1 = k[2], s1 = k[3];
        k += 4;
        y[0] = tm_dsp_out(d, a0, m0, s0, clamp);
        y[1] = tm_dsp_out(d, a1, m1, s1, clamp);
        y[b_at] = tm_dsp_out(d, b0, m0, s0, clamp);
        y[b_at + 1] = tm_dsp_out(d, b1, m1, s1, clamp);
    }
    if (d->out_c & 1) { /* an odd last channel: one weight word per four elements */
        int32_t a0 = k[0], b0 = a0;
        ++k;
        for (int32_t q = quads; q > 0; --q, x += 4, ++k) {
            const int32_t we = tm_sxtb16(k[0]), wo = tm_sxtb16_ror8(k[0]);
            a0 = tm_smlad(x[1], wo, tm_smlad(x[0], we, a0));
            b0 = tm_smlad(x[3], wo, tm_smlad(x[2], we, b0));
        }
        y[0] = tm_dsp_out(d, a0, k[0], k[1], clamp);
        y[b_at] = tm_dsp_out(d, b0, k[0], k[1], clamp);
    }
}

#endif /* TM_DSP_GEMM_H */
