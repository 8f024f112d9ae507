/* Training kernels: the float32 backward pass and the SGD + QAS update of docs/training.md,
 * bit for bit the arithmetic of tinymem/train/reference.py except for the order of float sums.
 *
 * Same shape as the inference kernels: fn(const params *, inputs..., outputs...[, scratch]).
 * Gradients are float32 in real units, in arena buffers the training plan places
 * (tinymem/train/memory.py). An input gradient is written by the first op of the backward pass
 * that produces it (accumulate = 0) and summed into by the others (accumulate = 1). */
#ifndef TM_TRAIN_H
#define TM_TRAIN_H

#include <stdint.h>

#include "tm_conv.h"
#include "tm_pool.h"
#include "tm_shape.h"

/* The parameters of one layer the scheme updates, and their SRAM copies. Weight (oc, k) of the
 * kernel's array (k: the k-th weight feeding channel oc, filter order) is at
 * oc * channel_stride + k * tap_stride (conv, FC: taps, 1; depthwise: 1, channels). */
typedef struct {
    int32_t channels, taps;
    int32_t channel_stride, tap_stride;
    int32_t weight_bytes; /* of the kernel's weight array, padding included */
    int32_t w_channels;   /* the first w_channels channels' weights are updated (0: none) */
    int32_t input_zp;     /* the folded bias is bias - input_zp * sum(weights of the channel) */
    const int8_t *weights0;   /* flash: the model's weights (kernel layout) */
    const int32_t *folded0;   /* flash: the model's folded bias */
    const int32_t *bias0;     /* flash: the model's int32 bias (zeros without one) */
    const float *coef_w;      /* [channels]: the step is coef * gradient (QAS: s / s^2, else s) */
    const float *coef_b;      /* [channels], for bias scale input_scale * weight scale */
    int8_t *weights;          /* SRAM copy the forward reads (NULL when w_channels == 0) */
    int32_t *folded;          /* SRAM copy the forward reads */
    float *w_master;          /* [w_channels][taps] */
    float *b_master;          /* [channels], NULL when the biases are frozen */
} tm_train_update;

/* Parameters back to the model's: SRAM copies from flash, masters from the int8/int32 values. */
void tm_train_reset(const tm_train_update *u);

/* ---- loss and element-wise steps ---------------------------------------------------------- */

typedef struct {
    int32_t classes;
    float scale;        /* logits: z = scale * (q - zero_point) */
    int32_t zero_point;
} tm_train_loss_params;

/* Softmax cross-entropy of the int8 logits: writes dL/dz = softmax(z) - onehot(label) to grad
 * and returns log(sum exp(z - max)) - (z_label - max). label must lie in [0, classes). */
float tm_train_loss(const tm_train_loss_params *p, const int8_t *logits, int32_t label, float *grad);

/* The first largest logit. */
int32_t tm_train_predict(const tm_train_loss_params *p, const int8_t *logits);

typedef struct {
    int32_t size;
    int32_t lo, hi; /* the op's output clamp: the gradient passes where lo < q < hi */
} tm_train_mask_params;

/* In place: grad[i] = 0 where the int8 output saturated (straight-through elsewhere). */
void tm_train_mask(const tm_train_mask_params *p, const int8_t *output, float *grad);

typedef struct {
    int32_t size;
    int32_t accumulate;
} tm_train_copy_params;

/* grad_in (+)= grad_out: ADD (to each input), RELU/RELU6 (after the mask), RESHAPE. */
void tm_train_copy(const tm_train_copy_params *p, const float *grad_out, float *grad_in);

/* ---- layers with parameters --------------------------------------------------------------- */

typedef struct {
    tm_conv_geometry geo;
    int32_t groups;         /* CONV_2D: in_c / filter_c */
    int32_t depth_mult;     /* DEPTHWISE_CONV_2D: out_c / in_c */
    int32_t input_zp;
    float input_scale;
    const int8_t *weights;  /* what the forward reads: flash, or the SRAM copy */
    const float *w_scale;   /* [out_c] */
    int32_t accumulate;
    const tm_train_update *update; /* NULL: nothing of this op is updated */
} tm_train_conv_params;

/* The input gradient through the current (not yet updated) weights. */
void tm_train_conv_input_grad(const tm_train_conv_params *p, const float *grad_out, float *grad_in);
void tm_train_depthwise_input_grad(const tm_train_conv_params *p, const float *grad_out, float *grad_in);

/* Channel by channel: its weight gradient in `scratch` (k_h * k_w * filter_c floats; depthwise
 * k_h * k_w), applied at once, then its bias; the folded bias follows. */
void tm_train_conv_update(const tm_train_conv_params *p, const int8_t *input, const float *grad_out, float lr,
                          float *scratch);
void tm_train_depthwise_update(const tm_train_conv_params *p, const int8_t *input, const float *grad_out, float lr,
                               float *scratch);

typedef struct {
    int32_t batches, in_features, out_features;
    int32_t input_zp;
    float input_scale;
    const int8_t *weights;  /* [out][in] */
    const float *w_scale;   /* [out] */
    int32_t accumulate;
    const tm_train_update *update;
} tm_train_fc_params;

void tm_train_fc_input_grad(const tm_train_fc_params *p, const float *grad_out, float *grad_in);

/* Each weight's gradient is applied as soon as it is summed over the batches: no scratch. */
void tm_train_fc_update(const tm_train_fc_params *p, const int8_t *input, const float *grad_out, float lr);

/* ---- ops without parameters --------------------------------------------------------------- */

typedef struct {
    tm_pool_params pool;
    int32_t accumulate;
} tm_train_pool_params;

/* AVERAGE_POOL_2D: gy / (taps inside the image) to each of them. */
void tm_train_avg_pool_backward(const tm_train_pool_params *p, const float *grad_out, float *grad_in);

/* MAX_POOL_2D: gy to the first largest tap of each window (row-major), from the saved input. */
void tm_train_max_pool_backward(const tm_train_pool_params *p, const int8_t *input, const float *grad_out,
                                float *grad_in);

typedef struct {
    int32_t out_dims;
    int32_t out_shape[TM_MAX_DIMS], out_stride[TM_MAX_DIMS];
    int32_t red_dims;
    int32_t red_shape[TM_MAX_DIMS], red_stride[TM_MAX_DIMS];
    float count;      /* elements reduced into each output */
    int32_t in_size;
    int32_t accumulate;
} tm_train_mean_params;

/* MEAN: gy / count to every element of its reduced box (boxes as tm_mean_params has them). */
void tm_train_mean_backward(const tm_train_mean_params *p, const float *grad_out, float *grad_in);

typedef struct {
    tm_pad_params pad;
    int32_t accumulate;
} tm_train_pad_params;

/* PAD: the gradient of the unpadded region. */
void tm_train_pad_backward(const tm_train_pad_params *p, const float *grad_out, float *grad_in);

#endif /* TM_TRAIN_H */
