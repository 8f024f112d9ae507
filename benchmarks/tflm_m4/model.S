/* The model flatbuffer and its first input sample, straight from files (TFLM_MODEL_FILE,
 * TFLM_SAMPLE_FILE: -D strings from benchmarks/tflm_m4.py). Their own sections, so the firmware's
 * .text/.rodata sizes are TFLM + harness only and the model's flash is counted apart. */
    .section .model, "a"
    .balign 16
    .global g_model
g_model:
    .incbin TFLM_MODEL_FILE

    .section .sample, "a"
    .balign 4
    .global g_sample
    .global g_sample_end
g_sample:
    .incbin TFLM_SAMPLE_FILE
g_sample_end:
