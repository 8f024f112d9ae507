/* Arm CMSDK APB UART (the MPS2 FPGA images; QEMU's mps2-an385/386/500 model UART0 at 0x40004000). */
#include "tm_board.h"

#define DATA (TM_UART_BASE + 0x00u)
#define STATE (TM_UART_BASE + 0x04u) /* bit 0: TX buffer full, bit 1: RX buffer full */
#define CTRL (TM_UART_BASE + 0x08u)  /* bit 0: TX enable, bit 1: RX enable */
#define BAUDDIV (TM_UART_BASE + 0x10u)

void tm_uart_init(void)
{
    TM_REG(BAUDDIV) = TM_CLOCK_HZ / TM_UART_BAUD; /* QEMU ignores it; the FPGA needs it >= 16 */
    TM_REG(CTRL) = 3u;
}

void tm_uart_write(const uint8_t *data, size_t n)
{
    for (size_t i = 0; i < n; ++i) {
        while (TM_REG(STATE) & 1u) {
        }
        TM_REG(DATA) = data[i];
    }
}

uint8_t tm_uart_getc(void)
{
    while (!(TM_REG(STATE) & 2u)) {
    }
    return (uint8_t)TM_REG(DATA);
}
