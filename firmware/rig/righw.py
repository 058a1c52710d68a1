# Hardware layer of the HIL rig Pico (boards/hil-rig.json): PIO edge capture of the two bridge taps with DMA into
# RAM, the shunt ADC sampled by DMA at a fixed rate from the same start, the GPIO-switched load bank, contact
# switch, FAULT_N injection and button presses (timed by PIO), LED sensing and the DUT's power switch.
import time
import array
import machine
from machine import Pin, ADC, mem32
import rp2

import rigpio

PIO0_BASE = 0x50200000
PIO_CTRL = PIO0_BASE + 0x000
PIO_RXF0 = PIO0_BASE + 0x020
DREQ_PIO0_RX0 = 4
ADC_BASE = 0x4004C000
ADC_CS = ADC_BASE + 0x00
ADC_FIFO = ADC_BASE + 0x0C
ADC_FCS = ADC_BASE + 0x08
ADC_DIV = ADC_BASE + 0x10
DREQ_ADC = 36
ADC_CLK_HZ = 48000000


class RigHardware:
    def __init__(self, profile):
        p = profile["pins"]
        self.p = p
        self.max_edges = profile["capture"]["max_edges"]
        self.sel = [Pin(p["LOAD_SEL0"], Pin.OUT, value=0), Pin(p["LOAD_SEL1"], Pin.OUT, value=0),
                    Pin(p["LOAD_SEL2"], Pin.OUT, value=0)]
        self.contact = Pin(p["CONTACT_EN"], Pin.OUT, value=1)
        self.power = Pin(p["POWER_EN"], Pin.OUT, value=1)
        self.fault = Pin(p["FAULT_INJ"], Pin.IN, Pin.PULL_UP)
        self.led = Pin(p["LED_SENSE"], Pin.IN)
        self.tap_a = Pin(p["TAP_A"], Pin.IN)
        self.tap_b = Pin(p["TAP_B"], Pin.IN)
        self.adc = ADC(Pin(p["SHUNT_ADC"]))
        self.sm_a = rp2.StateMachine(0, rigpio.level_durations, freq=profile["capture"]["pio_clock_hz"],
                                     jmp_pin=self.tap_a)
        self.sm_b = rp2.StateMachine(1, rigpio.level_durations, freq=profile["capture"]["pio_clock_hz"],
                                     jmp_pin=self.tap_b)
        self.buf_a = array.array("I", [0] * self.max_edges)
        self.buf_b = array.array("I", [0] * self.max_edges)
        self._t_last = time.ticks_us()
        self._t_ns = 0

    # -- time (ticks_us wraps at 2^30 on rp2: accumulate differences) ------------------------------------------
    def now_ns(self):
        t = time.ticks_us()
        self._t_ns += time.ticks_diff(t, self._t_last) * 1000
        self._t_last = t
        return self._t_ns

    def sleep_us(self, us):
        while us > 0:
            step = min(us, 100000)
            time.sleep_us(step)
            us -= step

    def uid(self):
        return "".join("%02x" % b for b in machine.unique_id())

    # -- switches ------------------------------------------------------------------------------------------------
    def select_load(self, index):
        for bit, pin in enumerate(self.sel):
            pin.value((index >> bit) & 1)

    def set_contact(self, on):
        self.contact.value(1 if on else 0)

    def set_power(self, on):
        self.power.value(1 if on else 0)

    def set_charging(self, on):
        # The bench's charger emulation shares the power switch path: CHARGING is wired from POWER_EN's USB leg.
        raise ValueError("charging emulation needs the bench's charger relay (not on this rig revision)")

    def fault_n_level(self):
        return self.fault.value()

    def _timed_low(self, gpio, ms):
        sm = rp2.StateMachine(2, rigpio.timed_low, freq=1000000, set_base=Pin(gpio))
        sm.active(1)
        sm.put(int(ms * 1000))          # 1 us per loop iteration at 1 MHz
        return sm

    def pulse_fault_n(self, ms):
        self._timed_low(self.p["FAULT_INJ"], ms)

    def press(self, gpio, ms):
        self._timed_low(gpio, ms)

    def led_duty(self, window_us=20000):
        hi = n = 0
        t0 = time.ticks_us()
        while time.ticks_diff(time.ticks_us(), t0) < window_us:
            hi += self.led.value()
            n += 1
        return hi / n if n else 0.0

    def adc_shunt(self):
        return self.adc.read_u16() >> 4

    # -- capture ---------------------------------------------------------------------------------------------------
    def capture(self, duration_us):
        n_adc = min(20000, max(16, duration_us // 20))
        adc_dt_ns = (duration_us * 1000) // n_adc
        adc_buf = array.array("H", [0] * n_adc)
        div = max(96, ADC_CLK_HZ * adc_dt_ns // 1000000000) - 1
        mem32[ADC_DIV] = div << 8
        mem32[ADC_FCS] = 1 | (1 << 3) | (1 << 24)      # FIFO on, DREQ on, threshold 1
        dmas = []
        for sm_no, buf in ((0, self.buf_a), (1, self.buf_b)):
            d = rp2.DMA()
            d.config(read=PIO_RXF0 + 4 * sm_no, write=buf, count=len(buf),
                     ctrl=d.pack_ctrl(size=2, inc_read=False, treq_sel=DREQ_PIO0_RX0 + sm_no), trigger=True)
            dmas.append(d)
        d = rp2.DMA()
        d.config(read=ADC_FIFO, write=adc_buf, count=n_adc,
                 ctrl=d.pack_ctrl(size=1, inc_read=False, treq_sel=DREQ_ADC), trigger=True)
        dmas.append(d)
        t0 = self.now_ns()
        # both state machines and the ADC start together: SM_ENABLE (bits 1:0) + CLKDIV_RESTART (bits 9:8)
        mem32[PIO_CTRL] = 0x303
        mem32[ADC_CS] = 1 | (1 << 3)                   # EN + START_MANY
        self.sleep_us(duration_us)
        mem32[PIO_CTRL] = 0
        mem32[ADC_CS] = 1
        counts = [len(self.buf_a) - dmas[0].count, len(self.buf_b) - dmas[1].count]
        for d in dmas:
            d.close()
        return {"t0_ns": t0, "duration_ns": duration_us * 1000, "words_a": list(self.buf_a[:counts[0]]),
                "words_b": list(self.buf_b[:counts[1]]), "adc": [v & 0xFFF for v in adc_buf],
                "adc_dt_ns": adc_dt_ns, "hv_on_ns": 0}
