#include "tm_pool.h"

#include "tm_quant.h"

/* The part of a window that lies inside the image: [y0, y1) x [x0, x1) in input coordinates. */
typedef struct {
    int32_t y0, y1, x0, x1;
} window;

static window clip_window(const tm_pool_params *p, int32_t oy, int32_t ox)
{
    const int32_t iy = oy * p->stride_h - p->pad_h;
    const int32_t ix = ox * p->stride_w - p->pad_w;
    window w;
    w.y0 = iy > 0 ? iy : 0;
    w.x0 = ix > 0 ? ix : 0;
    w.y1 = iy + p->filter_h < p->in_h ? iy + p->filter_h : p->in_h;
    w.x1 = ix + p->filter_w < p->in_w ? ix + p->filter_w : p->in_w;
    return w;
}

/* Rounds half away from zero like TFLite's reference, using C's truncating division. */
static int32_t rounded_average(int32_t sum, int32_t count)
{
    return sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
}

/* mode 0: average, 1: max; one loop nest so both keep the documented write order. */
static void pool(const tm_pool_params *p, const int8_t *input, int8_t *output, int mode)
{
    const int32_t row = p->in_w * p->channels;
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *image = input + b * p->in_h * row;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            for (int32_t ox = 0; ox < p->out_w; ++ox) {
                const window w = clip_window(p, oy, ox);
                for (int32_t c = 0; c < p->channels; ++c) {
                    int32_t acc = mode ? -128 : 0;
                    for (int32_t y = w.y0; y < w.y1; ++y) {
                        for (int32_t x = w.x0; x < w.x1; ++x) {
                            const int32_t v = image[y * row + x * p->channels + c];
                            acc = mode ? (v > acc ? v : acc) : acc + v;
                        }
                    }
                    if (!mode) {
                        acc = rounded_average(acc, (w.y1 - w.y0) * (w.x1 - w.x0));
                    }
                    *output++ = tm_clamp_s8(acc, p->act_min, p->act_max);
                }
            }
        }
    }
}

void tm_avg_pool_s8(const tm_pool_params *p, const int8_t *input, int8_t *output)
{
    pool(p, input, output, 0);
}

void tm_max_pool_s8(const tm_pool_params *p, const int8_t *input, int8_t *output)
{
    pool(p, input, output, 1);
}

void tm_mean_s8(const tm_mean_params *p, const int8_t *input, int8_t *output)
{
    /* The innermost reduced dimension is a plain strided loop (the whole box, usually: codegen
     * merges contiguous axes, and H x W of a global average pool is one); the index walk covers
     * the others. No reduced dimension: one element. */
    const int32_t last = p->red_dims - 1;
    const int32_t n = last >= 0 ? p->red_shape[last] : 1, step = last >= 0 ? p->red_stride[last] : 0;
    int32_t out_idx[TM_MAX_DIMS] = {0};
    do {
        const int8_t *base = input + tm_index_offset(out_idx, p->out_stride, p->out_dims);
        int32_t red_idx[TM_MAX_DIMS] = {0};
        int32_t sum = 0;
        do {
            const int8_t *x = base + tm_index_offset(red_idx, p->red_stride, last);
            for (int32_t i = 0; i < n; ++i) {
                sum += x[i * step];
            }
        } while (tm_index_next(red_idx, p->red_shape, last));
        /* QuantizedMeanOrSum's int32 MultiplyByQuantizedMultiplier: double rounding in LiteRT. */
        const int32_t acc = tm_requantize_double_rounding(sum - p->sum_offset, p->multiplier, p->shift)
                          + p->output_offset;
        *output++ = tm_clamp_s8(acc, -128, 127);
    } while (tm_index_next(out_idx, p->out_shape, p->out_dims));
}
