#include "tm_elementwise.h"

#include "tm_quant.h"

/* ADD and MUL requantize with gemmlowp's double rounding: LiteRT BUILTIN_REF's int8 ADD
 * (MultiplyByQuantizedMultiplierSmallerThanOneExp) and MUL (the int32 MultiplyByQuantizedMultiplier)
 * match it bit for bit, and single rounding differs by 1 LSB where the first rounding hits a half. */
static inline int32_t requant(int32_t x, int32_t multiplier, int32_t shift)
{
    return tm_requantize_double_rounding(x, multiplier, shift);
}

void tm_broadcast_rows(const tm_broadcast *bc, const void *p, const int8_t *a, const int8_t *b, int8_t *out,
                       tm_row_fn row)
{
    const int32_t last = bc->dims - 1;
    const int32_t n = bc->shape[last];
    int32_t idx[TM_MAX_DIMS] = {0};
    do {
        row(p, a + tm_index_offset(idx, bc->a_stride, last), bc->a_stride[last],
            b + tm_index_offset(idx, bc->b_stride, last), bc->b_stride[last], out, n);
        out += n;
    } while (tm_index_next(idx, bc->shape, last));
}

/* TFLite's int8 ADD: both inputs are brought to a common scale with 20 bits of headroom, summed,
 * then rescaled to the output. */
static void add_row(const void *vp, const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step,
                    int8_t *out, int32_t n)
{
    const tm_add_params *p = (const tm_add_params *)vp;
    for (int32_t i = 0; i < n; ++i) {
        const int32_t x = (a[i * a_step] + p->a_offset) * (1 << p->left_shift);
        const int32_t y = (b[i * b_step] + p->b_offset) * (1 << p->left_shift);
        const int32_t sum = requant(x, p->a_multiplier, p->a_shift) + requant(y, p->b_multiplier, p->b_shift);
        const int32_t acc = requant(sum, p->output_multiplier, p->output_shift) + p->output_offset;
        out[i] = tm_clamp_s8(acc, p->act_min, p->act_max);
    }
}

static void mul_row(const void *vp, const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step,
                    int8_t *out, int32_t n)
{
    const tm_mul_params *p = (const tm_mul_params *)vp;
    for (int32_t i = 0; i < n; ++i) {
        const int32_t prod = (a[i * a_step] + p->a_offset) * (b[i * b_step] + p->b_offset);
        const int32_t acc = requant(prod, p->output_multiplier, p->output_shift) + p->output_offset;
        out[i] = tm_clamp_s8(acc, p->act_min, p->act_max);
    }
}

void tm_add_s8(const tm_add_params *p, const int8_t *a, const int8_t *b, int8_t *output)
{
    tm_broadcast_rows(&p->bc, p, a, b, output, add_row);
}

void tm_add_const_s8(const tm_add_params *p, const int8_t *a, int8_t *output)
{
    tm_broadcast_rows(&p->bc, p, a, p->b_const, output, add_row);
}

void tm_mul_s8(const tm_mul_params *p, const int8_t *a, const int8_t *b, int8_t *output)
{
    tm_broadcast_rows(&p->bc, p, a, b, output, mul_row);
}

void tm_mul_const_s8(const tm_mul_params *p, const int8_t *a, int8_t *output)
{
    tm_broadcast_rows(&p->bc, p, a, p->b_const, output, mul_row);
}
