"""RP2040 DMA: 12 channels, register aliases, DREQ pacing by PWM wraps, TRANS_COUNT reload, CHAIN_TO.

Pacing: a channel with TREQ_SEL = 24+s does one transfer at each wrap of PWM slice s after it is triggered
(its DREQ credit starts at zero on trigger, so a channel triggered by a chain at wrap w transfers first at the
wrap after w). TREQ_SEL = 0x3F (unpaced) runs all transfers at the trigger instant. DREQ_ADC (36) is a level: a
channel paced by it transfers while the ADC FIFO holds at least FCS.THRESH results (at the instant a conversion
completes, or at its trigger). Other DREQs (PIO, UART, DMA timers) are not modelled: such a channel stays busy and
never transfers (noted in `Chip.notes`).
A transfer reads/writes through the chip's bus at the wrap time, so a CC write lands in the PWM shadow and
latches at the following wrap, exactly as on silicon.
RAM buffers handed over by `rp2.DMA.config(read=buf)` are copied into the chip's SRAM model (one window per
channel); later changes the firmware makes to its buffer are not seen by the DMA.
"""
from . import regs

_REG_NAMES = ("read", "write", "count", "ctrl")
# alias offset -> (register written, is trigger)
_ALIASES = {
    0x00: ("read", False), 0x04: ("write", False), 0x08: ("count", False), 0x0C: ("ctrl", True),
    0x10: ("ctrl", False), 0x14: ("read", False), 0x18: ("write", False), 0x1C: ("count", True),
    0x20: ("ctrl", False), 0x24: ("count", False), 0x28: ("read", False), 0x2C: ("write", True),
    0x30: ("ctrl", False), 0x34: ("write", False), 0x38: ("count", False), 0x3C: ("read", True),
}
UNPACED_CHAIN_LIMIT = 200


class Channel:
    __slots__ = ("num", "read", "write", "count", "reload", "ctrl", "busy", "ref_t", "cache", "claimed")

    def __init__(self, num):
        self.num = num
        self.claimed = False
        self.power_on()

    def power_on(self):
        self.read = 0
        self.write = 0
        self.count = 0
        self.reload = 0
        self.ctrl = self.num << regs.CTRL_CHAIN_TO_SHIFT   # CHAIN_TO resets to the channel itself
        self.busy = False
        self.ref_t = 0
        self.cache = None

    @property
    def treq(self):
        return (self.ctrl >> regs.CTRL_TREQ_SHIFT) & 0x3F

    @property
    def size(self):
        return (1, 2, 4, 4)[(self.ctrl >> regs.CTRL_DATA_SIZE_SHIFT) & 3]

    @property
    def chain_to(self):
        return (self.ctrl >> regs.CTRL_CHAIN_TO_SHIFT) & 0xF

    def ctrl_value(self):
        return (self.ctrl & regs.CTRL_WRITABLE) | (regs.CTRL_BUSY if self.busy else 0)


