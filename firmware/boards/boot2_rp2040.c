/* RP2040 second-stage boot loader (the first 256 bytes of flash). The boot ROM copies it to SRAM,
 * checks its CRC (the build appends it: see the dev-platform's builder) and runs it. It asks the
 * ROM itself to set the flash up for execute-in-place (plain 03h reads: slow, works with any
 * flash chip), then starts the application whose vector table follows at flash + 0x100.
 * It runs from SRAM, not where it is linked: only PC-relative code, no data, no calls but the ROM's. */
#include <stdint.h>

typedef void *(*rom_lookup_t)(uint32_t table, uint32_t code);

__attribute__((section(".boot2"), used, noreturn)) void tm_boot2(void)
{
    /* ROM header: 0x14 holds the function table's address, 0x18 the lookup function's (16 bits).
     * The empty asm hides the constant address from GCC, which takes a read near 0 for a bug. */
    const volatile uint16_t *rom = (const volatile uint16_t *)0x14u;
    __asm volatile("" : "+r"(rom));
    const rom_lookup_t lookup = (rom_lookup_t)(uintptr_t)rom[2];
    void (*const enter_xip)(void) = (void (*)(void))lookup(rom[0], 'C' | ('X' << 8));
    enter_xip();
    const volatile uint32_t *vectors = (const volatile uint32_t *)0x10000100u;
    *(volatile uint32_t *)0xE000ED08u = (uint32_t)(uintptr_t)vectors; /* VTOR */
    __asm volatile("msr msp, %0\n\tbx %1" : : "r"(vectors[0]), "r"(vectors[1]));
    __builtin_unreachable();
}
