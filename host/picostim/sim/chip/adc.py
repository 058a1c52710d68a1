"""RP2040 ADC as machine.ADC uses it: channel mapping, 12-bit conversion of the front end's voltage, read_u16.

The voltage at the instant of the read comes from `chip.analog.adc_volts(channel, t_ns)` (the analog front end
adds its own seeded noise); without a front end every channel reads 0 V. read_u16 = raw<<4 | raw>>8
(ports/rp2/machine_adc.c adc_config_and_read_u16).
"""
from . import regs


def volts_to_raw(v, vref):
    raw = int(round(v / vref * 4096))
    return 0 if raw < 0 else (4095 if raw > 4095 else raw)


def raw_to_u16(raw):
    return (raw << 4) | (raw >> 8)


class Adc:
    CONVERSION_NS = 2000   # 96 cycles of the 48 MHz clk_adc

    def __init__(self, chip, vref):
        self.chip = chip
        self.vref = vref
        self.power_on()

    def power_on(self):
        self.enabled = False
        self.ts_enabled = False
        self.ainsel = 0
        self.result = 0

    def new(self, source, t):
        """ADC(id): ["ch", n] for an int id (0..4 is a channel, pad untouched; other ints are GPIO numbers) or
        ["pin", gpio] for a Pin. Returns the channel."""
        if not isinstance(source, (list, tuple)) or len(source) != 2 or source[0] not in ("ch", "pin"):
            raise TypeError("ADC source must be an int channel or a Pin")
        kind, x = source
        if isinstance(x, bool) or not isinstance(x, int):
            raise TypeError(f"can't convert {type(x).__name__} to int")
        self.enabled = True
        if kind == "ch" and 0 <= x < regs.ADC_NUM_CHANNELS:
            if x == regs.ADC_TEMP_CHANNEL:
                self.ts_enabled = True
            return x
        gpio = self.chip.gpio.check_pin(x)
        if not regs.ADC_BASE_PIN <= gpio < regs.ADC_BASE_PIN + 4:
            raise ValueError("Pin doesn't have ADC capabilities")
        self.chip.gpio.adc_init(gpio, t)
        return gpio - regs.ADC_BASE_PIN

    def convert(self, channel, t):
        if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < regs.ADC_NUM_CHANNELS:
            raise ValueError("invalid ADC channel")
        analog = self.chip.analog
        v = analog.adc_volts(channel, t) if analog is not None else 0.0
        self.ainsel = channel
        # the unit's own ADC transfer (parts.py through the front end) where there is a front end
        conv = getattr(analog, "adc_transfer", None)
        self.result = conv(v) if conv is not None else volts_to_raw(v, self.vref)
        return self.result

    def read_u16(self, channel, t):
        return raw_to_u16(self.convert(channel, t))

    # registers: CS and RESULT are enough for a START_ONCE conversion via mem32
    def read(self, off, t):
        if off == regs.ADC_CS:
            return (1 if self.enabled else 0) | (2 if self.ts_enabled else 0) | regs.ADC_CS_READY | \
                (self.ainsel << regs.ADC_CS_AINSEL_SHIFT)
        if off == regs.ADC_RESULT:
            return self.result
        return 0

    def write(self, off, v, t):
        if off == regs.ADC_CS:
            self.enabled = bool(v & 1)
            self.ts_enabled = bool(v & 2)
            self.ainsel = (v >> regs.ADC_CS_AINSEL_SHIFT) & 7
            if v & regs.ADC_CS_START_ONCE and self.ainsel < regs.ADC_NUM_CHANNELS:
                self.convert(self.ainsel, t)
