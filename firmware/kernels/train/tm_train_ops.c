/* The loss, the masks, parameter resets and the backward of the ops without parameters. */
#include "tm_train_impl.h"

void tm_train_reset(const tm_train_update *u)
{
    for (int32_t i = 0; u->weights != NULL && i < u->weight_bytes; ++i) {
        u->weights[i] = u->weights0[i];
    }
    for (int32_t oc = 0; oc < u->channels; ++oc) {
        u->folded[oc] = u->folded0[oc];
        for (int32_t k = 0; oc < u->w_channels && k < u->taps; ++k) {
            u->w_master[oc * u->taps + k] = (float)u->weights0[oc * u->channel_stride + k * u->tap_stride];
        }
        if (u->b_master != NULL) {
            u->b_master[oc] = (float)u->bias0[oc];
        }
    }
}

/* ---- loss and element-wise steps -------------------------------------------------------------- */

float tm_train_loss(const tm_train_loss_params *p, const int8_t *logits, int32_t label, float *grad)
{
    float top = tm_train_real(p->scale, logits[0], p->zero_point);
    for (int32_t j = 1; j < p->classes; ++j) {
        const float z = tm_train_real(p->scale, logits[j], p->zero_point);
        top = z > top ? z : top;
    }
    float sum = 0.0f;
    for (int32_t j = 0; j < p->classes; ++j) {
        grad[j] = expf(tm_train_real(p->scale, logits[j], p->zero_point) - top);
        sum += grad[j];
    }
    for (int32_t j = 0; j < p->classes; ++j) {
        grad[j] = grad[j] / sum - (j == label ? 1.0f : 0.0f);
    }
    /* -log(p_label) without forming p_label, which underflows for a confident wrong answer. */
    return logf(sum) - (tm_train_real(p->scale, logits[label], p->zero_point) - top);
}

int32_t tm_train_predict(const tm_train_loss_params *p, const int8_t *logits)
{
    int32_t best = 0;
    for (int32_t j = 1; j < p->classes; ++j) {
        best = logits[j] > logits[best] ? j : best;
    }
    return best;
}

void tm_train_mask(const tm_train_mask_params *p, const int8_t *output, float *grad)
{
    for (int32_t i = 0; i < p->size; ++i) {
        if (output[i] <= p->lo || output[i] >= p->hi) {
            grad[i] = 0.0f;
        }
    }
}

void tm_train_copy(const tm_train_copy_params *p, const float *grad_out, float *grad_in)
{
    for (int32_t i = 0; i < p->size; ++i) {
        grad_in[i] = p->accumulate ? grad_in[i] + grad_out[i] : grad_out[i];
    }
}

/* ---- pooling ------------------------------------------------------------------------------------ */

/* The part of pooling window (oy, ox) inside the image, as tm_pool.c clips it. */
typedef struct {
    int32_t y0, y1, x0, x1;
} pool_window;

static pool_window clip(const tm_pool_params *p, int32_t oy, int32_t ox)
{
    const int32_t iy = oy * p->stride_h - p->pad_h, ix = ox * p->stride_w - p->pad_w;
    pool_window w = {iy > 0 ? iy : 0, iy + p->filter_h < p->in_h ? iy + p->filter_h : p->in_h,
                     ix > 0 ? ix : 0, ix + p->filter_w < p->in_w ? ix + p->filter_w : p->in_w};
    return w;
}

/* mode 0: average, 1: max (from `input`); the loop nest of tm_pool.c. */
static void pool_backward(const tm_train_pool_params *tp, const int8_t *input, const float *grad_out, float *grad_in,
                          int mode)
{
    const tm_pool_params *p = &tp->pool;
    const int32_t row = p->in_w * p->channels;
    tm_train_begin(grad_in, p->batches * p->in_h * row, tp->accumulate);
    for (int32_t b = 0; b < p->batches; ++b) {
        const int32_t image = b * p->in_h * row;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            for (int32_t ox = 0; ox < p->out_w; ++ox) {
                const pool_window w = clip(p, oy, ox);
                for (int32_t c = 0; c < p->channels; ++c) {
                    const float gy = *grad_out++;
                    if (mode == 0) {
                        const float share = gy / (float)((w.y1 - w.y0) * (w.x1 - w.x0));
                        for (int32_t y = w.y0; y < w.y1; ++y) {
                            for (int32_t x = w.x0; x < w.x1; ++x) {
                                grad_in[image + y * row + x * p->channels + c] += share;
                            }
                        }
                        continue;
                    }
                    int32_t best = image + w.y0 * row + w.x0 * p->channels + c;
                    for (int32_t y = w.y0; y < w.y1; ++y) {
                        for (int32_t x = w.x0; x < w.x1; ++x) {
                            const int32_t at = image + y * row + x * p->channels + c;
                            best = input[at] > input[best] ? at : best;
                        }
                    }
                    grad_in[best] += gy;
                }
            }
        }
    }
}

void tm_train_avg_pool_backward(const tm_train_pool_params *p, const float *grad_out, float *grad_in)
{
    pool_backward(p, NULL, grad_out, grad_in, 0);
}

void tm_train_max_pool_backward(const tm_train_pool_params *p, const int8_t *input, const float *grad_out,
                                float *grad_in)
{
    pool_backward(p, input, grad_out, grad_in, 1);
}

/* ---- MEAN and PAD ------------------------------------------------------------------------------- */

void tm_train_mean_backward(const tm_train_mean_params *p, const float *grad_out, float *grad_in)
{
    tm_train_begin(grad_in, p->in_size, p->accumulate);
    int32_t out_idx[TM_MAX_DIMS] = {0};
    do {
        const float share = *grad_out++ / p->count;
        float *base = grad_in + tm_index_offset(out_idx, p->out_stride, p->out_dims);
        int32_t red_idx[TM_MAX_DIMS] = {0};
        do {
            base[tm_index_offset(red_idx, p->red_stride, p->red_dims)] += share;
        } while (tm_index_next(red_idx, p->red_shape, p->red_dims));
    } while (tm_index_next(out_idx, p->out_shape, p->out_dims));
}

void tm_train_pad_backward(const tm_train_pad_params *tp, const float *grad_out, float *grad_in)
{
    const tm_pad_params *p = &tp->pad;
    const int32_t last = p->dims - 1;
    int32_t size = 1, out_stride[TM_MAX_DIMS];
    for (int32_t d = last, s = 1; d >= 0; --d) {
        out_stride[d] = s;
        s *= p->before[d] + p->in_shape[d] + p->after[d];
        size *= p->in_shape[d];
    }
    tm_train_begin(grad_in, size, tp->accumulate);
    /* Input rows in order, each the matching stretch of an output row. */
    int32_t idx[TM_MAX_DIMS] = {0};
    do {
        int32_t at = p->before[last];
        for (int32_t d = 0; d < last; ++d) {
            at += (idx[d] + p->before[d]) * out_stride[d];
        }
        for (int32_t i = 0; i < p->in_shape[last]; ++i) {
            *grad_in++ += grad_out[at + i];
        }
    } while (tm_index_next(idx, p->in_shape, last));
}
