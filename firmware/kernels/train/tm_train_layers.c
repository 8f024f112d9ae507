/* Backward of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED: input gradients through the weights
 * the forward read, then the channel-by-channel update (operator reordering). */
#include "tm_train_impl.h"

/* Calls body(b, iy0, ix0, pixel) for every output pixel in raster order: iy0, ix0 is the input
 * coordinate of its top-left tap, pixel its index. A macro keeps the loops flat in the kernels. */
#define TM_FOR_EACH_PIXEL(g, body)                                                      \
    for (int32_t b = 0, pixel = 0; b < (g).batches; ++b) {                              \
        for (int32_t oy = 0; oy < (g).out_h; ++oy) {                                    \
            for (int32_t ox = 0; ox < (g).out_w; ++ox, ++pixel) {                       \
                const int32_t iy0 = oy * (g).stride_h - (g).pad_top;                    \
                const int32_t ix0 = ox * (g).stride_w - (g).pad_left;                   \
                body                                                                    \
            }                                                                           \
        }                                                                               \
    }

/* Calls body(at, tap) for every tap of the window at (iy0, ix0) inside the image: at is the
 * element offset of its input pixel (channel 0), tap its row-major index in the filter. */
#define TM_FOR_EACH_TAP(g, b, iy0, ix0, body)                                           \
    for (int32_t ky = 0; ky < (g).k_h; ++ky) {                                          \
        const int32_t iy = (iy0) + ky * (g).dil_h;                                      \
        if (iy < 0 || iy >= (g).in_h) {                                                 \
            continue;                                                                   \
        }                                                                               \
        for (int32_t kx = 0; kx < (g).k_w; ++kx) {                                      \
            const int32_t ix = (ix0) + kx * (g).dil_w;                                  \
            if (ix < 0 || ix >= (g).in_w) {                                             \
                continue;                                                               \
            }                                                                           \
            const int32_t at = (((b) * (g).in_h + iy) * (g).in_w + ix) * (g).in_c;      \
            const int32_t tap = ky * (g).k_w + kx;                                      \
            body                                                                        \
        }                                                                               \
    }

static int32_t input_size(const tm_conv_geometry *g)
{
    return g->batches * g->in_h * g->in_w * g->in_c;
}

/* ---- CONV_2D ---------------------------------------------------------------------------------- */

void tm_train_conv_input_grad(const tm_train_conv_params *p, const float *grad_out, float *grad_in)
{
    const tm_conv_geometry g = p->geo;
    const int32_t fc = g.in_c / p->groups, group_out = g.out_c / p->groups, taps = g.k_h * g.k_w * fc;
    tm_train_begin(grad_in, input_size(&g), p->accumulate);
    TM_FOR_EACH_PIXEL(g, {
        const float *gy = grad_out + pixel * g.out_c;
        for (int32_t oc = 0; oc < g.out_c; ++oc) {
            const float t = gy[oc] * p->w_scale[oc];
            if (t == 0.0f) {
                continue; /* masked: adds nothing */
            }
            const int8_t *w = p->weights + oc * taps;
            const int32_t c0 = oc / group_out * fc;
            TM_FOR_EACH_TAP(g, b, iy0, ix0, {
                float *gx = grad_in + at + c0;
                const int8_t *wt = w + tap * fc;
                for (int32_t c = 0; c < fc; ++c) {
                    gx[c] += t * (float)wt[c];
                }
            })
        }
    })
}

void tm_train_conv_update(const tm_train_conv_params *p, const int8_t *input, const float *grad_out, float lr,
                          float *scratch)
{
    const tm_conv_geometry g = p->geo;
    const tm_train_update *u = p->update;
    const int32_t fc = g.in_c / p->groups, group_out = g.out_c / p->groups;
    for (int32_t oc = 0; oc < tm_train_changed_channels(u); ++oc) {
        const int weights = oc < u->w_channels;
        tm_train_begin(scratch, weights ? u->taps : 0, 0);
        const int32_t c0 = oc / group_out * fc;
        float gb = 0.0f;
        TM_FOR_EACH_PIXEL(g, {
            const float gy = grad_out[pixel * g.out_c + oc];
            gb += gy;
            if (weights && gy != 0.0f) {
                TM_FOR_EACH_TAP(g, b, iy0, ix0, {
                    const int8_t *x = input + at + c0;
                    float *gw = scratch + tap * fc;
                    for (int32_t c = 0; c < fc; ++c) {
                        gw[c] += gy * tm_train_real(p->input_scale, x[c], p->input_zp);
                    }
                })
            }
        })
        int32_t row_sum = 0;
        for (int32_t k = 0; weights && k < u->taps; ++k) {
            row_sum += tm_train_step_weight(u, oc, k, scratch[k], lr);
        }
        tm_train_finish_channel(u, oc, row_sum, gb, lr);
    }
}

