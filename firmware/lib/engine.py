# Pulse engine: one PWM slice drives the H-bridge (channel A = +phase, channel B inverted = -phase).
#
# Every PWM period is either a whole balanced pair or whole idle, because the slice's 32-bit CC word (both
# channels at once) is only ever written whole (mem32 or DMA) and the hardware latches CC/TOP at the wrap.
#
# Low repetition rates are gated by DMA paced by DREQ_PWM_WRAP of the bridge slice, not by the CPU:
#   CC chain : [active word x1] -> [idle word x M] -> back to the start (CHAIN_TO loops it forever)
#   TOP chain: [pair TOP x1]    -> [filler TOPs, M periods in total]  -> back to the start
# Each channel transfers one word per wrap (one DREQ per wrap), so both chains step in lockstep, one period per
# word. No CPU is in the loop: garbage collection, flash writes or a slow main loop cannot add, drop or stretch a
# pair, the repetition period is exact to the PWM count (the planner makes TOP fillers add up to the period) and
# there is zero jitter. Both chains are armed while the slice is stopped and only then is the slice enabled, so
# their first transfers happen on the same wrap and they cannot be a period apart.
# Stopping: clear EN in every channel's CTRL (chain triggers are then ignored), abort, then write the idle word.
# A word already in the CC shadow still latches at the next wrap; it is a whole pair, so charge balance holds.
import time
from array import array
from machine import mem32
import rp2

import rp2regs as R
from planner import IDLE_WORD, TOP_MAX


