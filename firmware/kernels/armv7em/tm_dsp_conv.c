/* CONV_2D on Armv7E-M: 1x1 convs as a GEMM over pixel pairs, other filters through a gathered
 * window into the same GEMM (tm_dsp_gemm.h). */
#include "tm_dsp_gemm.h"

/* The clamp test is hoisted out of every loop: two copies of the GEMM, one without it (RELU6
 * and plain int8 outputs mostly span [-128, 127] whole, so most layers take that one). */
static void gemm(const tm_dsp_conv_params *p, const int32_t *x, int32_t quads, int8_t *y, int32_t b_at)
{
    const tm_dsp_gemm_layer d = {p->geo.out_c, p->out_round, p->act_min, p->act_max};
    if (d.act_min > -128 || d.act_max < 127) {
        tm_dsp_gemm_body(&d, p->stream, x, quads, y, b_at, 1);
    } else {
        tm_dsp_gemm_body(&d, p->stream, x, quads, y, b_at, 0);
    }
}

/* The two pixels' windows (quads of TM_DSP_QUAD_BYTES), 4-byte aligned inside the scratch (the
 * planner may hand out any offset; the scratch has 3 spare bytes). */
static int32_t *windows(int8_t *scratch)
{
    return (int32_t *)(void *)(scratch + ((4u - ((uintptr_t)scratch & 3u)) & 3u));
}

/* A raster position (batch, oy, ox) of the output, and its step to the next one. */
typedef struct {
    int32_t b, oy, ox;
} dsp_pixel;

static void next_pixel(const tm_conv_geometry *g, dsp_pixel *at)
{
    if (++at->ox == g->out_w) {
        at->ox = 0;
        if (++at->oy == g->out_h) {
            at->oy = 0;
            ++at->b;
        }
    }
}

/* 1x1: every tap lies inside the image (no padding, in whole or patch geometry). */
static const int8_t *pixel_1x1(const tm_conv_geometry *g, const int8_t *input, const dsp_pixel *at)
{
    const int32_t iy = at->oy * g->stride_h - g->pad_top, ix = at->ox * g->stride_w - g->pad_left;
    return input + ((at->b * g->in_h + iy) * g->in_w + ix) * g->in_c;
}

void tm_dsp_conv_1x1_s8(const tm_dsp_conv_params *p, const int8_t *input, int8_t *output, int8_t *scratch)
{
    const tm_conv_geometry g = p->geo;
    const int32_t quads = (g.in_c + 3) / 4;
    int32_t *const win = windows(scratch);
    const int32_t total = g.batches * g.out_h * g.out_w;
    dsp_pixel at = {0, 0, 0};
    int8_t *y = output;
    for (int32_t done = 0; done < total; done += 2, y += 2 * g.out_c) {
        /* Both pixels are read before either is written (the overlap rule of tm_conv_s8). A lone
         * last pixel is computed twice into the same output. */
        const int8_t *a = pixel_1x1(&g, input, &at);
        next_pixel(&g, &at);
        const int lone = done + 1 == total;
        tm_dsp_widen(win, a, g.in_c);
        tm_dsp_widen(win + TM_DSP_PIXEL_B / 4, lone ? a : pixel_1x1(&g, input, &at), g.in_c);
        next_pixel(&g, &at);
        gemm(p, win, quads, y, lone ? 0 : g.out_c);
    }
}

/* ---- any filter: gathered windows --------------------------------------------------------- */

/* Where pixel *at's taps lie: rows [ky_lo, ky_hi) and columns [kx_lo, kx_hi) are inside the
 * image; `origin` is the input offset of tap (0, 0), an integer until it points inside. */
typedef struct {
    int32_t origin, ky_lo, ky_hi, kx_lo, kx_hi;
} taps;

static taps pixel_taps(const tm_conv_geometry *g, const dsp_pixel *at)
{
    const int32_t iy0 = at->oy * g->stride_h - g->pad_top, ix0 = at->ox * g->stride_w - g->pad_left;
    taps t;
    t.origin = ((at->b * g->in_h + iy0) * g->in_w + ix0) * g->in_c;
    tm_conv_tap_range(iy0, g->dil_h, g->k_h, g->in_h, &t.ky_lo, &t.ky_hi);
    tm_conv_tap_range(ix0, g->dil_w, g->k_w, g->in_w, &t.kx_lo, &t.kx_hi);
    return t;
}

/* in_c a multiple of 4: every tap is whole quads of the window, widened straight from the input
 * into the pixel's words (win: pixel A's or B's first quad); padded taps get the input zero
 * point, already widened (zp2). */
