"""RP2040 watchdog: machine.WDT start/feed, CTRL.ENABLE (clearable through mem32), expiry time, reset reason.

The counter loads timeout_ms*1000*2 ticks (RP2040-E1: it decrements twice per microsecond) and expires when it
reaches zero. machine.WDT has no deinit; only clearing CTRL.ENABLE (bit 30) stops it. SCRATCH0-7 survive a
watchdog reset and are cleared at power-on.
"""
from . import regs


class Watchdog:
    def __init__(self, chip):
        self.chip = chip
        self.scratch = [0] * 8
        self.power_on(1)

    def power_on(self, cause):
        self.enabled = False
        self.load_ticks = 0
        self.deadline = None        # virtual ns of expiry while enabled
        self.paused_ticks = 0       # counter value held while disabled
        self.reason = 0 if cause == 1 else regs.WDT_REASON_TIMER
        self.ctrl_other = 0         # PAUSE_* bits, kept for read-back
        if cause == 1:
            self.scratch = [0] * 8

    # machine.WDT(timeout=...)
    def start(self, timeout_ms, t):
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int):
            raise TypeError(f"can't convert {type(timeout_ms).__name__} to int")
        if (timeout_ms & 0xFFFFFFFF) > regs.WDT_TIMEOUT_MAX_MS:
            raise ValueError(f"timeout exceeds {regs.WDT_TIMEOUT_MAX_MS}")
        self.load_ticks = min(timeout_ms * 1000 * regs.WDT_TICKS_PER_US, regs.WDT_CTRL_TIME_MASK)
        self.enabled = True
        self.feed(t)

    def feed(self, t):
        self._load(self.load_ticks, t)

    def _load(self, ticks, t):
        if self.enabled:
            self.deadline = t + ticks * 1000 // regs.WDT_TICKS_PER_US
        else:
            self.paused_ticks = ticks

    def remaining_ticks(self, t):
        if self.enabled and self.deadline is not None:
            return max(0, (self.deadline - t) * regs.WDT_TICKS_PER_US // 1000)
        return self.paused_ticks

    def expired(self, t):
        return self.enabled and self.deadline is not None and t >= self.deadline

    def next_event(self):
        return self.deadline if self.enabled else None

    # registers (offset within WATCHDOG block)
    def read(self, off, t):
        if off == regs.WDT_CTRL:
            return (regs.WDT_CTRL_ENABLE if self.enabled else 0) | self.ctrl_other | \
                (self.remaining_ticks(t) & regs.WDT_CTRL_TIME_MASK)
        if off == regs.WDT_REASON:
            return self.reason
        if regs.WDT_SCRATCH0 <= off < regs.WDT_SCRATCH0 + 32:
            return self.scratch[(off - regs.WDT_SCRATCH0) // 4]
        if off == regs.WDT_TICK:
            return (1 << 9) | (1 << 10) | 12   # ENABLE | RUNNING | CYCLES=12 (12 MHz xosc)
        return 0

    def write(self, off, v, t):
        v &= 0xFFFFFFFF
        if off == regs.WDT_CTRL:
            if v & regs.WDT_CTRL_TRIGGER:
                self.chip.watchdog_trigger(t)
                return
            en = bool(v & regs.WDT_CTRL_ENABLE)
            self.ctrl_other = v & (7 << 24)
            if en and not self.enabled:
                self.enabled = True
                self.deadline = t + self.paused_ticks * 1000 // regs.WDT_TICKS_PER_US
            elif not en and self.enabled:
                self.paused_ticks = self.remaining_ticks(t)
                self.enabled = False
                self.deadline = None
        elif off == regs.WDT_LOAD:
            self._load(v & regs.WDT_CTRL_TIME_MASK, t)
        elif regs.WDT_SCRATCH0 <= off < regs.WDT_SCRATCH0 + 32:
            self.scratch[(off - regs.WDT_SCRATCH0) // 4] = v
