/* RP2040: its UARTs are Arm PL011s. Brings up what the boot ROM leaves off: the 12 MHz crystal
 * (clk_ref and clk_sys move onto it, so clock_hz is exact), clk_peri, the UART and the GPIO
 * banks (out of reset), then routes the two pins to the UART (GPIO function 2). */
#include "tm_board.h"

#define CLR 0x3000u /* RP2040 atomic alias: writing 1s clears those bits */

#define RESETS_RESET 0x4000C000u
#define RESETS_DONE 0x4000C008u
#define RESET_BITS ((1u << 5) | (1u << 8) | (1u << 22)) /* io_bank0, pads_bank0, uart0 */

#define XOSC_CTRL 0x40024000u
#define XOSC_STATUS 0x40024004u
#define XOSC_STARTUP 0x4002400Cu
#define CLK_REF_CTRL 0x40008030u
#define CLK_REF_SELECTED 0x40008038u
#define CLK_SYS_CTRL 0x4000803Cu
#define CLK_SYS_SELECTED 0x40008044u
#define CLK_PERI_CTRL 0x40008048u
#define IO_CTRL(gpio) (0x40014004u + 8u * (gpio))

#define DR (TM_UART_BASE + 0x000u)
#define FR (TM_UART_BASE + 0x018u) /* bit 4: RX FIFO empty, bit 5: TX FIFO full */
#define IBRD (TM_UART_BASE + 0x024u)
#define FBRD (TM_UART_BASE + 0x028u)
#define LCR_H (TM_UART_BASE + 0x02Cu)
#define CR (TM_UART_BASE + 0x030u)

void tm_uart_init(void)
{
    TM_REG(XOSC_STARTUP) = (TM_CLOCK_HZ / 1000u + 128u) / 256u; /* ~1 ms, in units of 256 cycles */
    TM_REG(XOSC_CTRL) = 0xAA0u | (0xFABu << 12);               /* 1-15 MHz range, enable */
    while (!(TM_REG(XOSC_STATUS) & (1u << 31))) {
    }
    TM_REG(CLK_REF_CTRL) = 2u; /* clk_ref <- XOSC */
    while (TM_REG(CLK_REF_SELECTED) != (1u << 2)) {
    }
    TM_REG(CLK_SYS_CTRL) = 0u; /* clk_sys <- clk_ref */
    while (TM_REG(CLK_SYS_SELECTED) != 1u) {
    }
    TM_REG(CLK_PERI_CTRL) = 1u << 11; /* enable, source clk_sys */

    TM_REG(RESETS_RESET + CLR) = RESET_BITS;
    while ((TM_REG(RESETS_DONE) & RESET_BITS) != RESET_BITS) {
    }
    /* PL011 divisor in 1/64ths: clk / (16 * baud), rounded. */
    const uint32_t div64 = (4u * TM_CLOCK_HZ + TM_UART_BAUD / 2u) / TM_UART_BAUD;
    TM_REG(IBRD) = div64 >> 6;
    TM_REG(FBRD) = div64 & 63u;
    TM_REG(LCR_H) = (3u << 5) | (1u << 4); /* 8 bits, FIFOs on; this write latches the divisor */
    TM_REG(CR) = (1u << 0) | (1u << 8) | (1u << 9); /* UARTEN, TXE, RXE */
    TM_REG(IO_CTRL(TM_UART_TX_GPIO)) = 2u;
    TM_REG(IO_CTRL(TM_UART_RX_GPIO)) = 2u;
}

void tm_uart_write(const uint8_t *data, size_t n)
{
    for (size_t i = 0; i < n; ++i) {
        while (TM_REG(FR) & (1u << 5)) {
        }
        TM_REG(DR) = data[i];
    }
}

uint8_t tm_uart_getc(void)
{
    while (TM_REG(FR) & (1u << 4)) {
    }
    return (uint8_t)TM_REG(DR);
}