static void gather_quads(const tm_conv_geometry *g, const int8_t *input, int32_t zp2, const dsp_pixel *at,
                         int32_t *win)
{
    const taps t = pixel_taps(g, at);
    const int32_t step = TM_DSP_QUAD_BYTES / 4, tap_words = g->in_c / 4 * step;
    for (int32_t ky = 0; ky < g->k_h; ++ky) {
        const int32_t row = t.origin + ky * g->dil_h * g->in_w * g->in_c;
        for (int32_t kx = 0; kx < g->k_w; ++kx, win += tap_words) {
            if (ky >= t.ky_lo && ky < t.ky_hi && kx >= t.kx_lo && kx < t.kx_hi) {
                tm_dsp_widen(win, input + (row + kx * g->dil_w * g->in_c), g->in_c);
            } else {
                for (int32_t w = 0; w < tap_words; w += step) {
                    win[w] = zp2;
                    win[w + 1] = zp2;
                }
            }
        }
    }
}

/* Word copies while they fit (unaligned LDR/STR are single instructions on Armv7-M), then bytes. */
TM_DSP_NO_MEMCPY static void copy_s8(int8_t *dst, const int8_t *src, int32_t n)
{
    for (; n >= 4; n -= 4, dst += 4, src += 4) {
        tm_write_s8x4(dst, tm_read_s8x4(src));
    }
    for (; n > 0; --n) {
        *dst++ = *src++;
    }
}

TM_DSP_NO_MEMCPY static void fill_s8(int8_t *dst, int8_t v, int32_t n)
{
    for (; n > 0; --n) {
        *dst++ = v;
    }
}

/* Small windows of any in_c (first layers: 1-3 input channels): the window gathered into a
 * linear buffer (`stage`: TM_DSP_STAGE bytes, which codegen checks the window fits, its tail up
 * to a multiple of 4 already zero), padded taps at the input zero point, then widened into the
 * pixel's words. */
static void gather_staged(const tm_conv_geometry *g, const int8_t *input, int8_t pad, const dsp_pixel *at,
                          int8_t *stage, int32_t *win)
{
    const taps t = pixel_taps(g, at);
    const int32_t row = g->k_w * g->in_c, size = g->k_h * row;
    if (t.ky_lo > 0 || t.ky_hi < g->k_h || t.kx_lo > 0 || t.kx_hi < g->k_w) {
        fill_s8(stage, pad, size);
    }
    for (int32_t ky = t.ky_lo; ky < t.ky_hi; ++ky) {
        const int32_t at_row = t.origin + ky * g->dil_h * g->in_w * g->in_c;
        int8_t *d = stage + ky * row;
        if (g->dil_w == 1) {
            copy_s8(d + t.kx_lo * g->in_c, input + (at_row + t.kx_lo * g->in_c), (t.kx_hi - t.kx_lo) * g->in_c);
        } else {
            for (int32_t kx = t.kx_lo; kx < t.kx_hi; ++kx) {
                copy_s8(d + kx * g->in_c, input + (at_row + kx * g->dil_w * g->in_c), g->in_c);
            }
        }
    }
    tm_dsp_widen(win, stage, (size + 3) & ~3); /* whole words: the stage's tail is zero */
}

void tm_dsp_conv_s8(const tm_dsp_conv_params *p, const int8_t *input, int8_t *output, int8_t *scratch)
{
    const tm_conv_geometry g = p->geo;
    const int32_t size = g.k_h * g.k_w * g.in_c, quads = (size + 3) / 4;
    int32_t *const win = windows(scratch);
    const int32_t total = g.batches * g.out_h * g.out_w;
    const uint32_t zp16 = (uint16_t)(int16_t)p->input_zp;
    const int32_t zp2 = (int32_t)(zp16 | zp16 << 16);
    int32_t stage_words[TM_DSP_STAGE / 4] = {0}; /* the tail past `size` stays zero */
    int8_t *const stage = (int8_t *)(void *)stage_words;
    dsp_pixel at = {0, 0, 0};
    int8_t *y = output;
    for (int32_t done = 0; done < total; done += 2, y += 2 * g.out_c) {
        const int lone = done + 1 == total; /* computed twice into the same output */
        for (int32_t half = 0; half < 2; ++half) {
            int32_t *w = win + half * (TM_DSP_PIXEL_B / 4);
            if (g.in_c % 4 == 0) {
                gather_quads(&g, input, zp2, &at, w);
            } else {
                gather_staged(&g, input, (int8_t)p->input_zp, &at, stage, w);
            }
            if (!lone || half) {
                next_pixel(&g, &at);
            }
        }
        gemm(p, win, quads, y, lone ? 0 : g.out_c);
    }
}