class DmaBlock:
    def __init__(self, chip):
        self.chip = chip
        self.ch = [Channel(i) for i in range(regs.DMA_NUM_CHANNELS)]
        self.intr = 0
        self.inte0 = 0
        self._unpaced_depth = 0

    def power_on(self):
        for c in self.ch:
            c.power_on()
            c.claimed = False
        self.intr = 0
        self.inte0 = 0

    # ------------------------------------------------------------------ control
    def trigger(self, c, t):
        if not c.ctrl & regs.CTRL_EN or c.busy:
            return
        c.count = c.reload
        c.busy = True
        c.ref_t = t
        c.cache = None
        treq = c.treq
        if c.count == 0 or treq == regs.TREQ_PERMANENT:
            self._unpaced_depth += 1
            try:
                if self._unpaced_depth > UNPACED_CHAIN_LIMIT:
                    c.busy = False
                    self.chip.note(f"DMA channel {c.num}: unpaced chain loop stopped after {UNPACED_CHAIN_LIMIT}")
                    return
                if c.count == 0:
                    self._complete(c, t)
                while c.busy:
                    self.transfer(c, t)
            finally:
                self._unpaced_depth -= 1
        elif treq == regs.TREQ_ADC:
            self.adc_dreq(t)
        elif not regs.TREQ_PWM_WRAP0 <= treq < regs.TREQ_PWM_WRAP0 + regs.PWM_NUM_SLICES:
            self.chip.note(f"DMA channel {c.num}: DREQ {treq} is not modelled; the channel never transfers")

    def adc_dreq(self, t):
        """DREQ_ADC may be asserted: channels paced by it transfer while it is (lowest channel first, as the
        round-robin arbiter starts)."""
        adc = self.chip.adc
        for c in self.ch:
            while c.busy and c.ctrl & regs.CTRL_EN and c.treq == regs.TREQ_ADC and adc.dreq():
                self.transfer(c, t)

    def abort(self, c):
        c.busy = False
        c.cache = None

    def _complete(self, c, t):
        c.busy = False
        c.cache = None
        if not c.ctrl & regs.CTRL_IRQ_QUIET:
            self.intr |= 1 << c.num
        if c.chain_to != c.num:
            self.trigger(self.ch[c.chain_to], t)

    def transfer(self, c, t):
        size = c.size
        bits = size * 8
        v = self.chip.bus_read(c.read, bits, t)
        if c.ctrl & regs.CTRL_BSWAP and size > 1:
            v = int.from_bytes(v.to_bytes(size, "little"), "big")
        self.chip.bus_write(c.write, bits, v, t)
        ring = (c.ctrl >> regs.CTRL_RING_SIZE_SHIFT) & 0xF
        ring_write = bool(c.ctrl & regs.CTRL_RING_SEL)
        if c.ctrl & regs.CTRL_INCR_READ:
            c.read = self._step(c.read, size, ring if not ring_write else 0)
        if c.ctrl & regs.CTRL_INCR_WRITE:
            c.write = self._step(c.write, size, ring if ring_write else 0)
        c.count -= 1
        c.ref_t = t
        c.cache = None
        if c.count <= 0:
            c.count = 0
            self._complete(c, t)

    @staticmethod
    def _step(addr, size, ring):
        if ring:
            mask = (1 << ring) - 1
            return ((addr & ~mask) | ((addr + size) & mask)) & 0xFFFFFFFF
        return (addr + size) & 0xFFFFFFFF

    # ------------------------------------------------------------------ pacing (used by Chip.advance_to)
    def paced_slice(self, c):
        treq = c.treq
        if c.busy and c.ctrl & regs.CTRL_EN and regs.TREQ_PWM_WRAP0 <= treq < regs.TREQ_PWM_WRAP0 + regs.PWM_NUM_SLICES:
            return self.chip.pwm.slices[treq - regs.TREQ_PWM_WRAP0]
        return None

    def next_time(self, c):
        sl = self.paced_slice(c)
        if sl is None:
            return None
        if c.cache is not None and c.cache[0] == sl.version:
            return c.cache[1]
        nt = sl.wrap_after(c.ref_t)
        c.cache = (sl.version, nt)
        return nt

    def idle_run(self, group, t_first, t_limit):
        """Transfers that would only rewrite values already in place.

        `group` are the channels paced by one slice that are due at the wrap t_first. If every one of them only
        rewrites its target's current value (fixed RAM -> PWM register addresses), the next n wraps up to t_limit
        change nothing and can be skipped together (never a channel's last transfer, which completes it and may
        chain). Returns (n, time of the last skipped wrap) or (0, None).
        """
        sl = self.paced_slice(group[0])
        seg = sl.seg
        if seg.t0 > t_first or sl.latch_t is not None:
            return 0, None
        n = None
        for c in group:
            if c.ctrl & (regs.CTRL_INCR_READ | regs.CTRL_INCR_WRITE) or c.count <= 1:
                return 0, None
            if not (regs.SRAM_BASE <= c.read < regs.SRAM_END and regs.PWM_BASE <= c.write < regs.PWM_BASE + 0xB4):
                return 0, None
            bits = c.size * 8
            if self.chip.bus_read(c.read, bits, t_first) != self.chip.bus_read(c.write, bits, t_first):
                return 0, None
            n = c.count - 1 if n is None else min(n, c.count - 1)
        n = min(n, 1 + seg.wraps_in(t_first, t_limit))
        if n <= 0:
            return 0, None
        return n, seg.time_of(seg.count_at(t_first) + (n - 1) * seg.L)

    # ------------------------------------------------------------------ registers (offset within DMA block)
    def read_reg(self, off):
        if off < regs.DMA_CH_STRIDE * regs.DMA_NUM_CHANNELS:
            n, o = divmod(off, regs.DMA_CH_STRIDE)
            c = self.ch[n]
            name = _ALIASES[o & ~3][0]
            return self.get(c, name)
        if off == regs.DMA_INTR:
            return self.intr
        if off == 0x404:
            return self.inte0
        if off == 0x40C:
            return self.intr & self.inte0
        return 0

    def write_reg(self, off, v, t):
        v &= 0xFFFFFFFF
        if off < regs.DMA_CH_STRIDE * regs.DMA_NUM_CHANNELS:
            n, o = divmod(off, regs.DMA_CH_STRIDE)
            name, trig = _ALIASES[o & ~3]
            self.set(self.ch[n], name, v, t, trig)
        elif off == regs.DMA_MULTI_CHAN_TRIGGER:
            for c in self.ch:
                if v >> c.num & 1:
                    self.trigger(c, t)
        elif off == regs.DMA_CHAN_ABORT:
            for c in self.ch:
                if v >> c.num & 1:
                    self.abort(c)
        elif off == regs.DMA_INTR:
            self.intr &= ~v
        elif off == 0x404:
            self.inte0 = v & 0xFFF

    def get(self, c, name):
        if name == "read":
            return c.read
        if name == "write":
            return c.write
        if name == "count":
            return c.count
        if name == "ctrl":
            return c.ctrl_value()
        raise ValueError(f"unknown DMA register {name!r}")

    def set(self, c, name, v, t, trigger=False):
        v &= 0xFFFFFFFF
        if name == "read":
            c.read = v
        elif name == "write":
            c.write = v
        elif name == "count":
            c.reload = v
        elif name == "ctrl":
            c.ctrl = v & regs.CTRL_WRITABLE
            c.cache = None
        else:
            raise ValueError(f"unknown DMA register {name!r}")
        if trigger and v != 0:   # writing zero to a trigger alias is a null trigger
            self.trigger(c, t)
