/* DEPTHWISE_CONV_2D 3x3 (multiplier 1, no dilation) on Armv7E-M.
 *
 * Four channels at a time: one LDR brings a tap's four input channels, SXTB16 splits them into
 * the halves (x0, x2), (x1, x3), and SMLABB/SMLATT multiply them by weights codegen already
 * widened into the same pairs, so a tap costs 2 loads, 2 extensions and 4 MACs. The depthwise
 * products of one channel never share an accumulator, so SMLAD's pairing has nothing to pair
 * without repacking the input, which costs more than it saves. Everything a quad of channels
 * needs comes from one constant stream (tm_dsp_depthwise_params.quads): one pointer, which
 * leaves registers for the accumulators. */
#include "tm_dsp.h"
#include "tm_dsp_kernels.h"

#if defined(__GNUC__)
#define TM_DSP_UNROLL9 _Pragma("GCC unroll 9")
#else
#define TM_DSP_UNROLL9
#endif

#define BIAS 0
#define REQUANT 4 /* (multiplier, right shift) of channel j at REQUANT + 2 j */
#define TAP 12    /* the pair words of tap t at TAP + 2 t */

/* The per-layer values in locals: stores through int8_t * would otherwise reload them from *p. */
typedef struct {
    int32_t in_c, row, out_round, act_min, act_max, zp2;
} dw_layer;

TM_DSP_INLINE void mac_tap(int32_t *acc, int32_t even, int32_t odd, const int32_t *w)
{
    acc[0] = tm_smlabb(even, w[0], acc[0]);
    acc[2] = tm_smlatt(even, w[0], acc[2]);
    acc[1] = tm_smlabb(odd, w[1], acc[1]);
    acc[3] = tm_smlatt(odd, w[1], acc[3]);
    TM_DSP_FENCE4(acc[0], acc[1], acc[2], acc[3]);
}

TM_DSP_INLINE void mac_input(int32_t *acc, const int8_t *x, const int32_t *w)
{
    const int32_t v = tm_read_s8x4(x);
    mac_tap(acc, tm_sxtb16(v), tm_sxtb16_ror8(v), w);
}

TM_DSP_INLINE int8_t out_one(const dw_layer *d, const int32_t *k, int32_t j, int32_t acc2, int clamp)
{
    int32_t v = tm_dsp_requant2(acc2, k[REQUANT + 2 * j], k[REQUANT + 2 * j + 1], d->out_round);
    if (clamp) {
        v = tm_dsp_clamp(v, d->act_min, d->act_max);
    }
    return (int8_t)v;
}

TM_DSP_INLINE void put_quad(const dw_layer *d, const int32_t *k, const int32_t *acc, int8_t *y, int clamp)
{
    y[0] = out_one(d, k, 0, acc[0], clamp);
    y[1] = out_one(d, k, 1, acc[1], clamp);
    y[2] = out_one(d, k, 2, acc[2], clamp);
    y[3] = out_one(d, k, 3, acc[3], clamp);
}

/* An output pixel whose nine taps all lie inside the image; x: its top-left tap. */
TM_DSP_INLINE void pixel_inside(const dw_layer *d, const int32_t *k, const int8_t *x, int8_t *y, int clamp)
{
    const int32_t c1 = d->in_c, c2 = 2 * d->in_c, row = d->row;
    for (int32_t c = d->in_c; c > 0; c -= 4, x += 4, y += 4, k += TM_DSP_DW_WORDS) {
        int32_t acc[4] = {k[BIAS], k[BIAS + 1], k[BIAS + 2], k[BIAS + 3]};
        const int8_t *r = x;
        TM_DSP_OPAQUE(r);
        mac_input(acc, r, k + TAP + 0);
        mac_input(acc, r + c1, k + TAP + 2);
        mac_input(acc, r + c2, k + TAP + 4);
        r += row;
        TM_DSP_OPAQUE(r);
        mac_input(acc, r, k + TAP + 6);
        mac_input(acc, r + c1, k + TAP + 8);
        mac_input(acc, r + c2, k + TAP + 10);
        r += row;
        TM_DSP_OPAQUE(r);
        mac_input(acc, r, k + TAP + 12);
        mac_input(acc, r + c1, k + TAP + 14);
        mac_input(acc, r + c2, k + TAP + 16);
        put_quad(d, k, acc, y, clamp);
    }
}

