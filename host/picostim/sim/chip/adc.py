"""RP2040 ADC: channel mapping, 12-bit conversion of the front end's voltage, read_u16, and the register block the
supervisor drives without the CPU: CS (EN, START_ONCE, AINSEL), RESULT, FCS, FIFO (4 deep) and DREQ_ADC.

The voltage of a conversion is the front end's at the instant the conversion starts (`chip.analog.adc_volts`,
with the front end's own seeded noise; without a front end every channel reads 0 V), as on the emu engine. A
register-level conversion (CS.START_ONCE, from the CPU or a DMA write) is busy for 2 us (96 cycles of the 48 MHz
clk_adc): RESULT, READY and the FIFO change when it completes (`Chip.advance_to` calls `complete`), and then
DREQ_ADC lets DMA channels paced by it (TREQ 36) drain the FIFO. machine.ADC.read_u16 (rpc `adc_r`) converts at
once, as one call of the firmware (ports/rp2/machine_adc.c: raw<<4 | raw>>8); with the FIFO on it lands there too.
START_MANY / round robin are not modelled (noted in `Chip.notes`).
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
        self.fcs = 0
        self.fifo = []
        self.div = 0
        self.busy_until = None      # completion instant of the conversion in progress
        self.busy_raw = 0

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

    def _sample(self, channel, t):
        analog = self.chip.analog
        if analog is None:
            return 0
        v = analog.adc_volts(channel, t)
        tf = getattr(analog, "adc_transfer", None)      # the unit's ADC transfer when the front end has parts
        return tf(v) if tf is not None else volts_to_raw(v, self.vref)

    def convert(self, channel, t):
        if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < regs.ADC_NUM_CHANNELS:
            raise ValueError("invalid ADC channel")
        self.ainsel = channel
        self.result = self._sample(channel, t)
        self._push(self.result, t)
        return self.result

    def read_u16(self, channel, t):
        return raw_to_u16(self.convert(channel, t))

    # ------------------------------------------------------------------ FIFO / DREQ
    def _push(self, raw, t):
        if not self.fcs & regs.ADC_FCS_EN:
            return
        if len(self.fifo) >= regs.ADC_FIFO_DEPTH:
            self.fcs |= regs.ADC_FCS_OVER
            return
        self.fifo.append(raw >> 4 if self.fcs & regs.ADC_FCS_SHIFT else raw)
        self.chip.dma.adc_dreq(t)

    def dreq(self):
        """DREQ_ADC: FIFO level at or above FCS.THRESH (with FCS.DREQ_EN)."""
        if not self.fcs & regs.ADC_FCS_DREQ_EN or not self.fifo:
            return False
        return len(self.fifo) >= max(1, (self.fcs >> 24) & 0xF)

    def next_event(self):
        return self.busy_until

    def complete(self, t):
        """The conversion in progress ends at t: RESULT, READY, FIFO (and DREQ_ADC)."""
        self.busy_until = None
        self.result = self.busy_raw
        self._push(self.busy_raw, t)

    # ------------------------------------------------------------------ registers (offset within the ADC block)
    def read(self, off, t):
        if off == regs.ADC_CS:
            return (1 if self.enabled else 0) | (2 if self.ts_enabled else 0) | \
                (0 if self.busy_until is not None else regs.ADC_CS_READY) | (self.ainsel << regs.ADC_CS_AINSEL_SHIFT)
        if off == regs.ADC_RESULT:
            return self.result
        if off == regs.ADC_FCS:
            n = len(self.fifo)
            return self.fcs | (n << 16) | (regs.ADC_FCS_FULL if n >= regs.ADC_FIFO_DEPTH else 0) | \
                (regs.ADC_FCS_EMPTY if n == 0 else 0)
        if off == regs.ADC_FIFO:
            if not self.fifo:
                self.fcs |= regs.ADC_FCS_UNDER
                return 0
            return self.fifo.pop(0)
        if off == regs.ADC_DIV:
            return self.div
        if off == regs.ADC_INTR:
            return 1 if self.fifo and len(self.fifo) >= max(1, (self.fcs >> 24) & 0xF) else 0
        return 0

    def write(self, off, v, t):
        if off == regs.ADC_CS:
            self.enabled = bool(v & 1)
            self.ts_enabled = bool(v & 2)
            self.ainsel = (v >> regs.ADC_CS_AINSEL_SHIFT) & 7
            if v & (regs.ADC_CS_START_MANY | (0x1F << regs.ADC_CS_RROBIN_SHIFT)):
                self.chip.note("ADC START_MANY / round robin is not modelled")
            if v & regs.ADC_CS_START_ONCE and self.enabled and self.busy_until is None and \
                    self.ainsel < regs.ADC_NUM_CHANNELS:
                # sampled at the start of the conversion; RESULT/FIFO at its end
                self.busy_raw = self._sample(self.ainsel, t)
                self.busy_until = t + self.CONVERSION_NS
        elif off == regs.ADC_FCS:
            self.fcs &= ~(v & (regs.ADC_FCS_OVER | regs.ADC_FCS_UNDER))
            self.fcs = (self.fcs & ~regs.ADC_FCS_WRITABLE) | (v & regs.ADC_FCS_WRITABLE)
            self.chip.dma.adc_dreq(t)
        elif off == regs.ADC_DIV:
            self.div = v & 0xFFFFFF
