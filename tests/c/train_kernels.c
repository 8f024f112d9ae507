/* Runs the training kernels (firmware/kernels/train) on cases tests/test_train_kernels.py sends.
 *
 * stdin: records, each `i32 kernel` then that kernel's scalars and arrays (an array is `i32 n`
 * then n elements, little-endian); stdout: per record the arrays it produced, the same way.
 * Every array gets its own exact-size malloc, so ASan sees any read or write past one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tm_train.h"

enum { LOSS, MASK, COPY, CONV, DEPTHWISE, FC, AVG_POOL, MAX_POOL, MEAN, PAD };

static int eof_seen;

static void get(void *dst, size_t n)
{
    if (fread(dst, 1, n, stdin) != n) {
        eof_seen = 1;
        memset(dst, 0, n);
    }
}

static int32_t i32(void)
{
    int32_t v;
    get(&v, 4);
    return v;
}

static float f32(void)
{
    float v;
    get(&v, 4);
    return v;
}

/* An array of `size`-byte elements; *n receives its length. NULL when empty. */
static void *array(size_t size, int32_t *n)
{
    const int32_t len = i32();
    if (n != NULL) {
        *n = len;
    }
    if (len <= 0) {
        return NULL;
    }
    void *p = malloc((size_t)len * size);
    if (p == NULL) {
        exit(3);
    }
    get(p, (size_t)len * size);
    return p;
}

static void put(const void *src, int32_t n, size_t size)
{
    fwrite(&n, 4, 1, stdout);
    if (n > 0) {
        fwrite(src, size, (size_t)n, stdout);
    }
}

static void ints(int32_t *dst, int32_t n)
{
    for (int32_t i = 0; i < n; ++i) {
        dst[i] = i32();
    }
}

/* The optional update block: NULL when the record has none; masters set by tm_train_reset. */
static tm_train_update *read_update(const int8_t *weights0)
{
    if (!i32()) {
        return NULL;
    }
    tm_train_update *u = calloc(1, sizeof *u);
    u->channels = i32();
    u->taps = i32();
    u->channel_stride = i32();
    u->tap_stride = i32();
    u->weight_bytes = i32();
    u->w_channels = i32();
    u->input_zp = i32();
    u->weights0 = weights0;
    u->folded0 = array(4, NULL);
    u->bias0 = array(4, NULL);
    u->coef_w = array(4, NULL);
    u->coef_b = array(4, NULL);
    u->weights = u->w_channels > 0 ? malloc((size_t)u->weight_bytes) : NULL;
    u->folded = malloc(4 * (size_t)u->channels);
    u->w_master = u->w_channels > 0 ? malloc(4 * (size_t)(u->w_channels * u->taps)) : NULL;
    u->b_master = u->coef_b != NULL ? malloc(4 * (size_t)u->channels) : NULL;
    tm_train_reset(u);
    return u;
}

static void put_update(tm_train_update *u)
{
    if (u == NULL) {
        return;
    }
    put(u->weights, u->weights != NULL ? u->weight_bytes : 0, 1);
    put(u->folded, u->channels, 4);
    put(u->w_master, u->w_channels * u->taps, 4);
    put(u->b_master, u->b_master != NULL ? u->channels : 0, 4);
    free((void *)u->folded0), free((void *)u->bias0), free((void *)u->coef_w), free((void *)u->coef_b);
    free(u->weights), free(u->folded), free(u->w_master), free(u->b_master), free(u);
}

static tm_conv_geometry geometry(void)
{
    int32_t v[15];
    ints(v, 15);
    tm_conv_geometry g = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13], v[14]};
    return g;
}

static void conv(int depthwise)
{
    tm_train_conv_params p;
    memset(&p, 0, sizeof p);
    p.geo = geometry();
    p.groups = i32();
    p.depth_mult = i32();
    p.input_zp = i32();
    p.accumulate = i32();
    const int input_grad = i32();
    p.input_scale = f32();
    const float lr = f32();
    int32_t n_in, n_gx;
    int8_t *weights = array(1, NULL);
    float *w_scale = array(4, NULL), *grad_out = array(4, NULL), *grad_in = array(4, &n_gx);
    int8_t *input = array(1, &n_in);
    p.weights = weights;
    p.w_scale = w_scale;
    tm_train_update *u = read_update(weights);
    p.update = u;
    if (input_grad) {
        (depthwise ? tm_train_depthwise_input_grad : tm_train_conv_input_grad)(&p, grad_out, grad_in);
    }
    if (u != NULL) {
        float *scratch = malloc(4 * (size_t)u->taps);
        (depthwise ? tm_train_depthwise_update : tm_train_conv_update)(&p, input, grad_out, lr, scratch);
        free(scratch);
    }
    put(grad_in, n_gx, 4);
    put_update(u);
    free(weights), free(w_scale), free(grad_out), free(grad_in), free(input);
}

