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
RING_BITS = 12                  # 4 KiB edge ring per tap = 1024 words (512 pulses)
RING_WORDS = (1 << RING_BITS) // 4
ADC_RING_BITS = 14              # 16 KiB ADC ring = 8192 samples = 16 ms (32 KiB allocated for alignment)
ADC_RING = (1 << ADC_RING_BITS) // 2
ADC_DT_NS = 2000                # 500 kS/s: 96 ADC clocks at 48 MHz
COUNT_FOREVER = 0xFFFFFFFF      # transfers before a DMA channel stops: ~2.4 h of ADC samples


class RigHardware:
    def __init__(self, profile):
        p = profile["pins"]
        self.p = p
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
        self._keep = []
        self.buf_a = self._aligned("I", RING_WORDS, 4, 1 << RING_BITS)
        self.buf_b = self._aligned("I", RING_WORDS, 4, 1 << RING_BITS)
        self._t_last = time.ticks_us()
        self._t_ns = 0
        self.start_continuous(profile)

    def _aligned(self, typecode, n, itemsize, align):
        """A DMA ring must sit on an address aligned to its size: over-allocate, hand out an aligned view."""
        import uctypes
        raw = array.array(typecode, [0] * (n + align // itemsize))
        skip = ((-uctypes.addressof(raw)) % align) // itemsize
        self._keep.append(raw)
        return memoryview(raw)[skip:skip + n]

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

    # -- continuous capture --------------------------------------------------------------------------------------
    # Both tap state machines and the ADC run from boot, DMA writing into rings; poll_words() hands out the words
    # that arrived since the last call (rigserve decodes them into edges with absolute times), and phase_mean_na()
    # averages the ADC samples inside a phase while they are still in the ring.
    def start_continuous(self, profile):
        self.ring_words = RING_WORDS
        self.adc_ring = self._aligned("H", ADC_RING, 2, 1 << ADC_RING_BITS)
        self.adc_dt_ns = ADC_DT_NS
        mem32[ADC_DIV] = (ADC_CLK_HZ * ADC_DT_NS // 1000000000 - 1) << 8
        mem32[ADC_FCS] = 1 | (1 << 3) | (1 << 24)     # FIFO on, DREQ on, threshold 1
        self.dmas = []
        for sm_no, buf in ((0, self.buf_a), (1, self.buf_b)):
            d = rp2.DMA()
            d.config(read=PIO_RXF0 + 4 * sm_no, write=buf, count=COUNT_FOREVER,
                     ctrl=d.pack_ctrl(size=2, inc_read=False, ring_sel=True, ring_size=RING_BITS,
                                      treq_sel=DREQ_PIO0_RX0 + sm_no), trigger=True)
            self.dmas.append(d)
        d = rp2.DMA()
        d.config(read=ADC_FIFO, write=self.adc_ring, count=COUNT_FOREVER,
                 ctrl=d.pack_ctrl(size=1, inc_read=False, ring_sel=True, ring_size=ADC_RING_BITS,
                                  treq_sel=DREQ_ADC), trigger=True)
        self.dmas.append(d)
        self.taken = [0, 0]
        self.overruns = 0
        self.t_start = self.now_ns()
        mem32[PIO_CTRL] = 0x303                        # SM0+SM1 enabled, clock dividers restarted together
        mem32[ADC_CS] = 1 | (1 << 3)                   # EN + START_MANY, right after

    def _written(self, i):
        return COUNT_FOREVER - self.dmas[i].count

    def poll_words(self):
        out = []
        for i, buf in ((0, self.buf_a), (1, self.buf_b)):
            total = self._written(i)
            new = total - self.taken[i]
            if new > self.ring_words:
                self.overruns += 1                     # service came too late: the oldest words are gone
                self.taken[i] = total - self.ring_words
            words = [buf[k % self.ring_words] for k in range(self.taken[i], total)]
            self.taken[i] = total
            out.append(words)
        return out[0], out[1]

    def phase_mean_na(self, start_ns, end_ns, vref_mv=3300, shunt=100, gain=10):
        margin = 2 * self.adc_dt_ns
        n0 = (start_ns - self.t_start + margin + self.adc_dt_ns - 1) // self.adc_dt_ns
        n1 = (end_ns - self.t_start - margin) // self.adc_dt_ns
        total = COUNT_FOREVER - self.dmas[2].count
        if n1 < n0 or n0 < total - ADC_RING or n1 >= total:
            return None
        acc = 0
        for k in range(n0, n1 + 1):
            acc += self.adc_ring[k % ADC_RING] & 0xFFF
        raw = acc // (n1 - n0 + 1)
        return (raw * vref_mv * 1000000) // (4096 * shunt * gain)
