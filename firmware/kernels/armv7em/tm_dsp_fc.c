/* FULLY_CONNECTED on Armv7E-M: four outputs at a time over the GEMM stream (groups of four), the
 * input row read in int8x4 words (the portable kernel has no scratch, so the row is extended as
 * it is read, once per four outputs: 1.5 instructions per MAC). */
#include "tm_dsp.h"
#include "tm_dsp_kernels.h"
#include "tm_quant.h"

/* Single rounding, exactly tm_fully_connected_s8's: FC outputs are few, the MACs are the cost. */
static int8_t fc_out(const tm_dsp_fully_connected_params *p, int32_t acc, int32_t mult, int32_t shift)
{
    return tm_clamp_s8(tm_requantize(acc, mult, shift) + p->output_offset, p->act_min, p->act_max);
}

/* Elements 4q.. of the row of n, the last 1..3 and zeros (a row may end the arena: never read
 * past it). */
static int32_t row_word(const int8_t *x, int32_t q, int32_t n)
{
    uint32_t v = 0;
    for (int32_t k = 0; 4 * q + k < n; ++k) {
        v |= (uint32_t)(uint8_t)x[4 * q + k] << (8 * k);
    }
    return (int32_t)v;
}

/* *acc += the row's word (even, odd halves) times weight word w. */
TM_DSP_INLINE int32_t mac_word(int32_t acc, int32_t even, int32_t odd, int32_t w)
{
    return tm_smlad(odd, tm_sxtb16_ror8(w), tm_smlad(even, tm_sxtb16(w), acc));
}

/* Four accumulators += the row's word v times the group's four weight words at k. */
TM_DSP_INLINE void mac4(int32_t *a, int32_t v, const int32_t *k)
{
    const int32_t even = tm_sxtb16(v), odd = tm_sxtb16_ror8(v);
    a[0] = mac_word(a[0], even, odd, k[0]);
    a[1] = mac_word(a[1], even, odd, k[1]);
    a[2] = mac_word(a[2], even, odd, k[2]);
    a[3] = mac_word(a[3], even, odd, k[3]);
    TM_DSP_FENCE4(a[0], a[1], a[2], a[3]);
}

/* Outputs y[0..4) from their group of the stream, which it returns past. Each int8x4 word of
 * the row is extended once for all four channels. */
static const int32_t *four(const tm_dsp_fully_connected_params *p, const int32_t *k, const int8_t *x, int8_t *y)
{
    const int32_t len = p->in_features;
    int32_t a[4] = {k[0], k[1], k[2], k[3]};
    k += 4;
    const int8_t *const end = x + len / 4 * 4;
    for (; x != end; x += 4, k += 4) {
        mac4(a, tm_read_s8x4(x), k);
    }
    if (len & 3) {
        mac4(a, row_word(end, 0, len & 3), k);
        k += 4;
    }
    y[0] = fc_out(p, a[0], k[0], k[1]);
    y[1] = fc_out(p, a[1], k[2], k[3]);
    y[2] = fc_out(p, a[2], k[4], k[5]);
    y[3] = fc_out(p, a[3], k[6], k[7]);
    return k + 8;
}

/* One output of the channels left over, the same way. */
static const int32_t *one(const tm_dsp_fully_connected_params *p, const int32_t *k, const int8_t *x, int8_t *y)
{
    const int32_t len = p->in_features;
    int32_t a0 = *k++;
    for (int32_t q = 0; 4 * q < len; ++q, ++k) {
        const int32_t v = 4 * q + 4 <= len ? tm_read_s8x4(x + 4 * q) : row_word(x, q, len);
        a0 = mac_word(a0, tm_sxtb16(v), tm_sxtb16_ror8(v), k[0]);
    }
    *y = fc_out(p, a0, k[0], k[1]);
    return k + 2;
}

void tm_dsp_fully_connected_s8(const tm_dsp_fully_connected_params *p, const int8_t *input, int8_t *output)
{
    const int32_t outs = p->out_features;
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *x = input + b * p->in_features;
        int8_t *y = output + b * outs;
        const int32_t *k = p->stream;
        int32_t o = 0;
        for (; o + 4 <= outs; o += 4) {
            k = four(p, k, x, y + o);
        }
        for (; o < outs; ++o) {
            k = one(p, k, x, y + o);
        }
    }
}