/* An output pixel at the border: tap t = 3 ky + kx reads the input only if bit t of `inside`
 * is set, else the input zero point (what the folded bias expects a padded tap to read). `at`
 * is the offset of the pixel's top-left tap, which may lie outside the image: offsets stay
 * integers until they point inside it. */
TM_DSP_INLINE void pixel_border(const dw_layer *d, const int32_t *k, const int8_t *x, int32_t at, uint32_t inside,
                                int8_t *y, int clamp)
{
    for (int32_t c = 0; c < d->in_c; c += 4, k += TM_DSP_DW_WORDS) {
        int32_t acc[4] = {k[BIAS], k[BIAS + 1], k[BIAS + 2], k[BIAS + 3]};
        TM_DSP_UNROLL9 for (int32_t t = 0; t < 9; ++t) {
            if ((inside >> t) & 1u) {
                mac_input(acc, x + (at + (t / 3) * d->row + (t % 3) * d->in_c + c), k + TAP + 2 * t);
            } else {
                mac_tap(acc, d->zp2, d->zp2, k + TAP + 2 * t);
            }
        }
        put_quad(d, k, acc, y + c, clamp);
    }
}

/* Bits of the taps 0..2 of an axis whose coordinate origin + k lies in [0, size). */
static uint32_t axis_inside(int32_t origin, int32_t size)
{
    return (uint32_t)(origin >= 0 && origin < size) | (uint32_t)(origin + 1 >= 0 && origin + 1 < size) << 1
           | (uint32_t)(origin + 2 >= 0 && origin + 2 < size) << 2;
}

TM_DSP_INLINE void depthwise(const tm_dsp_depthwise_params *p, const int8_t *input, int8_t *output, int clamp)
{
    const tm_conv_geometry g = p->geo;
    const uint32_t zp16 = (uint16_t)(int16_t)p->input_zp;
    const dw_layer d = {g.in_c, g.in_w * g.in_c, p->out_round, p->act_min, p->act_max, (int32_t)(zp16 | zp16 << 16)};
    const int32_t *const k = p->quads;
    int8_t *y = output;
    for (int32_t b = 0; b < g.batches; ++b) {
        const int8_t *x = input + b * g.in_h * d.row;
        for (int32_t oy = 0; oy < g.out_h; ++oy) {
            const int32_t iy0 = oy * g.stride_h - g.pad_top;
            const uint32_t rows = axis_inside(iy0, g.in_h);
            for (int32_t ox = 0; ox < g.out_w; ++ox, y += g.out_c) {
                const int32_t ix0 = ox * g.stride_w - g.pad_left;
                const uint32_t cols = axis_inside(ix0, g.in_w);
                const int32_t at = iy0 * d.row + ix0 * g.in_c;
                if ((rows & cols) == 7u) {
                    pixel_inside(&d, k, x + at, y, clamp);
                } else { /* tap (ky, kx) is bit 3 ky + kx */
                    const uint32_t inside = (rows & 1u ? cols : 0u) | (rows & 2u ? cols << 3 : 0u)
                                            | (rows & 4u ? cols << 6 : 0u);
                    pixel_border(&d, k, x, at, inside, y, clamp);
                }
            }
        }
    }
}

void tm_dsp_depthwise_3x3_s8(const tm_dsp_depthwise_params *p, const int8_t *input, int8_t *output)
{
    if (p->act_min > -128 || p->act_max < 127) {
        depthwise(p, input, output, 1);
    } else {
        depthwise(p, input, output, 0);
    }
}
