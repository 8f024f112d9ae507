/* What the training kernels share: the rounding of masters into the int8/int32 working copies and
 * the per-channel update (docs/training.md, Update). Internal to firmware/kernels/train. */
#ifndef TM_TRAIN_IMPL_H
#define TM_TRAIN_IMPL_H

#include <math.h>
#include <stddef.h>

#include "tm_train.h"

/* The largest float32 below 2^31: bias masters round into int32 without overflowing. */
#define TM_TRAIN_BIAS_MAX 2147483520.0f

/* x = s * (float)(q - z) */
static inline float tm_train_real(float scale, int32_t q, int32_t zero_point)
{
    return scale * (float)(q - zero_point);
}

/* Wq = clamp(floorf(M + 0.5f), -127, 127) */
static inline int8_t tm_train_round_weight(float m)
{
    float v = floorf(m + 0.5f);
    v = v < -127.0f ? -127.0f : v;
    v = v > 127.0f ? 127.0f : v;
    return (int8_t)v;
}

/* bq = (int32)clamp(floorf(B + 0.5f), -2^31, TM_TRAIN_BIAS_MAX) */
static inline int32_t tm_train_round_bias(float b)
{
    float v = floorf(b + 0.5f);
    v = v < -2147483648.0f ? -2147483648.0f : v;
    v = v > TM_TRAIN_BIAS_MAX ? TM_TRAIN_BIAS_MAX : v;
    return (int32_t)v;
}

/* M -= lr * (coef * g) for weight k of updated channel oc; stores and returns the new Wq. */
static inline int32_t tm_train_step_weight(const tm_train_update *u, int32_t oc, int32_t k, float g, float lr)
{
    float *m = &u->w_master[oc * u->taps + k];
    *m -= lr * (u->coef_w[oc] * g);
    const int8_t q = tm_train_round_weight(*m);
    u->weights[oc * u->channel_stride + k * u->tap_stride] = q;
    return q;
}

/* Channels an update changes: the weight-updated ones, or all when the biases train. */
static inline int32_t tm_train_changed_channels(const tm_train_update *u)
{
    return u->b_master != NULL ? u->channels : u->w_channels;
}

/* After channel oc's weights (whose new sum is row_sum, when they are updated): its bias step,
 * then folded = bq - input_zp * sum(Wq), in uint32 so it wraps like the int32 the kernels add.
 * A channel with frozen weights keeps input_zp * sum = bias0 - folded0 from flash. */
static inline void tm_train_finish_channel(const tm_train_update *u, int32_t oc, int32_t row_sum, float gb, float lr)
{
    int32_t bq = u->bias0[oc];
    if (u->b_master != NULL) {
        u->b_master[oc] -= lr * (u->coef_b[oc] * gb);
        bq = tm_train_round_bias(u->b_master[oc]);
    }
    const uint32_t zp_sum = oc < u->w_channels ? (uint32_t)u->input_zp * (uint32_t)row_sum
                                               : (uint32_t)u->bias0[oc] - (uint32_t)u->folded0[oc];
    u->folded[oc] = (int32_t)((uint32_t)bq - zp_sum);
}

/* The gradient buffer a kernel writes: cleared first unless it sums into earlier gradients. */
static inline void tm_train_begin(float *grad, int32_t size, int32_t accumulate)
{
    if (!accumulate) {
        for (int32_t i = 0; i < size; ++i) {
            grad[i] = 0.0f;
        }
    }
}

#endif /* TM_TRAIN_IMPL_H */
