/* ADD on Armv7E-M: TFLite's int8 ADD (each input rescaled to a common scale, summed, rescaled to
 * the output: three double-rounding steps an element, tm_dsp_rescale each) bit for bit the
 * portable kernel (tm_elementwise.c), same parameters, same broadcasting, same write order.
 * |x| <= 255 * 2^20 for an input and the sum of two rescaled inputs is below 2^29, so every
 * value rescaled is below the 2^30 tm_dsp_rescale needs. */
#include "tm_dsp.h"
#include "tm_dsp_kernels.h"

static void add_row(const void *vp, const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step,
                    int8_t *out, int32_t n)
{
    const tm_add_params *p = (const tm_add_params *)vp;
    const int32_t up = p->left_shift + 1; /* 2x: the doubling SMMULR wants */
    const int32_t a0 = (int32_t)((uint32_t)p->a_offset << up), b0 = (int32_t)((uint32_t)p->b_offset << up);
    const tm_dsp_rescaler ra = tm_dsp_rescale_of(p->a_multiplier, p->a_shift), rb = tm_dsp_rescale_of(p->b_multiplier, p->b_shift);
    const tm_dsp_rescaler ro = tm_dsp_rescale_of(p->output_multiplier, p->output_shift);
    const int32_t lo = p->act_min, hi = p->act_max, zp = p->output_offset;
    for (int32_t i = 0; i < n; ++i, a += a_step, b += b_step) {
        const int32_t x = tm_dsp_rescale(a0 + (int32_t)((uint32_t)*a << up), ra);
        const int32_t y = tm_dsp_rescale(b0 + (int32_t)((uint32_t)*b << up), rb);
        const int32_t v = tm_ssat8(tm_dsp_rescale((x + y) * 2, ro) + zp);
        out[i] = (int8_t)tm_dsp_clamp(v, lo, hi);
    }
}

void tm_dsp_add_s8(const tm_add_params *p, const int8_t *a, const int8_t *b, int8_t *output)
{
    tm_broadcast_rows(&p->bc, p, a, b, output, add_row);
}

void tm_dsp_add_const_s8(const tm_add_params *p, const int8_t *a, int8_t *output)
{
    tm_broadcast_rows(&p->bc, p, a, p->b_const, output, add_row);
}
