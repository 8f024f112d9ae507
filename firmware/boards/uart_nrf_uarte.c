/* nRF52 UARTE (UART with EasyDMA). DMA reads and writes RAM only, so bytes pass through RAM
 * buffers. Reception is one byte per DMA transfer: the UARTE's RX FIFO holds the bytes that
 * arrive while the next transfer is being started. Starts the 64 MHz crystal for an exact baud. */
#include "tm_board.h"

#define CLOCK_HFCLKSTART 0x40000000u
#define CLOCK_HFCLKSTARTED 0x40000100u

#define STARTRX (TM_UART_BASE + 0x000u)
#define STARTTX (TM_UART_BASE + 0x008u)
#define ENDRX (TM_UART_BASE + 0x110u)
#define ENDTX (TM_UART_BASE + 0x120u)
#define ENABLE (TM_UART_BASE + 0x500u)
#define PSEL_TXD (TM_UART_BASE + 0x50Cu)
#define PSEL_RXD (TM_UART_BASE + 0x514u)
#define BAUDRATE (TM_UART_BASE + 0x524u)
#define RXD_PTR (TM_UART_BASE + 0x534u)
#define RXD_MAXCNT (TM_UART_BASE + 0x538u)
#define TXD_PTR (TM_UART_BASE + 0x544u)
#define TXD_MAXCNT (TM_UART_BASE + 0x548u)
#define CONFIG (TM_UART_BASE + 0x56Cu)

/* GPIO port registers: P0 at 0x50000000, P1 at 0x50000300; pin number = port * 32 + pin. */
#define GPIO_OUTSET(psel) (0x50000508u + 0x300u * ((psel) >> 5))
#define GPIO_DIRSET(psel) (0x50000518u + 0x300u * ((psel) >> 5))

/* BAUDRATE = baud * 2^32 / 16 MHz, kept to the top 20 bits as the hardware uses them. */
#define BAUD_REG ((uint32_t)((((uint64_t)TM_UART_BAUD << 32) / 16000000u + 0x800u) & 0xFFFFF000u))

static uint8_t rx_byte, tx_buf[64];

void tm_uart_init(void)
{
    TM_REG(CLOCK_HFCLKSTARTED) = 0;
    TM_REG(CLOCK_HFCLKSTART) = 1;
    while (!TM_REG(CLOCK_HFCLKSTARTED)) {
    }
    TM_REG(GPIO_OUTSET(TM_UART_TX_PSEL)) = 1u << (TM_UART_TX_PSEL & 31u); /* idle high */
    TM_REG(GPIO_DIRSET(TM_UART_TX_PSEL)) = 1u << (TM_UART_TX_PSEL & 31u);
    TM_REG(PSEL_TXD) = TM_UART_TX_PSEL;
    TM_REG(PSEL_RXD) = TM_UART_RX_PSEL;
    TM_REG(BAUDRATE) = BAUD_REG;
    TM_REG(CONFIG) = 0; /* 8N1, no flow control */
    TM_REG(ENABLE) = 8u;
    TM_REG(RXD_PTR) = (uint32_t)(uintptr_t)&rx_byte;
    TM_REG(RXD_MAXCNT) = 1;
    TM_REG(ENDRX) = 0;
    TM_REG(STARTRX) = 1;
}

void tm_uart_write(const uint8_t *data, size_t n)
{
    while (n > 0) { /* copy through a RAM buffer: `data` may be a const array in flash */
        size_t k = n < sizeof tx_buf ? n : sizeof tx_buf;
        for (size_t i = 0; i < k; ++i) {
            tx_buf[i] = data[i];
        }
        TM_REG(TXD_PTR) = (uint32_t)(uintptr_t)tx_buf;
        TM_REG(TXD_MAXCNT) = (uint32_t)k;
        TM_REG(ENDTX) = 0;
        TM_REG(STARTTX) = 1;
        while (!TM_REG(ENDTX)) {
        }
        data += k;
        n -= k;
    }
}

uint8_t tm_uart_getc(void)
{
    while (!TM_REG(ENDRX)) {
    }
    const uint8_t b = rx_byte;
    TM_REG(ENDRX) = 0;
    TM_REG(STARTRX) = 1;
    return b;
}
