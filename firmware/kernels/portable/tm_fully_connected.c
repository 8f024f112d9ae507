#include "tm_fully_connected.h"

#include "tm_quant.h"

void tm_fully_connected_s8(const tm_fully_connected_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *x = input + b * p->in_features;
        int8_t *y = output + b * p->out_features;
        for (int32_t o = 0; o < p->out_features; ++o) {
            const int8_t *w = p->weights + o * p->in_features;
            int32_t acc = p->bias[o];
            for (int32_t i = 0; i < p->in_features; ++i) {
                acc += (int32_t)x[i] * (int32_t)w[i];
            }
            acc = tm_requantize(acc, p->multiplier[o], p->shift[o]) + p->output_offset;
            y[o] = tm_clamp_s8(acc, p->act_min, p->act_max);
        }
    }
}