class PulseEngine:
    def __init__(self, board):
        pins = board["pins"]
        self.gpio_a = pins["BRIDGE_A"]
        self.gpio_b = pins["BRIDGE_B"]
        s = (self.gpio_a >> 1) & 7
        self.slice = s
        self.mask = 1 << s
        self.csr = R.pwm_reg(s, R.PWM_CSR)
        self.div = R.pwm_reg(s, R.PWM_DIV)
        self.ctr = R.pwm_reg(s, R.PWM_CTR)
        self.cc = R.pwm_reg(s, R.PWM_CC)
        self.top = R.pwm_reg(s, R.PWM_TOP)
        self.en_set = R.PWM_EN + R.ALIAS_SET
        self.en_clr = R.PWM_EN + R.ALIAS_CLR
        self.idle_word = IDLE_WORD
        # DMA channels and their "stopped" CTRL values, fixed-size so the hard-IRQ kill path allocates nothing
        self.dmas = [None] * 5
        self.ctrl_off = array("i", [0] * 5)
        self.n_dma = 0
        self.bufs = []
        self.plan = None
        self.gated_on = False
        self.fire_mask = 0         # slices prepare() left ready for fire(); 0 = nothing prepared
        self.lead_counts = 0
        self.t_enable_us = 0
        self.first_start_us = 0    # ticks_us of the start of the first +phase after the last (re)start ...
        self.first_start_frac = 0  # ... plus this many sys clock ticks (less than one us)
        self.sampler = None        # safety.Supervisor: programs its sampler slice before the output starts
        self.setup_idle()

    # --- idle (S13) ---
    def setup_idle(self):
        """Slice stopped, CC = idle word (latched at once while stopped), B inverted, pins on the PWM function.
        A halted slice then holds both bridge inputs low."""
        mem32[self.en_clr] = self.mask
        mem32[self.csr] = R.CSR_B_INV
        mem32[self.div] = 1 << 4
        mem32[self.top] = TOP_MAX
        mem32[self.cc] = self.idle_word
        mem32[self.ctr] = 0
        mem32[R.gpio_ctrl(self.gpio_a)] = R.FUNCSEL_PWM
        mem32[R.gpio_ctrl(self.gpio_b)] = R.FUNCSEL_PWM

    def kill(self):
        """Output off from any context (hard IRQ included): no allocation, no floats."""
        mem32[self.cc] = self.idle_word
        for i in range(self.n_dma):
            self.dmas[i].ctrl = self.ctrl_off[i]
        mem32[self.cc] = self.idle_word

    def _close_dma(self):
        if self.sampler is not None:
            self.sampler.halt()
        n = self.n_dma
        for i in range(n):
            self.dmas[i].ctrl = self.ctrl_off[i]
        for i in range(n):
            self.dmas[i].active(0)
        mem32[self.cc] = self.idle_word
        for i in range(n):
            self.dmas[i].close()
            self.dmas[i] = None
        self.n_dma = 0
        self.bufs = []
        self.fire_mask = 0         # whatever was prepared is gone

    def stop(self):
        """Back to idle: chains stopped, idle word, slice stopped once the idle word has latched."""
        self.gated_on = False
        self._close_dma()
        mem32[self.cc] = self.idle_word
        p = self.plan
        if p is not None and (mem32[R.PWM_EN] & self.mask):
            # let the idle word latch before stopping the counter, so the pins freeze low: clear this slice's
            # wrap flag after the write, then wait for the next wrap (at most one period of <= 65536 counts)
            mem32[R.PWM_INTR] = self.mask
            limit = 65536 * p["div"] // p["clk_per_us"] + 50
            t0 = time.ticks_us()
            while not (mem32[R.PWM_INTR] & self.mask) and time.ticks_diff(time.ticks_us(), t0) < limit:
                time.sleep_us(20)
        mem32[self.en_clr] = self.mask
        mem32[self.cc] = self.idle_word

    # --- running ---
    def load(self, plan):
        """Select a waveform (output stays idle until gate(True))."""
        self.stop()
        self.plan = plan

    def _chain(self, segments, write_addr, treq):
        first = self.n_dma
        chans = []
        for _ in segments:
            ch = rp2.DMA()
            self.dmas[self.n_dma] = ch
            self.n_dma += 1
            chans.append(ch)
        n = len(chans)
        for i in range(n):
            word, count = segments[i]
            buf = array("I", [word])
            self.bufs.append(buf)
            nxt = chans[(i + 1) % n].channel if n > 1 else chans[i].channel
            ctrl = chans[i].pack_ctrl(size=2, inc_read=False, inc_write=False, treq_sel=treq, chain_to=nxt,
                                      irq_quiet=True)
            self.ctrl_off[first + i] = ctrl & ~1
            chans[i].config(read=buf, write=write_addr, count=count, ctrl=ctrl, trigger=(i == 0))

    def gate(self, on):
        """Start (on) or stop (off) pulses with the loaded waveform; used for start/stop."""
        if self.plan is None:
            return
        if not on:
            self.stop()
            return
        self.prepare()
        self.fire()

    def lead_us(self):
        """From fire() to the first pair's start, in us (gated trains lead with two idle periods)."""
        p = self.plan
        if p is None or p["continuous"]:
            return 0
        return 2 * (p["top_segments"][-1][0] + 1) * p["div"] // p["clk_per_us"]

    def prepare(self):
        """The slow half of gate(True) (DMA chains, the sampler's tables and channels: tens of ms of Python on the
        chip), done with both slices stopped so nothing runs until fire(). A burst edge prepares ahead of time and
        fires on time."""
        p = self.plan
        if p is None or self.gated_on or self.fire_mask:
            return
        self._close_dma()
        mem32[self.en_clr] = self.mask
        mem32[self.div] = p["div"] << 4
        mem32[self.ctr] = 0
        if p["continuous"]:
            # stopped slice: TOP latches immediately, the first period is a whole pair; CC stays the idle word
            # until fire() (a stopped slice's pins follow counter < CC: the active word here would hold the
            # +phase on, at the present amplitude, for as long as the sampler takes to prime)
            mem32[self.top] = p["top_pair"]
            mem32[self.cc] = self.idle_word
            lead_counts = 0
        else:
            # periods 1 and 2 are idle and as long as the last idle period of the train (so the active word is
            # written at the same distance before every pair, the first one too: the sampler locks there)
            lead_top = p["top_segments"][-1][0]
            mem32[self.top] = lead_top
            mem32[self.cc] = self.idle_word
            treq = R.DREQ_PWM_WRAP0 + self.slice
            self._chain(p["cc_segments"], self.cc, treq)
            self._chain(p["top_segments"], self.top, treq)
            # the chains' first words are written at the wrap ending period 1 and latch at the wrap ending
            # period 2, so the first pair is period 3
            lead_counts = 2 * (lead_top + 1)
        mask = self.mask
        if self.sampler is not None:
            mask |= self.sampler.prime(p, None if p["continuous"] else self.dmas[0])
        self.lead_counts = lead_counts
        self.fire_mask = mask

    def fire(self):
        """Enable the prepared slices together: the first pair starts lead_us() later."""
        mask = self.fire_mask
        p = self.plan
        if not mask or p is None:
            return
        lead_counts = self.lead_counts
        self.fire_mask = 0
        mem32[self.csr] = R.CSR_B_INV
        if p["continuous"]:
            mem32[self.cc] = p["active_word"]      # the +phase starts here, one statement before the counter
        mem32[self.en_set] = mask
        t = time.ticks_us()
        self.t_enable_us = t
        # exact in sys clock ticks (the supervisor's schedule carries the sub-us part)
        c = p["clk_per_us"]
        start_ticks = lead_counts * p["div"]
        self.first_start_us = time.ticks_add(t, start_ticks // c)
        self.first_start_frac = start_ticks % c
        self.gated_on = True

    def period_us(self):
        p = self.plan
        return p["period_us"] if p else 0
