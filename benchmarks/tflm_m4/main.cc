// TFLite Micro on the emulated Cortex-M4 (QEMU mps2-an386): one model, one sample, one number.
//
// Built by benchmarks/tflm_m4.py against a TFLM static library (reference or CMSIS-NN kernels).
// The model and its first input sample arrive through model.S (.incbin, sections .model and
// .sample, so that arm-none-eabi-size lists them apart from TFLM's own .text/.rodata); the ops
// to register arrive as TFLM_NUM_OPS / TFLM_ADD_OPS from the generated model.h: only the ops the
// model uses, as a careful TFLM user would ship. Boot, UART and SysTick come from tinymem's own
// board support (firmware/boards/startup.c, uart_cmsdk.c, cycles.c).
//
// Printed on UART0, one "KEY value" per line, for the script to parse:
//   ARENA_USED n     interpreter.arena_used_bytes() after AllocateTensors()
//   TICKS n          SysTick ticks of the second Invoke() (the first one is a warm-up)
//   OUTPUT hex       the output tensor's bytes
//   STACK n          stack high-water mark (bytes), from startup.c's painted stack
//   OP tag n         with -DTFLM_PROFILE only: SysTick ticks of each op of the measured Invoke()
//                    (a separate diagnostic build: the profiler's own calls add instructions)
#include <cstdint>
#include <cstring>

#include "model.h"
#include "tensorflow/lite/micro/cortex_m_generic/debug_log_callback.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/micro/micro_profiler_interface.h"
#include "tensorflow/lite/schema/schema_generated.h"

extern "C" {
#include "tm_board.h"
extern const uint8_t g_model[];
extern const uint8_t g_sample[], g_sample_end[];
// startup.c does not run C++ constructors: main() walks .init_array itself (link.ld keeps it).
extern void (*__init_array_start[])(void);
extern void (*__init_array_end[])(void);
}

// The arena: static, in RAM (.bss). Its size comes from the script (-DTFLM_ARENA_BYTES): a probe
// build learns arena_used_bytes(), the measured build gets just that (+ a little).
alignas(16) static uint8_t g_arena[TFLM_ARENA_BYTES];

static void uart_puts(const char* s) {
  tm_uart_write(reinterpret_cast<const uint8_t*>(s), strlen(s));
}

// Raw hex, no printf: one line however big the output tensor is.
static void uart_hex(const uint8_t* data, size_t n) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; ++i) {
    const uint8_t pair[2] = {static_cast<uint8_t>(digits[data[i] >> 4]),
                             static_cast<uint8_t>(digits[data[i] & 15])};
    tm_uart_write(pair, 2);
  }
}

#ifdef TFLM_PROFILE
// Per-op ticks from tinymem's SysTick counter (TFLM's own MicroProfiler reads the DWT cycle
// counter, which QEMU does not implement). Events of the warm-up Invoke() are overwritten.
class TickProfiler : public tflite::MicroProfilerInterface {
 public:
  uint32_t BeginEvent(const char* tag) override {
    if (n_ == kMax) return kMax;
    tags_[n_] = tag;
    start_[n_] = tm_cycles();
    return n_++;
  }
  void EndEvent(uint32_t h) override {
    if (h < kMax) ticks_[h] = tm_cycles() - start_[h];
  }
  void Reset() { n_ = 0; }
  void Print() const {
    for (uint32_t i = 0; i < n_; ++i) {
      MicroPrintf("OP %s %lu", tags_[i], static_cast<unsigned long>(ticks_[i]));
    }
  }

 private:
  static constexpr uint32_t kMax = 256;
  const char* tags_[kMax];
  uint64_t start_[kMax], ticks_[kMax];
  uint32_t n_ = 0;
};
#define TFLM_PROFILER &profiler
#else
#define TFLM_PROFILER nullptr
#endif

static void set_input(tflite::MicroInterpreter& interpreter) {
  // Re-copied before every Invoke(): the memory planner may reuse the input buffer for
  // intermediate tensors once the first layer has read it.
  TfLiteTensor* in = interpreter.input(0);
  const size_t n = static_cast<size_t>(g_sample_end - g_sample);
  memcpy(in->data.raw, g_sample, n < in->bytes ? n : in->bytes);
}

int main() {
  for (auto** f = __init_array_start; f < __init_array_end; ++f) {
    (**f)();
  }
  tm_uart_init();
  RegisterDebugLogCallback(uart_puts);  // MicroPrintf (and TFLM's own errors) go to UART0
  tm_cycles_init();

  // Locals, not statics: a static with a destructor would pull in __cxa_atexit (and need
  // __dso_handle, which -nostartfiles leaves out) for objects that live until reset anyway.
  tflite::MicroMutableOpResolver<TFLM_NUM_OPS> resolver;
#ifdef TFLM_PROFILE
  TickProfiler profiler;
#endif
  TFLM_ADD_OPS(resolver);
  tflite::MicroInterpreter interpreter(tflite::GetModel(g_model), resolver, g_arena, sizeof(g_arena),
                                       nullptr, TFLM_PROFILER);
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    MicroPrintf("ERROR AllocateTensors");
    return 2;
  }
  MicroPrintf("ARENA_USED %lu", static_cast<unsigned long>(interpreter.arena_used_bytes()));
  if (interpreter.input(0)->bytes != static_cast<size_t>(g_sample_end - g_sample)) {
    MicroPrintf("ERROR input is %lu bytes, sample %lu",
                static_cast<unsigned long>(interpreter.input(0)->bytes),
                static_cast<unsigned long>(g_sample_end - g_sample));
    return 4;
  }
#ifndef TFLM_PROBE_ONLY
  set_input(interpreter);
  if (interpreter.Invoke() != kTfLiteOk) {  // warm-up: first-invoke work stays out of the count
    MicroPrintf("ERROR Invoke");
    return 5;
  }
  set_input(interpreter);
#ifdef TFLM_PROFILE
  profiler.Reset();
#endif
  const uint64_t t0 = tm_cycles();
  const TfLiteStatus status = interpreter.Invoke();
  const uint64_t t1 = tm_cycles();
  if (status != kTfLiteOk) {
    MicroPrintf("ERROR Invoke");
    return 5;
  }
  // newlib-nano's printf has no %llu: print the 64-bit count in two 32-bit halves.
  const uint64_t ticks = t1 - t0;
  MicroPrintf("TICKS %lu %lu", static_cast<unsigned long>(ticks >> 32),
              static_cast<unsigned long>(ticks & 0xFFFFFFFFu));
  const TfLiteTensor* out = interpreter.output(0);
  uart_puts("OUTPUT ");
  uart_hex(reinterpret_cast<const uint8_t*>(out->data.raw), out->bytes);
  uart_puts("\r\n");
#ifdef TFLM_PROFILE
  profiler.Print();
#endif
#endif
  MicroPrintf("STACK %lu", static_cast<unsigned long>(tm_stack_high_water()));
  MicroPrintf("DONE");
  return 0;
}
