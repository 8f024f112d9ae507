/* STM32 USART, both register layouts: v1 (F1/F2/F4: SR/DR) and v2 (F0/F3/F7/L4: ISR/RDR/TDR).
 * Runs on the reset clock (HSI) unless the board's clock_hz says otherwise: no PLL setup here.
 * The pins go to the USART through the GPIO alternate-function mux, the same on F4 and F7. */
#include "tm_board.h"

#define RCC_AHB1ENR 0x40023830u
#define GPIO_BASE(port) (0x40020000u + 0x400u * (port))
#define GPIO_MODER(port) (GPIO_BASE(port) + 0x00u)
#define GPIO_AFR(port, pin) (GPIO_BASE(port) + 0x20u + 4u * ((pin) / 8u))

#if TM_UART_STM32_V2
#define CR1 (TM_UART_BASE + 0x00u)
#define BRR (TM_UART_BASE + 0x0Cu)
#define STATUS (TM_UART_BASE + 0x1Cu) /* ISR */
#define ICR (TM_UART_BASE + 0x20u)
#define RDR (TM_UART_BASE + 0x24u)
#define TDR (TM_UART_BASE + 0x28u)
#define CR1_ENABLE ((1u << 0) | (1u << 2) | (1u << 3)) /* UE, RE, TE */
#else
#define STATUS (TM_UART_BASE + 0x00u) /* SR */
#define RDR (TM_UART_BASE + 0x04u)    /* DR, both ways */
#define TDR RDR
#define BRR (TM_UART_BASE + 0x08u)
#define CR1 (TM_UART_BASE + 0x0Cu)
#define CR1_ENABLE ((1u << 13) | (1u << 2) | (1u << 3)) /* UE, RE, TE */
#endif
#define TXE (1u << 7)
#define RXNE (1u << 5)
#define ORE (1u << 3)

static void pin_to_uart(uint32_t port, uint32_t pin)
{
    TM_REG(RCC_AHB1ENR) |= 1u << port;
    (void)TM_REG(RCC_AHB1ENR); /* the clock takes effect a couple of bus cycles after the write */
    TM_REG(GPIO_AFR(port, pin)) = (TM_REG(GPIO_AFR(port, pin)) & ~(0xFu << 4u * (pin % 8u))) |
                                  ((uint32_t)TM_UART_AF << 4u * (pin % 8u));
    TM_REG(GPIO_MODER(port)) = (TM_REG(GPIO_MODER(port)) & ~(3u << 2u * pin)) | (2u << 2u * pin);
}

void tm_uart_init(void)
{
    TM_REG(TM_UART_CLKEN_REG) |= 1u << TM_UART_CLKEN_BIT;
    (void)TM_REG(TM_UART_CLKEN_REG);
    pin_to_uart(TM_UART_TX_PORT, TM_UART_TX_PIN);
    pin_to_uart(TM_UART_RX_PORT, TM_UART_RX_PIN);
    TM_REG(BRR) = (TM_CLOCK_HZ + TM_UART_BAUD / 2u) / TM_UART_BAUD; /* 16x oversampling */
    TM_REG(CR1) = CR1_ENABLE;
}

void tm_uart_write(const uint8_t *data, size_t n)
{
    for (size_t i = 0; i < n; ++i) {
        while (!(TM_REG(STATUS) & TXE)) {
        }
        TM_REG(TDR) = data[i];
    }
}

uint8_t tm_uart_getc(void)
{
    for (;;) {
        const uint32_t status = TM_REG(STATUS);
        if (status & RXNE) {
            return (uint8_t)TM_REG(RDR); /* on v1 reading SR then DR also clears ORE */
        }
#if TM_UART_STM32_V2
        if (status & ORE) {
            TM_REG(ICR) = ORE; /* v2 stops receiving until the overrun is acknowledged */
        }
#endif
    }
}
