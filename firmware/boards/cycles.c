/* A 64-bit cycle counter from whatever the core offers.
 *
 * TM_CYCLES_DWT: DWT->CYCCNT, core clock cycles (Cortex-M3/M4/M7 silicon). 32 bits, widened
 *   in software: reads must come less than 2^32 cycles apart (20 s at 216 MHz), which the
 *   per-layer profile hooks guarantee.
 * TM_CYCLES_SYSTICK: SysTick at the core clock, 24 bits, widened by counting wraps in its
 *   interrupt. On silicon a tick is a core cycle. Under QEMU it runs on the virtual clock, which
 *   `-icount shift=0` advances 1 ns per instruction: a tick is 1e9 / TM_CLOCK_HZ instructions
 *   (QEMU implements no DWT cycle counter, so this is the only exact clock there). */
#include "tm_board.h"

#if TM_CYCLES_DWT

#define DEMCR 0xE000EDFCu
#define DWT_CTRL 0xE0001000u
#define DWT_CYCCNT 0xE0001004u
#define DWT_LAR 0xE0001FB0u

static uint32_t last, high;

void tm_cycles_init(void)
{
    TM_REG(DEMCR) |= 1u << 24;       /* TRCENA: power the DWT */
    TM_REG(DWT_LAR) = 0xC5ACCE55u;   /* Cortex-M7 locks DWT writes until this key is written */
    TM_REG(DWT_CYCCNT) = 0;
    TM_REG(DWT_CTRL) |= 1u;          /* CYCCNTENA */
    last = high = 0;
}

uint64_t tm_cycles(void)
{
    const uint32_t now = TM_REG(DWT_CYCCNT);
    if (now < last) {
        ++high;
    }
    last = now;
    return ((uint64_t)high << 32) | now;
}

#elif TM_CYCLES_SYSTICK

#define SYST_CSR 0xE000E010u
#define SYST_RVR 0xE000E014u
#define SYST_CVR 0xE000E018u
#define SYST_MAX 0x00FFFFFFu

static volatile uint32_t wraps;

void tm_systick_handler(void)
{
    ++wraps;
}

void tm_cycles_init(void)
{
    TM_REG(SYST_RVR) = SYST_MAX;
    TM_REG(SYST_CVR) = 0;
    TM_REG(SYST_CSR) = 7u; /* enable, interrupt on wrap, core clock */
}

uint64_t tm_cycles(void)
{
    uint32_t hi, lo;
    do { /* a wrap between the two reads shows up as a changed `wraps`: read again */
        hi = wraps;
        lo = TM_REG(SYST_CVR);
    } while (hi != wraps);
    return ((uint64_t)hi << 24) + (SYST_MAX - lo); /* SysTick counts down */
}

#else
#error "tm_board_config.h must define TM_CYCLES_DWT or TM_CYCLES_SYSTICK"
#endif
