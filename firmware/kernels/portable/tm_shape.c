#include "tm_shape.h"

/* Byte loops rather than memcpy/memset: the planner may overlap output and input, and its rule
 * assumes exactly this ascending read-then-write order. */
static int8_t *fill(int8_t *out, int32_t n, int8_t v)
{
    for (int32_t i = 0; i < n; ++i) {
        out[i] = v;
    }
    return out + n;
}

static int8_t *copy(int8_t *out, const int8_t *in, int32_t n)
{
    for (int32_t i = 0; i < n; ++i) {
        out[i] = in[i];
    }
    return out + n;
}

void tm_pad_s8(const tm_pad_params *p, const int8_t *input, int8_t *output)
{
    const int32_t last = p->dims - 1;
    const int8_t v = (int8_t)p->pad_value;
    const int32_t in_row = p->in_shape[last];
    int32_t out_shape[TM_MAX_DIMS];
    int32_t idx[TM_MAX_DIMS] = {0};
    for (int32_t d = 0; d < p->dims; ++d) {
        out_shape[d] = p->before[d] + p->in_shape[d] + p->after[d];
    }
    /* One output row per outer index; input rows are consumed in order, so the input pointer
     * just advances. */
    do {
        int inside = 1;
        for (int32_t d = 0; d < last; ++d) {
            inside &= idx[d] >= p->before[d] && idx[d] < p->before[d] + p->in_shape[d];
        }
        if (inside) {
            output = fill(output, p->before[last], v);
            output = copy(output, input, in_row);
            output = fill(output, p->after[last], v);
            input += in_row;
        } else {
            output = fill(output, out_shape[last], v);
        }
    } while (tm_index_next(idx, out_shape, last));
}

void tm_concat_s8(const tm_concat_params *p, const int8_t *const *inputs, int8_t *output)
{
    for (int32_t o = 0; o < p->outer; ++o) {
        for (int32_t k = 0; k < p->inputs; ++k) {
            output = copy(output, inputs[k] + o * p->chunk[k], p->chunk[k]);
        }
    }
}
