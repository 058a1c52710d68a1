"""The virtual RP2040: PWM, DMA, GPIO, ADC, watchdog and a bus, driven by virtual time.

`Chip` serves the RPC ops of ../DESIGN.md as `rpc_<op>` methods (called by the BoardProcess with the clock already
advanced) and the query API the analog front end and the virtual rig use (pin levels, edges and duty for past
windows, input drives, events). Everything is computed from the register timeline, never from firmware variables.
"""
import base64
import hashlib

from . import regs
from .adc import Adc
from .dma import DmaBlock
from .gpio import GpioBlock
from .mp_pwm import MachinePwm
from .pwm import PwmBlock
from .watchdog import Watchdog

PWRON_RESET = 1
WDT_RESET = 3
HISTORY_NS = 120 * 1_000_000_000
_PRUNE_EVERY_NS = 10 * 1_000_000_000
_MAX_EVENTS = 64
_MAX_NOTES = 200
_SRAM_SIZE = regs.SRAM_END - regs.SRAM_BASE
_READ_WINDOW = 0x4000                 # per-channel SRAM window for rp2.DMA read buffers (16 KB)
_WRITE_BASE = 12 * _READ_WINDOW       # then a 6 KB window per channel for write buffers
_WRITE_WINDOW = 0x1800
CHIP_ID_RP2040_B2 = 0x20002927


def _int(name, v):
    if isinstance(v, bool):
        return int(v)
    if not isinstance(v, int):
        raise TypeError(f"{name}: can't convert {type(v).__name__} to int")
    return v


