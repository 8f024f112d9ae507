/* What the board main needs from a board: a UART, a cycle counter, the stack's high-water mark
 * and a way to stop. Each board project compiles startup.c, cycles.c and one uart_*.c; the
 * board's facts (addresses, pins, clock) arrive as macros from the generated tm_board_config.h. */
#ifndef TM_BOARD_H
#define TM_BOARD_H

#include <stddef.h>
#include <stdint.h>

#include "tm_board_config.h"

#define TM_REG(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

/* UART: 8N1 at TM_UART_BAUD. Blocking calls: the protocol is request/response. */
void tm_uart_init(void);
void tm_uart_write(const uint8_t *data, size_t n);
uint8_t tm_uart_getc(void);

/* Cycle counter, extended to 64 bits. TM_CYCLES_KIND says what one tick is (see cycles.c). */
void tm_cycles_init(void);
uint64_t tm_cycles(void);

/* Stack: startup.c paints the free RAM between .bss and the stack pointer; the deepest
 * overwritten word gives the high-water mark (bytes of stack ever used, main included). */
uint32_t tm_stack_high_water(void);
uint32_t tm_stack_capacity(void);
/* .data + .bss as linked (arena, runtime buffers, C library): RAM in use before any stack. */
uint32_t tm_ram_static_bytes(void);

/* Leave: emulated boards end QEMU through semihosting with this status; real boards idle. */
void tm_board_exit(int status) __attribute__((noreturn));

/* Called by the fault handler with the faulting PC and the fault status (CFSR on v7-M, else 0).
 * startup.c's weak version just exits with status 3; the board main reports it over the UART. */
void tm_board_fault(uint32_t pc, uint32_t status);

#endif /* TM_BOARD_H */