static void fully_connected(void)
{
    tm_train_fc_params p;
    memset(&p, 0, sizeof p);
    p.batches = i32();
    p.in_features = i32();
    p.out_features = i32();
    p.input_zp = i32();
    p.accumulate = i32();
    const int input_grad = i32();
    p.input_scale = f32();
    const float lr = f32();
    int32_t n_gx;
    int8_t *weights = array(1, NULL);
    float *w_scale = array(4, NULL), *grad_out = array(4, NULL), *grad_in = array(4, &n_gx);
    int8_t *input = array(1, NULL);
    p.weights = weights;
    p.w_scale = w_scale;
    tm_train_update *u = read_update(weights);
    p.update = u;
    if (input_grad) {
        tm_train_fc_input_grad(&p, grad_out, grad_in);
    }
    if (u != NULL) {
        tm_train_fc_update(&p, input, grad_out, lr);
    }
    put(grad_in, n_gx, 4);
    put_update(u);
    free(weights), free(w_scale), free(grad_out), free(grad_in), free(input);
}

static void shape_op(int kind)
{
    tm_train_pool_params pool;
    tm_train_mean_params mean;
    tm_train_pad_params pad;
    memset(&pool, 0, sizeof pool), memset(&mean, 0, sizeof mean), memset(&pad, 0, sizeof pad);
    if (kind == AVG_POOL || kind == MAX_POOL) {
        int32_t v[14];
        ints(v, 14);
        tm_pool_params q = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13]};
        pool.pool = q;
        pool.accumulate = i32();
    } else if (kind == MEAN) {
        mean.out_dims = i32();
        ints(mean.out_shape, TM_MAX_DIMS);
        ints(mean.out_stride, TM_MAX_DIMS);
        mean.red_dims = i32();
        ints(mean.red_shape, TM_MAX_DIMS);
        ints(mean.red_stride, TM_MAX_DIMS);
        mean.in_size = i32();
        mean.accumulate = i32();
        mean.count = f32();
    } else {
        pad.pad.dims = i32();
        ints(pad.pad.in_shape, TM_MAX_DIMS);
        ints(pad.pad.before, TM_MAX_DIMS);
        ints(pad.pad.after, TM_MAX_DIMS);
        pad.pad.pad_value = i32();
        pad.accumulate = i32();
    }
    int32_t n_gx;
    int8_t *input = array(1, NULL);
    float *grad_out = array(4, NULL), *grad_in = array(4, &n_gx);
    if (kind == AVG_POOL) {
        tm_train_avg_pool_backward(&pool, grad_out, grad_in);
    } else if (kind == MAX_POOL) {
        tm_train_max_pool_backward(&pool, input, grad_out, grad_in);
    } else if (kind == MEAN) {
        tm_train_mean_backward(&mean, grad_out, grad_in);
    } else {
        tm_train_pad_backward(&pad, grad_out, grad_in);
    }
    put(grad_in, n_gx, 4);
    free(input), free(grad_out), free(grad_in);
}

static void elementwise(int kind)
{
    int32_t n;
    if (kind == LOSS) {
        tm_train_loss_params p;
        p.classes = i32();
        p.scale = f32();
        p.zero_point = i32();
        const int32_t label = i32();
        int8_t *logits = array(1, NULL);
        float *grad = malloc(4 * (size_t)p.classes);
        const float loss = tm_train_loss(&p, logits, label, grad);
        const int32_t pred = tm_train_predict(&p, logits);
        put(grad, p.classes, 4);
        put(&loss, 1, 4);
        put(&pred, 1, 4);
        free(logits), free(grad);
    } else if (kind == MASK) {
        tm_train_mask_params p;
        p.size = i32();
        p.lo = i32();
        p.hi = i32();
        int8_t *out = array(1, NULL);
        float *grad = array(4, &n);
        tm_train_mask(&p, out, grad);
        put(grad, n, 4);
        free(out), free(grad);
    } else {
        tm_train_copy_params p;
        p.size = i32();
        p.accumulate = i32();
        float *src = array(4, NULL), *dst = array(4, &n);
        tm_train_copy(&p, src, dst);
        put(dst, n, 4);
        free(src), free(dst);
    }
}

int main(void)
{
    for (;;) {
        const int32_t kind = i32();
        if (eof_seen) {
            return 0;
        }
        if (kind == CONV || kind == DEPTHWISE) {
            conv(kind == DEPTHWISE);
        } else if (kind == FC) {
            fully_connected();
        } else if (kind >= AVG_POOL && kind <= PAD) {
            shape_op(kind);
        } else if (kind >= LOSS && kind <= COPY) {
            elementwise(kind);
        } else {
            fprintf(stderr, "unknown kernel %d\n", (int)kind);
            return 2;
        }
        if (eof_seen) {
            fprintf(stderr, "truncated record for kernel %d\n", (int)kind);
            return 2;
        }
    }
}
