# RP2040 register addresses used through machine.mem32 (chip facts from the RP2040 datasheet / pico-sdk headers;
# board specifics such as pin numbers live in /board.json, never here).
from micropython import const

PWM_BASE = const(0x40050000)
PWM_STRIDE = const(0x14)
PWM_CSR = const(0x00)
PWM_DIV = const(0x04)
PWM_CTR = const(0x08)
PWM_CC = const(0x0C)
PWM_TOP = const(0x10)
PWM_EN = const(0x400500A0)
PWM_INTR = const(0x400500A4)           # raw wrap flags, one bit per slice, write 1 to clear
ALIAS_SET = const(0x2000)
ALIAS_CLR = const(0x3000)
CSR_EN = const(1)
CSR_A_INV = const(4)
CSR_B_INV = const(8)
DREQ_PWM_WRAP0 = const(24)

IO_BANK0_CTRL0 = const(0x40014004)   # GPIOn_CTRL = IO_BANK0_CTRL0 + 8*n
FUNCSEL_PWM = const(4)
FUNCSEL_SIO = const(5)
FUNCSEL_NULL = const(31)
OUTOVER_LOW = const(2 << 8)

SIO_GPIO_IN = const(0xD0000004)       # all GPIO input levels in one read (bits 0..29, < 2^30)

WATCHDOG_CTRL = const(0x40058000)
WATCHDOG_ENABLE = const(1 << 30)


def pwm_reg(slice_num, off):
    return PWM_BASE + PWM_STRIDE * slice_num + off


def gpio_ctrl(gpio):
    return IO_BANK0_CTRL0 + 8 * gpio