class Chip:
    def __init__(self, profile: dict, seed: int = 0, uid: str | None = None):
        self.profile = profile
        self.seed = seed
        self.uid = uid          # None: derived from the seed (deterministic)
        mcu = profile.get("mcu", {}) if isinstance(profile, dict) else {}
        self.default_sys_hz = int(mcu.get("sys_clk_hz", 125_000_000))
        self.sys_hz = self.default_sys_hz
        analog = profile.get("analog", {}) if isinstance(profile, dict) else {}
        self.now_ns = 0
        self.analog = None
        self.events = []
        self.notes = []
        self._note_set = set()
        self.iset_log = []
        self.iset_gpio = (profile.get("pins", {}) or {}).get("ISET") if isinstance(profile, dict) else None
        self.wdt_expired = False
        self.wdt_expired_at = None
        self.cause = PWRON_RESET
        self.ram = bytearray(_SRAM_SIZE)
        self.unmodelled = {}
        self._last_prune = 0
        self.pwm = PwmBlock(self)
        self.gpio = GpioBlock(self)
        self.dma = DmaBlock(self)
        self.wdt = Watchdog(self)
        self.adc = Adc(self, float(analog.get("adc_vref_v", 3.3)))
        self.mp_pwm = MachinePwm(self.pwm, self.gpio, lambda: self.sys_hz)

    # ================================================================== lifecycle
    def _hw_reset(self, t, cause):
        self.sys_hz = self.default_sys_hz
        self.pwm.power_on(t)
        self.gpio.power_on(t)
        self.dma.power_on()
        self.wdt.power_on(cause)
        self.adc.power_on()
        self.mp_pwm.power_on()
        self.events.clear()
        if cause == PWRON_RESET:
            self.ram[:] = bytes(_SRAM_SIZE)
            self.unmodelled.clear()

    def reset(self, cause=PWRON_RESET):
        """Power-on (1) or watchdog/machine.reset() (3): every block back to reset values at the current time."""
        cause = WDT_RESET if cause == WDT_RESET else PWRON_RESET
        self._hw_reset(self.now_ns, cause)
        self.cause = cause
        self.wdt_expired = False

    def soft_reset(self):
        """rp2 soft_reset_exit: PWM slices 0-3 halted, slice_freq_set cleared, GPIO IRQs off, DMA channels
        unclaimed by their finalisers (still running), WDT untouched."""
        self.mp_pwm.deinit_all()
        self.gpio.soft_reset()
        for c in self.dma.ch:
            c.claimed = False
        self.events.clear()

    def watchdog_trigger(self, t):
        self.wdt.reason = regs.WDT_REASON_FORCE
        self._watchdog_fires(t)

    def _watchdog_fires(self, t):
        scratch = list(self.wdt.scratch)
        self._hw_reset(t, WDT_RESET)
        self.wdt.scratch = scratch
        self.cause = WDT_RESET
        self.wdt_expired = True
        self.wdt_expired_at = t

    # ================================================================== time
    def advance_to(self, t_ns):
        t = int(t_ns)
        t_prev = self.now_ns
        if t <= t_prev:
            return
        pwm_slices = self.pwm.slices
        chans = self.dma.ch
        while True:
            # due internal events, in order; at one instant: CC/TOP latch, then DMA, watchdog, input drives
            cands = []
            for sl in pwm_slices:
                lt = sl.latch_t
                if lt is not None and lt <= t:
                    cands.append((lt, 0, sl.num, sl))
            for c in chans:
                if c.busy:
                    nt = self.dma.next_time(c)
                    if nt is not None and nt <= t:
                        cands.append((nt, 1, c.num, c))
            wd = self.wdt.next_event()
            if wd is not None and wd <= t:
                cands.append((wd, 2, 0, None))
            pd = self.gpio.next_pending()
            if pd is not None and pd <= t:
                cands.append((pd, 3, 0, None))
            ad = self.adc.busy_until
            if ad is not None and ad <= t:
                cands.append((ad, 4, 0, None))
            if not cands:
                break
            if len(cands) > 1:
                cands.sort(key=lambda x: x[:3])
            te, prio, _, obj = cands[0]
            if te > self.now_ns:
                self.now_ns = te
            if prio == 0:
                obj.do_latch()
            elif prio == 1:
                sl = self.dma.paced_slice(obj)
                group = [x[3] for x in cands if x[1] == 1 and x[0] == te and self.dma.paced_slice(x[3]) is sl]
                rest = [x[0] for x in cands if not (x[1] == 1 and x[0] == te and x[3] in group)]
                limit = min(t, min(rest) - 1) if rest else t
                n, t_last = self.dma.idle_run(group, te, limit) if sl is not None else (0, None)
                if n:
                    for ch in group:
                        ch.count -= n
                        ch.ref_t = t_last
                        ch.cache = None
                else:
                    self.dma.transfer(obj, te)
            elif prio == 2:
                self._watchdog_fires(te)
            elif prio == 3:
                self.gpio.apply_pending(te)
            else:
                self.adc.complete(te)
        self.now_ns = t
        if self.analog is not None:
            self.analog.on_advance(t_prev, t)
        if t - self._last_prune > _PRUNE_EVERY_NS:
            self._last_prune = t
            self.prune(t - HISTORY_NS)

    def next_event_ns(self):
        # (the analog front end's own schedule too: a rig change scheduled at an instant must not be jumped past)
        fe = self.analog.next_event_ns() if self.analog is not None else None
        if fe is not None and fe <= self.now_ns:
            fe = None               # (taken by the next advance; never a bound that stops time)
        ts = [x for x in (self.wdt.next_event(), self.gpio.next_pending(), fe) if x is not None]
        return min(ts) if ts else None

    def prune(self, t_keep):
        if t_keep <= 0:
            return
        self.pwm.prune(t_keep)
        self.gpio.prune(t_keep)
        i = 0
        while i + 1 < len(self.iset_log) and self.iset_log[i + 1]["t_ns"] <= t_keep:
            i += 1
        if i:
            del self.iset_log[:i]

    # ================================================================== events and notes
    def queue_event(self, ev):
        if ev in self.events:
            return   # the IO_BANK0 INTR bit is already latched: the handler runs once
        if len(self.events) < _MAX_EVENTS:
            self.events.append(ev)

    def pop_events(self):
        ev = self.events
        self.events = []
        return ev

    def has_events(self):
        return bool(self.events)

    def note(self, msg):
        """Record something the model does not cover (each message once, at most _MAX_NOTES)."""
        if msg not in self._note_set and len(self.notes) < _MAX_NOTES:
            self._note_set.add(msg)
            self.notes.append(msg)

    # ================================================================== query API (front end, rig, tests)
    def pin_level(self, gpio, t_ns):
        return self.gpio.level(self.gpio.check_pin(gpio), int(t_ns))

    def pin_edges(self, gpio, t0, t1):
        return self.gpio.edges(self.gpio.check_pin(gpio), int(t0), int(t1))

    def pwm_duty_timeline(self, gpio, t0, t1):
        return self.gpio.duty_timeline(self.gpio.check_pin(gpio), int(t0), int(t1))

    def drive_input(self, gpio, level, t_ns=None):
        self.gpio.drive_input(gpio, level, self.now_ns if t_ns is None else int(t_ns))

    def _note_pwm_write(self, sl, t):
        g = self.iset_gpio
        if g is None or ((g >> 1) & 7) != sl.num:
            return
        ch = g & 1
        cc = (sl.cc >> (16 * ch)) & 0xFFFF
        top = sl.top
        d = min(cc, top + 1) / (top + 1)
        if sl.csr & (regs.CSR_B_INV if ch else regs.CSR_A_INV):
            d = 1.0 - d
        last = self.iset_log[-1] if self.iset_log else None
        if last is not None and last["cc"] == cc and last["top"] == top:
            return
        self.iset_log.append({"t_ns": t, "cc": cc, "top": top, "duty": d})

    # ================================================================== bus
    def _reg_read(self, base, t):
        if regs.PWM_BASE <= base < regs.PWM_BASE + 0xB4:
            return self.pwm.read(base - regs.PWM_BASE, t)
        if regs.IO_BANK0_BASE <= base < regs.IO_BANK0_BASE + 0x190:
            return self.gpio.io_read(base - regs.IO_BANK0_BASE, t)
        if regs.PADS_BANK0_BASE <= base < regs.PADS_BANK0_BASE + 0x80:
            return self.gpio.pads_read(base - regs.PADS_BANK0_BASE)
        if regs.WATCHDOG_BASE <= base < regs.WATCHDOG_BASE + 0x30:
            return self.wdt.read(base - regs.WATCHDOG_BASE, t)
        if regs.DMA_BASE <= base < regs.DMA_BASE + 0x1000:
            return self.dma.read_reg(base - regs.DMA_BASE)
        if regs.ADC_BASE <= base < regs.ADC_BASE + 0x24:
            return self.adc.read(base - regs.ADC_BASE, t)
        if regs.TIMER_BASE <= base < regs.TIMER_BASE + 0x44:
            us = t // 1000
            off = base - regs.TIMER_BASE
            if off in (regs.TIMER_TIMELR, regs.TIMER_TIMERAWL):
                return us & 0xFFFFFFFF
            if off in (regs.TIMER_TIMEHR, regs.TIMER_TIMERAWH):
                return (us >> 32) & 0xFFFFFFFF
            return 0
        if base == regs.SYSINFO_CHIP_ID:
            return CHIP_ID_RP2040_B2
        if base not in self.unmodelled:
            self.note(f"unmodelled register read at 0x{base:08x}")
        return self.unmodelled.get(base, 0)

    def _reg_write(self, base, v, t):
        if regs.PWM_BASE <= base < regs.PWM_BASE + 0xB4:
            self.pwm.write(base - regs.PWM_BASE, v, t)
        elif regs.IO_BANK0_BASE <= base < regs.IO_BANK0_BASE + 0x190:
            self.gpio.io_write(base - regs.IO_BANK0_BASE, v, t)
        elif regs.PADS_BANK0_BASE <= base < regs.PADS_BANK0_BASE + 0x80:
            self.gpio.pads_write(base - regs.PADS_BANK0_BASE, v, t)
        elif regs.WATCHDOG_BASE <= base < regs.WATCHDOG_BASE + 0x30:
            self.wdt.write(base - regs.WATCHDOG_BASE, v, t)
        elif regs.DMA_BASE <= base < regs.DMA_BASE + 0x1000:
            self.dma.write_reg(base - regs.DMA_BASE, v, t)
        elif regs.ADC_BASE <= base < regs.ADC_BASE + 0x24:
            self.adc.write(base - regs.ADC_BASE, v, t)
        else:
            self.note(f"unmodelled register write at 0x{base:08x}")
            self.unmodelled[base] = v

    def bus_read(self, addr, bits, t):
        addr &= 0xFFFFFFFF
        nbytes = bits // 8
        if regs.SRAM_BASE <= addr and addr + nbytes <= regs.SRAM_END:
            o = addr - regs.SRAM_BASE
            return int.from_bytes(self.ram[o:o + nbytes], "little")
        if addr >= regs.SIO_BASE and addr < regs.SIO_BASE + 0x200:
            v = self.gpio.sio_read((addr & ~3) - regs.SIO_BASE, t)
        elif regs.PERIPH_START <= addr < regs.PERIPH_END:
            v = self._reg_read(addr & ~0x3003, t)
        else:
            self.note(f"unmodelled memory read at 0x{addr & ~0xFFF:08x}+")
            v = self.unmodelled.get(addr & ~3, 0)
        return (v >> (8 * (addr & 3))) & ((1 << bits) - 1)

    def bus_write(self, addr, bits, value, t):
        addr &= 0xFFFFFFFF
        nbytes = bits // 8
        value &= (1 << bits) - 1
        if regs.SRAM_BASE <= addr and addr + nbytes <= regs.SRAM_END:
            o = addr - regs.SRAM_BASE
            self.ram[o:o + nbytes] = value.to_bytes(nbytes, "little")
            return
        # Peripherals take 32-bit writes only: a narrow write is replicated across the bus word (RP2040 2.1.4)
        v32 = value * (0x01010101 if bits == 8 else (0x00010001 if bits == 16 else 1))
        if addr >= regs.SIO_BASE and addr < regs.SIO_BASE + 0x200:
            self.gpio.sio_write((addr & ~3) - regs.SIO_BASE, v32, t)
            return
        if regs.PERIPH_START <= addr < regs.PERIPH_END:
            alias = addr & 0x3000
            base = addr & ~0x3003
            if alias == regs.ALIAS_NORMAL:
                self._reg_write(base, v32, t)
            else:
                if regs.PWM_BASE <= base < regs.PWM_BASE + 0xB4 and base - regs.PWM_BASE == regs.PWM_INTR:
                    old = 0   # write-1-to-clear: an alias passes its bits straight through
                else:
                    old = self._reg_read(base, t)
                new = {regs.ALIAS_XOR: old ^ v32, regs.ALIAS_SET: old | v32, regs.ALIAS_CLR: old & ~v32}[alias]
                if base - regs.PWM_BASE == regs.PWM_INTR:
                    new = v32 if alias != regs.ALIAS_CLR else 0
                self._reg_write(base, new & 0xFFFFFFFF, t)
            return
        self.note(f"unmodelled memory write at 0x{addr & ~0xFFF:08x}+")
        self.unmodelled[addr & ~3] = value

    # ================================================================== RPC ops (see ../DESIGN.md)
    @staticmethod
    def _mem_args(addr, width):
        addr = _int("address", addr) & 0xFFFFFFFF
        width = _int("width", width)
        if width not in (8, 16, 32):
            raise ValueError("width must be 8, 16 or 32")
        if addr & (width // 8 - 1):
            raise ValueError(f"address {addr:08x} is not aligned to {width // 8} bytes")
        return addr, width

    def rpc_mem_r(self, addr, width):
        addr, width = self._mem_args(addr, width)
        return self.bus_read(addr, width, self.now_ns)

    def rpc_mem_w(self, addr, width, value):
        addr, width = self._mem_args(addr, width)
        self.bus_write(addr, width, _int("value", value) & 0xFFFFFFFF, self.now_ns)

    def rpc_pin_init(self, gpio, mode=None, pull=None, value=None, alt=None):
        self.gpio.pin_init(gpio, mode, pull, value, alt, self.now_ns)

    def rpc_pin_v(self, gpio, value=None):
        if value is not None:
            value = _int("value", value)
        return self.gpio.pin_value(gpio, value, self.now_ns)

    def rpc_pin_irq(self, gpio, trigger=None, hard=None):
        self.gpio.set_irq(gpio, trigger, hard is not None and trigger is not None)

    def rpc_pwm_new(self, gpio, kw=None):
        self.mp_pwm.new(gpio, kw or {})

    def rpc_pwm_init(self, gpio, kw=None):
        self.mp_pwm.init(gpio, kw or {})

    def rpc_pwm_freq(self, gpio, f=None):
        return self.mp_pwm.freq(gpio, f)

    def rpc_pwm_duty_u16(self, gpio, d=None):
        return self.mp_pwm.duty_u16(gpio, d)

    def rpc_pwm_duty_ns(self, gpio, ns=None):
        return self.mp_pwm.duty_ns(gpio, ns)

    def rpc_pwm_deinit(self, gpio):
        self.mp_pwm.deinit(gpio)

    def rpc_adc_new(self, source):
        return self.adc.new(source, self.now_ns)

    def rpc_adc_r(self, channel):
        return self.adc.read_u16(channel, self.now_ns)

    def _dma_ch(self, ch):
        ch = _int("channel", ch)
        if not 0 <= ch < regs.DMA_NUM_CHANNELS:
            raise ValueError("channel closed")
        return self.dma.ch[ch]

    def rpc_dma_new(self):
        for c in self.dma.ch:
            if not c.claimed:
                c.claimed = True
                return c.num
        raise OSError(16, "EBUSY")   # dma_claim_unused_channel failed -> OSError(MP_EBUSY)

    def _read_buffer(self, cfg):
        if "read_b64" in cfg:
            if not isinstance(cfg["read_b64"], str):
                raise TypeError("read_b64 must be a str")
            data = base64.b64decode(cfg["read_b64"], validate=True)
        elif "read_words" in cfg:
            words = cfg["read_words"]
            if not isinstance(words, list) or not all(isinstance(w, int) for w in words):
                raise TypeError("read_words must be a list of ints")
            data = b"".join((w & 0xFFFFFFFF).to_bytes(4, "little") for w in words)
        else:
            raise TypeError("a buffer read needs read_words or read_b64")
        if len(data) > _READ_WINDOW:
            raise ValueError(f"virtual board: DMA read buffer above {_READ_WINDOW} bytes is not modelled")
        return data

    def rpc_dma_config(self, ch, cfg):
        c = self._dma_ch(ch)
        if not isinstance(cfg, dict):
            raise TypeError("config must be a dict")
        trigger = bool(cfg.get("trigger", False))
        vals = []
        data = None
        for name in ("read", "write", "count", "ctrl"):
            v = cfg.get(name)
            if v is None:
                continue
            if v == "buf" and name == "read":
                data = self._read_buffer(cfg)
                v = regs.SRAM_BASE + c.num * _READ_WINDOW
            elif v == "buf" and name == "write":
                # the DMA writes into the chip's SRAM model; the firmware's own buffer does not see it
                v = regs.SRAM_BASE + _WRITE_BASE + c.num * _WRITE_WINDOW
            vals.append((name, _int(name, v) & 0xFFFFFFFF))
        # everything validated: apply (as the C code, the last register written carries the trigger)
        if data is not None:
            o = c.num * _READ_WINDOW
            self.ram[o:o + len(data)] = data
        if trigger and not vals:
            self.dma.trigger(c, self.now_ns)
        for i, (name, v) in enumerate(vals):
            self.dma.set(c, name, v, self.now_ns, trigger and i == len(vals) - 1)

    def rpc_dma_reg(self, ch, name, value=None):
        c = self._dma_ch(ch)
        if name not in ("read", "write", "count", "ctrl"):
            raise AttributeError(f"'DMA' object has no attribute '{name}'")
        if value is None:
            return self.dma.get(c, name)
        self.dma.set(c, name, _int(name, value), self.now_ns)
        return None

    def rpc_dma_sync(self, ch, nbytes):
        """[write pointer, the channel's write window (nbytes, base64)]: a DMA write buffer as the chip's RAM holds
        it (rp2.DMA's `write` getter brings the firmware's buffer up to date with it)."""
        c = self._dma_ch(ch)
        nbytes = _int("nbytes", nbytes)
        if not 0 <= nbytes <= _WRITE_WINDOW:
            raise ValueError("virtual board: DMA write buffer above %d bytes is not modelled" % _WRITE_WINDOW)
        o = _WRITE_BASE + c.num * _WRITE_WINDOW
        return [self.dma.get(c, "write"), base64.b64encode(bytes(self.ram[o:o + nbytes])).decode()]

    def rpc_dma_active(self, ch, value=None):
        c = self._dma_ch(ch)
        if value is not None:
            if value:
                self.dma.trigger(c, self.now_ns)
            else:
                self.dma.abort(c)
        return c.busy

    def rpc_dma_close(self, ch):
        c = self._dma_ch(ch)
        c.claimed = False    # rp2 close() only unclaims: a running channel keeps running

    def rpc_wdt_new(self, timeout_ms):
        self.wdt.start(timeout_ms, self.now_ns)

    def rpc_wdt_feed(self):
        self.wdt.feed(self.now_ns)

    def rpc_uid(self):
        if self.uid:
            return self.uid
        return hashlib.sha256(f"picostim-virtual-rp2040:{self.seed}".encode()).digest()[:8].hex()

    def rpc_reset_cause(self):
        return self.cause

    def rpc_freq(self, hz=None):
        if hz is None:
            return self.sys_hz
        hz = _int("freq", hz)
        khz = hz // 1000
        if not self._clock_achievable(khz):
            raise ValueError("cannot change frequency")
        if khz * 1000 != self.sys_hz:
            self.sys_hz = khz * 1000
            self.pwm.clock_changed(self.now_ns)
        return None

    @staticmethod
    def _clock_achievable(khz):
        """pico-sdk check_sys_clock_khz: 12 MHz crystal, VCO 750-1600 MHz, FBDIV 16-320, post dividers 1-7."""
        if khz <= 0:
            return False
        for fbdiv in range(16, 321):
            vco = 12000 * fbdiv
            if vco < 750000 or vco > 1600000:
                continue
            for pd1 in range(1, 8):
                for pd2 in range(1, pd1 + 1):
                    if vco == khz * pd1 * pd2:
                        return True
        return False