/* ---- DEPTHWISE_CONV_2D ------------------------------------------------------------------------ */

void tm_train_depthwise_input_grad(const tm_train_conv_params *p, const float *grad_out, float *grad_in)
{
    const tm_conv_geometry g = p->geo;
    tm_train_begin(grad_in, input_size(&g), p->accumulate);
    TM_FOR_EACH_PIXEL(g, {
        const float *gy = grad_out + pixel * g.out_c;
        for (int32_t oc = 0; oc < g.out_c; ++oc) {
            const float t = gy[oc] * p->w_scale[oc];
            if (t == 0.0f) {
                continue;
            }
            const int32_t ic = oc / p->depth_mult;
            TM_FOR_EACH_TAP(g, b, iy0, ix0, { grad_in[at + ic] += t * (float)p->weights[tap * g.out_c + oc]; })
        }
    })
}

void tm_train_depthwise_update(const tm_train_conv_params *p, const int8_t *input, const float *grad_out, float lr,
                               float *scratch)
{
    const tm_conv_geometry g = p->geo;
    const tm_train_update *u = p->update;
    for (int32_t oc = 0; oc < tm_train_changed_channels(u); ++oc) {
        const int weights = oc < u->w_channels;
        tm_train_begin(scratch, weights ? u->taps : 0, 0);
        const int32_t ic = oc / p->depth_mult;
        float gb = 0.0f;
        TM_FOR_EACH_PIXEL(g, {
            const float gy = grad_out[pixel * g.out_c + oc];
            gb += gy;
            if (weights && gy != 0.0f) {
                TM_FOR_EACH_TAP(g, b, iy0, ix0, {
                    scratch[tap] += gy * tm_train_real(p->input_scale, input[at + ic], p->input_zp);
                })
            }
        })
        int32_t row_sum = 0;
        for (int32_t k = 0; weights && k < u->taps; ++k) {
            row_sum += tm_train_step_weight(u, oc, k, scratch[k], lr);
        }
        tm_train_finish_channel(u, oc, row_sum, gb, lr);
    }
}

/* ---- FULLY_CONNECTED -------------------------------------------------------------------------- */

void tm_train_fc_input_grad(const tm_train_fc_params *p, const float *grad_out, float *grad_in)
{
    const int32_t in_f = p->in_features, out_f = p->out_features;
    tm_train_begin(grad_in, p->batches * in_f, p->accumulate);
    for (int32_t b = 0; b < p->batches; ++b) {
        float *gx = grad_in + b * in_f;
        for (int32_t o = 0; o < out_f; ++o) {
            const float t = grad_out[b * out_f + o] * p->w_scale[o];
            if (t == 0.0f) {
                continue;
            }
            const int8_t *w = p->weights + o * in_f;
            for (int32_t i = 0; i < in_f; ++i) {
                gx[i] += t * (float)w[i];
            }
        }
    }
}

void tm_train_fc_update(const tm_train_fc_params *p, const int8_t *input, const float *grad_out, float lr)
{
    const tm_train_update *u = p->update;
    const int32_t in_f = p->in_features, out_f = p->out_features;
    for (int32_t oc = 0; oc < tm_train_changed_channels(u); ++oc) {
        float gb = 0.0f;
        for (int32_t b = 0; b < p->batches; ++b) {
            gb += grad_out[b * out_f + oc];
        }
        int32_t row_sum = 0;
        for (int32_t k = 0; oc < u->w_channels && k < in_f; ++k) {
            float gw = 0.0f;
            for (int32_t b = 0; b < p->batches; ++b) {
                gw += grad_out[b * out_f + oc] * tm_train_real(p->input_scale, input[b * in_f + k], p->input_zp);
            }
            row_sum += tm_train_step_weight(u, oc, k, gw, lr);
        }
        tm_train_finish_channel(u, oc, row_sum, gb, lr);
    }
}
