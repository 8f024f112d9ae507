/* Reset, vector table and fault handling for every Cortex-M tinymem supports (v6-M and v7-M).
 * Only the 16 system vectors: the firmware polls its UART and uses no peripheral interrupt.
 * Symbols (__data_*, __bss_*, __stack_*) come from the generated linker script, link.ld. */
#include "tm_board.h"

int main(void);

extern uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[];
extern uint32_t __stack_limit[], __stack_top[], __ram_start[];

#define SCB_CPACR 0xE000ED88u
#define SCB_VTOR 0xE000ED08u
#define SCB_CFSR 0xE000ED28u
#define STACK_PAINT 0x5AA55AA5u

void tm_reset_handler(void) __attribute__((noreturn));
void tm_fault_handler(void);
void tm_idle_handler(void);
void tm_systick_handler(void) __attribute__((weak, alias("tm_idle_handler")));

typedef void (*tm_vector_t)(void);

__attribute__((section(".vectors"), used)) const tm_vector_t tm_vectors[16] = {
    (tm_vector_t)(uintptr_t)__stack_top,
    tm_reset_handler,
    tm_fault_handler, /* NMI */
    tm_fault_handler, /* HardFault */
    tm_fault_handler, /* MemManage (v7-M) */
    tm_fault_handler, /* BusFault (v7-M) */
    tm_fault_handler, /* UsageFault (v7-M) */
    0, 0, 0, 0,
    tm_idle_handler,  /* SVCall */
    tm_idle_handler,  /* DebugMonitor */
    0,
    tm_idle_handler,  /* PendSV */
    tm_systick_handler,
};

static void paint_stack(void)
{
    /* Leave the words the reset handler itself is using (a small margin below SP). */
    uint32_t *sp;
    __asm volatile("mov %0, sp" : "=r"(sp));
    for (uint32_t *p = __stack_limit; p < sp - 16; ++p) {
        *p = STACK_PAINT;
    }
}

uint32_t tm_stack_high_water(void)
{
    const uint32_t *p = __stack_limit;
    while (p < __stack_top && *p == STACK_PAINT) {
        ++p;
    }
    return (uint32_t)((uintptr_t)__stack_top - (uintptr_t)p);
}

uint32_t tm_stack_capacity(void)
{
    return (uint32_t)((uintptr_t)__stack_top - (uintptr_t)__stack_limit);
}

uint32_t tm_ram_static_bytes(void)
{
    return (uint32_t)((uintptr_t)__stack_limit - (uintptr_t)__ram_start);
}

void tm_reset_handler(void)
{
    /* Word copies: link.ld aligns these boundaries to 4 bytes. */
    for (uint32_t *src = __data_load, *dst = __data_start; dst < __data_end;) {
        *dst++ = *src++;
    }
    for (uint32_t *dst = __bss_start; dst < __bss_end;) {
        *dst++ = 0;
    }
#if defined(__ARM_FP)
    /* Built for an FPU: grant CP10/CP11 before the compiler's first floating-point instruction. */
    TM_REG(SCB_CPACR) |= 0xFu << 20;
    __asm volatile("dsb\n\tisb" ::: "memory");
#endif
    /* Boot loaders (nano33ble, RP2040 boot2) may leave VTOR elsewhere. */
    TM_REG(SCB_VTOR) = (uint32_t)(uintptr_t)tm_vectors;
    paint_stack();
    tm_board_exit(main());
}

void tm_idle_handler(void)
{
}

__attribute__((weak)) void tm_board_fault(uint32_t pc, uint32_t status)
{
    (void)pc;
    (void)status;
    tm_board_exit(3);
}

/* Called from tm_fault_handler with the exception frame the core pushed: its PC is word 6. */
__attribute__((used)) static void fault_report(const uint32_t *frame)
{
#if defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__)
    const uint32_t status = TM_REG(SCB_CFSR);
#else
    const uint32_t status = 0; /* v6-M has no fault status registers */
#endif
    tm_board_fault(frame[6], status);
    tm_board_exit(3);
}

/* Naked so that SP is still the exception frame when we read it (we run on MSP only). */
__attribute__((naked)) void tm_fault_handler(void)
{
    __asm volatile(
        "mrs r0, msp\n\t"
        "ldr r1, =fault_report\n\t"
        "bx r1\n\t"
        ".ltorg\n\t");
}

void tm_board_exit(int status)
{
#if TM_EMULATED
    /* Semihosting SYS_EXIT_EXTENDED (0x20): QEMU exits with `status` (needs -semihosting-config
     * enable=on). Never on silicon: without a debugger attached the BKPT would fault. */
    volatile uint32_t block[2] = {0x20026u /* ADP_Stopped_ApplicationExit */, (uint32_t)status};
    register uint32_t r0 __asm("r0") = 0x20u;
    register volatile uint32_t *r1 __asm("r1") = block;
    __asm volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
#else
    (void)status;
#endif
    for (;;) {
        __asm volatile("wfi");
    }
}
