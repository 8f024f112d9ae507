/* MAX_POOL_2D on Armv7E-M: the max of four int8 channels in two instructions (tm_max_s8x4). */
#include "tm_dsp.h"
#include "tm_dsp_kernels.h"

void tm_dsp_max_pool_s8(const tm_pool_params *p, const int8_t *input, int8_t *output)
{
    const int32_t row = p->in_w * p->channels;
    const int32_t lo4 = (int32_t)(0x01010101u * (uint8_t)p->act_min);
    const int32_t hi4 = (int32_t)(0x01010101u * (uint8_t)p->act_max);
    int8_t *y = output;
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *image = input + b * p->in_h * row;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            /* the part of the window inside the image (taps outside are skipped, as TFLite does) */
            const int32_t iy = oy * p->stride_h - p->pad_h;
            const int32_t y0 = iy > 0 ? iy : 0, y1 = iy + p->filter_h < p->in_h ? iy + p->filter_h : p->in_h;
            for (int32_t ox = 0; ox < p->out_w; ++ox) {
                const int32_t ix = ox * p->stride_w - p->pad_w;
                const int32_t x0 = ix > 0 ? ix : 0, x1 = ix + p->filter_w < p->in_w ? ix + p->filter_w : p->in_w;
                const int8_t *first = image + y0 * row + x0 * p->channels;
                for (int32_t c = 0; c < p->channels; c += 4, y += 4) {
                    int32_t m = lo4; /* the clamp's lower bound is the max's start (>= -128) */
                    for (int32_t wy = y0; wy < y1; ++wy) {
                        const int8_t *x = first + (wy - y0) * row + c;
                        for (int32_t wx = x0; wx < x1; ++wx, x += p->channels) {
                            m = tm_max_s8x4(tm_read_s8x4(x), m);
                        }
                    }
                    tm_write_s8x4(y, ~tm_max_s8x4(~m, ~hi4)); /* min(m, hi) = ~max(~m, ~hi) */
                }
            }
        }
    }
}
