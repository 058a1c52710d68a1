"""RP2040 PWM block: 8 slices, register file, and an exact timeline of every slice's counter.

Each slice keeps a list of `Segment`s: stretches of virtual time during which its latched configuration (DIV, TOP,
CC, CSR, running or halted) is constant. Within a segment the counter is periodic, so pin levels, edges, wraps and
average duty are computed in closed form from the segment, never by stepping the counter. A new segment starts
when a register write takes effect: CSR/DIV/CTR at the next count boundary, CC/TOP at the next wrap (double
buffering, datasheet 4.5.2.3) or at once while the slice is halted.

Counter model: position p counts 0..L-1 per period, L = (TOP+1)*(PH_CORRECT+1). Trailing-edge: CTR = p. Phase-correct:
CTR = p for p <= TOP, else 2*TOP+1-p (each end held two counts). Channel output = (CTR < CC) XOR INV. A "wrap" is p
going L-1 -> 0; that is where INTR is set, DREQ_PWM_WRAP pulses and CC/TOP latch. If CTR is above TOP at a segment
start (TOP lowered, CTR written) the counter runs up to 0xFFFF first ("lead-in").
One count lasts DIV = div16/16 system clocks; a fractional DIV uses first-order sigma-delta (floor/ceil per count).
Halted: the counter and the output levels freeze (the output stage is clocked by the counter; pico-sdk's
pwm_set_enabled notes: pins stay as they were, and forcing them needs one counted cycle), so CC, TOP or INV written
while halted change nothing at the pins until the slice counts again.
"""
from bisect import bisect_right

from . import regs

NS = 1_000_000_000
UP, DOWN = 1, 2


class Segment:
    __slots__ = ("t0", "p0", "lead", "kw1", "run", "div16", "top", "cc", "ph", "inv_a", "inv_b", "fsys",
                 "frozen_a", "frozen_b", "at_wrap", "L", "lin")

    def __init__(self, t0, p0, lead, run, div16, top, cc, csr, fsys, frozen_a=0, frozen_b=0, at_wrap=False):
        self.t0 = t0
        self.run = run
        self.div16 = div16 if div16 >= 16 else div16 + 4096  # DIV_INT = 0 divides by 256
        self.top = top
        self.cc = cc
        self.ph = 1 if csr & regs.CSR_PH_CORRECT else 0
        self.inv_a = 1 if csr & regs.CSR_A_INV else 0
        self.inv_b = 1 if csr & regs.CSR_B_INV else 0
        self.fsys = fsys
        self.frozen_a = frozen_a
        self.frozen_b = frozen_b
        self.at_wrap = at_wrap
        self.L = (top + 1) << self.ph
        # lead: 0 none; UP = CTR above TOP counting up to 0xFFFF before the first wrap; DOWN = (phase-correct)
        # counting down from a CTR above TOP to 0. p0 is then the CTR value, otherwise the period position.
        if not self.ph:
            lead = UP if p0 > top else 0
        elif lead == UP:
            lead = UP if p0 > top else 0
        elif lead == DOWN and p0 <= top:
            p0, lead = 2 * top + 1 - p0, 0
        elif not lead and p0 >= self.L:
            p0 = self.L - 1
        self.lead = lead
        self.p0 = p0
        self.kw1 = (0x10000 - p0) if lead == UP else ((p0 + 1) if lead == DOWN else (self.L - p0))
        # ns per count when it is an exact integer (the common DIV=1 at 125 MHz case: 8 ns) -> fast linear maths
        cyc_ns, rem = divmod(NS, fsys)
        self.lin = cyc_ns * (self.div16 // 16) if (rem == 0 and self.div16 % 16 == 0) else 0

    # ---- count <-> time
    def time_of(self, k):
        """Virtual time at which count k (k counts after t0) begins."""
        if self.lin:
            return self.t0 + k * self.lin
        return self.t0 + ((k * self.div16) >> 4) * NS // self.fsys

    def count_at(self, t):
        """Index of the count in progress at time t (>= t0)."""
        dt = t - self.t0
        if self.lin:
            return dt // self.lin
        c_max = ((dt + 1) * self.fsys - 1) // NS
        return ((c_max + 1) * 16 - 1) // self.div16

    # ---- positions
    def ctr_of_count(self, k):
        return self.state_at(k)[0]

    def state_at(self, k):
        """(CTR, counting down) at count k (k may be -1 after PH_RET)."""
        if k < self.kw1 and self.lead:
            return (self.p0 + k, False) if self.lead == UP else (self.p0 - k, True)
        if k < self.kw1:
            p = (self.p0 + k) % self.L
        else:
            p = (k - self.kw1) % self.L
        if self.ph and p > self.top:
            return 2 * self.top + 1 - p, True
        return p, False

    @staticmethod
    def from_state(ctr, down, ph, top):
        """(p0, lead) that starts a segment (mode ph, TOP top) with the counter at CTR, going up or down."""
        if ph and down:
            return (2 * top + 1 - ctr, 0) if ctr <= top else (ctr, DOWN)
        return ctr, (UP if ctr > top else 0)

    def raw_levels_at_count(self, k):
        c = self.ctr_of_count(k)
        return (1 if c < (self.cc & 0xFFFF) else 0), (1 if c < (self.cc >> 16) else 0)

    def pin_levels_at_count(self, k):
        a, b = self.raw_levels_at_count(k)
        return a ^ self.inv_a, b ^ self.inv_b

    def level(self, ch, t):
        if not self.run:
            return self.frozen_b if ch else self.frozen_a
        inv = self.inv_b if ch else self.inv_a
        c = self.ctr_of_count(self.count_at(max(t, self.t0)))
        return (1 if c < ((self.cc >> 16) if ch else (self.cc & 0xFFFF)) else 0) ^ inv

    def next_wrap_after(self, t):
        """Time of the first wrap strictly after t (t may precede t0), or None if halted."""
        if not self.run:
            return None
        if t < self.t0:
            return self.t0 if self.at_wrap else self.time_of(self.kw1)
        k = self.count_at(t)
        if k < self.kw1:
            kw = self.kw1
        else:
            kw = self.kw1 + ((k - self.kw1) // self.L + 1) * self.L
        return self.time_of(kw)

    def wraps_in(self, ta, tb):
        """Number of wraps in (ta, tb] within this segment's own timeline (ignores segment end)."""
        if not self.run or tb <= ta:
            return 0
        ka = self.count_at(max(ta, self.t0)) if ta >= self.t0 else -1
        kb = self.count_at(tb)

        def n_upto(k):  # wraps with index <= k
            return 0 if k < self.kw1 else (k - self.kw1) // self.L + 1
        return n_upto(kb) - n_upto(ka)

    def duty(self, ch):
        if not self.run:
            return float(self.frozen_b if ch else self.frozen_a)
        inv = self.inv_b if ch else self.inv_a
        cc = (self.cc >> 16) if ch else (self.cc & 0xFFFF)
        d = min(cc, self.top + 1) / (self.top + 1)
        return 1.0 - d if inv else d

    def edges(self, ch, ta, tb, out):
        """Append (t, level) for every output transition of channel ch with ta < t < tb (segment-local)."""
        if not self.run or tb <= ta:
            return
        inv = self.inv_b if ch else self.inv_a
        cc = (self.cc >> 16) if ch else (self.cc & 0xFFFF)
        top, L, kw1 = self.top, self.L, self.kw1
        k_lo = self.count_at(ta) if ta >= self.t0 else -1
        k_hi = self.count_at(tb - 1)
        if k_hi <= k_lo:
            return
        trans = []  # (count index, raw level after)
        if self.lead:
            # lead-in: CTR runs from p0 up to 0xFFFF (UP) or down to 0 (DOWN), then the periodic pattern starts
            p0 = self.p0
            if self.lead == UP:
                if p0 < cc < p0 + kw1:
                    trans.append((cc - p0, 0))
            elif 0 < cc <= p0:
                trans.append((p0 - cc + 1, 1))
            trans.append((kw1, 1 if cc > 0 else 0))
        if 0 < cc <= top:
            if self.ph:
                pattern = ((cc, 0), (L - cc, 1))
            else:
                pattern = ((0, 1), (cc, 0))
            if not self.lead:
                for e, lv in pattern:
                    k = e - self.p0
                    if 0 <= k < kw1:
                        trans.append((k, lv))
            j0 = max(0, (k_lo - kw1 - L) // L)
            j1 = (k_hi - kw1) // L + 1
            if j1 > j0:
                e0, l0 = pattern[0]
                e1, l1 = pattern[1]
                base = kw1 + j0 * L
                for j in range(j0, j1):
                    trans.append((base + e0, l0))
                    trans.append((base + e1, l1))
                    base += L
        if not trans:
            return
        if self.lin:
            t0, lin = self.t0, self.lin
            for k, lv in trans:
                if k_lo < k <= k_hi:
                    out.append((t0 + k * lin, lv ^ inv))
        else:
            for k, lv in trans:
                if k_lo < k <= k_hi:
                    out.append((self.time_of(k), lv ^ inv))


class Slice:
    def __init__(self, num, block):
        self.num = num
        self.block = block
        self.segs = []
        self.seg_t = []
        self.power_on(0)

    def power_on(self, t):
        self.csr = 0
        self.div = regs.DIV_RESET
        self.cc = 0
        self.top = regs.TOP_RESET
        self.latch_t = None
        self.intr = False
        self.intr_since = t
        self.version = getattr(self, "version", 0) + 1
        self._push(Segment(t, 0, False, False, self.div, self.top, self.cc, 0, self.block.fsys()))

    # ---- segment bookkeeping
    @property
    def seg(self):
        return self.segs[-1]

    def _push(self, s):
        if self.segs and self.segs[-1].t0 >= s.t0:
            # several changes at one instant (or at one count boundary): the last one wins
            while self.segs and self.segs[-1].t0 >= s.t0 and len(self.segs) > 1:
                if self.segs[-1].at_wrap and self.segs[-1].t0 == s.t0:
                    s.at_wrap = True
                self.segs.pop()
                self.seg_t.pop()
            if self.segs and self.segs[-1].t0 >= s.t0:
                if self.segs[-1].at_wrap and self.segs[-1].t0 == s.t0:
                    s.at_wrap = True
                self.segs[-1] = s
                self.seg_t[-1] = s.t0
                self.version += 1
                return
        self.segs.append(s)
        self.seg_t.append(s.t0)
        self.version += 1

    def seg_at(self, t):
        i = bisect_right(self.seg_t, t) - 1
        return self.segs[i if i >= 0 else 0]

    def running(self):
        return bool(self.csr & regs.CSR_EN)

    def _restart(self, t, p_override=None, advance=0):
        """New segment carrying the live CSR/DIV, from the next count boundary (running) or from t (halted).

        The counter carries over as (CTR, direction), so a PH_CORRECT change continues from the same CTR."""
        cur = self.seg
        csr, div = self.csr, self.div
        run = bool(csr & regs.CSR_EN)
        at_wrap = False
        if cur.run:
            k = cur.count_at(max(t, cur.t0))
            if cur.time_of(k) < t:
                k += 1
            ts = cur.time_of(k)
            if p_override is None and advance == 0 and k > 0 and k >= cur.kw1 and (k - cur.kw1) % cur.L == 0:
                at_wrap = True   # the boundary is a wrap of the old timeline: it still counts as one
            if k > 0:
                fa, fb = cur.pin_levels_at_count(k - 1)
            elif len(self.segs) > 1:
                prev = self.segs[-2]        # the levels on the pins just before this boundary
                fa, fb = prev.level(0, ts - 1), prev.level(1, ts - 1)
            else:
                fa, fb = cur.frozen_a, cur.frozen_b
            ctr, down = cur.state_at(k + advance)
        else:
            ts = max(t, cur.t0)
            fa, fb = cur.frozen_a, cur.frozen_b
            ctr, down = cur.state_at(0)
            if advance:
                # PH_ADV steps a halted slice and moves its pins
                old_mode = (csr & ~regs.CSR_PH_CORRECT) | (regs.CSR_PH_CORRECT if cur.ph else 0)
                tmp = Segment(ts, cur.p0, cur.lead, True, div, cur.top, cur.cc, old_mode, cur.fsys)
                ctr, down = tmp.state_at(advance)
                fa, fb = tmp.pin_levels_at_count(advance)
        top, cc = (cur.top, cur.cc) if run else (self.top, self.cc)
        if p_override is not None:
            p0, lead = p_override, UP
        else:
            p0, lead = Segment.from_state(ctr, down, 1 if csr & regs.CSR_PH_CORRECT else 0, top)
        self._push(Segment(ts, p0, lead, run, div, top, cc, csr, self.block.fsys(), fa, fb, at_wrap))
        self._update_latch(t)

    def _update_latch(self, t):
        cur = self.seg
        if self.cc == cur.cc and self.top == cur.top:
            self.latch_t = None
        elif cur.run:
            self.latch_t = cur.next_wrap_after(t)
        else:
            # halted: a CC/TOP write is latched at once (the pins stay frozen until the counter runs)
            self.latch_t = None
            ctr, down = cur.state_at(0)
            p0, lead = Segment.from_state(ctr, down, cur.ph, self.top)
            self._push(Segment(max(t, cur.t0), p0, lead, False, self.div, self.top, self.cc, self.csr,
                               cur.fsys, cur.frozen_a, cur.frozen_b))

    def do_latch(self):
        """Process the pending CC/TOP latch at its wrap."""
        t = self.latch_t
        self.latch_t = None
        self.intr_check(t)
        self._push(Segment(t, 0, False, True, self.div, self.top, self.cc, self.csr, self.block.fsys(),
                           at_wrap=True))

    # ---- register access (t = current virtual time)
    def read(self, off, t):
        if off == regs.PWM_CSR:
            return self.csr & 0x3F
        if off == regs.PWM_DIV:
            return self.div
        if off == regs.PWM_CTR:
            return self.ctr(t)
        if off == regs.PWM_CC:
            return self.cc
        if off == regs.PWM_TOP:
            return self.top
        return 0

    def write(self, off, v, t):
        v &= 0xFFFFFFFF
        if off == regs.PWM_CSR:
            self.write_csr(v, t)
        elif off == regs.PWM_DIV:
            v &= 0xFFF
            if v != self.div:
                self.div = v
                self._restart(t)
        elif off == regs.PWM_CTR:
            self._restart(t, p_override=v & 0xFFFF)
        elif off == regs.PWM_CC:
            self.cc = v
            self._update_latch(t)
            self.block.note_cc(self, t)
        elif off == regs.PWM_TOP:
            self.top = v & 0xFFFF
            self._update_latch(t)
            self.block.note_cc(self, t)

    def write_csr(self, v, t):
        new = v & 0x3F
        adv = 1 if v & regs.CSR_PH_ADV else (-1 if (v & regs.CSR_PH_RET and self.running()) else 0)
        if new & regs.CSR_DIVMODE_MASK:
            self.block.chip.note(f"PWM slice {self.num}: DIVMODE {(new >> 4) & 3} (B-pin gated/edge counting) is not "
                                 "modelled; the counter runs free")
        if new != self.csr or adv:
            self.intr_check(t)
            self.csr = new
            self._restart(t, advance=adv)

    def ctr(self, t):
        s = self.seg_at(t)
        if not s.run:
            return s.ctr_of_count(0)
        return s.ctr_of_count(s.count_at(max(t, s.t0)))

    def wrap_after(self, t):
        """First wrap strictly after t, across segments (None if the slice is halted from then on)."""
        i = bisect_right(self.seg_t, t) - 1
        if i < 0:
            i = 0
        n = len(self.segs)
        while i < n:
            s = self.segs[i]
            end = self.seg_t[i + 1] if i + 1 < n else None
            c = s.next_wrap_after(t)
            if c is not None and (end is None or c < end):
                return c
            if end is None:
                return None
            nxt = self.segs[i + 1]
            if nxt.at_wrap and nxt.t0 > t:
                return nxt.t0
            i += 1
        return None

    def intr_check(self, now):
        if not self.intr:
            w = self.wrap_after(self.intr_since)
            if w is not None and w <= now:
                self.intr = True


class PwmBlock:
    def __init__(self, chip):
        self.chip = chip
        self.slices = [Slice(i, self) for i in range(regs.PWM_NUM_SLICES)]
        self.inte = 0
        self.intf = 0

    def fsys(self):
        return self.chip.sys_hz

    def power_on(self, t):
        for s in self.slices:
            s.power_on(t)
        self.inte = 0
        self.intf = 0

    def note_cc(self, sl, t):
        self.chip._note_pwm_write(sl, t)

    # ---- register bus (offset within the PWM block, normal alias)
    def read(self, off, t):
        if off < regs.PWM_EN:
            s, o = divmod(off, regs.PWM_SLICE_STRIDE)
            return self.slices[s].read(o, t)
        if off == regs.PWM_EN:
            return sum(1 << s.num for s in self.slices if s.csr & regs.CSR_EN)
        if off in (regs.PWM_INTR, regs.PWM_INTS):
            v = 0
            for s in self.slices:
                s.intr_check(t)
                if s.intr:
                    v |= 1 << s.num
            return v if off == regs.PWM_INTR else ((v & self.inte) | self.intf)
        if off == regs.PWM_INTE:
            return self.inte
        if off == regs.PWM_INTF:
            return self.intf
        return 0

    def write(self, off, v, t):
        if off < regs.PWM_EN:
            s, o = divmod(off, regs.PWM_SLICE_STRIDE)
            self.slices[s].write(o, v, t)
        elif off == regs.PWM_EN:
            for s in self.slices:
                en = (v >> s.num) & 1
                if en != (s.csr & 1):
                    s.write_csr((s.csr & ~1) | en, t)
        elif off == regs.PWM_INTR:
            for s in self.slices:
                if v >> s.num & 1:
                    s.intr_check(t)
                    s.intr = False
                    s.intr_since = t
        elif off == regs.PWM_INTE:
            self.inte = v & 0xFF
        elif off == regs.PWM_INTF:
            self.intf = v & 0xFF

    # ---- pico-sdk style helpers used by machine.PWM (all at the chip's current time)
    def read_div(self, s):
        return self.slices[s].div

    def read_top(self, s):
        return self.slices[s].top

    def read_cc(self, s):
        return self.slices[s].cc

    def write_div(self, s, div16):
        self.slices[s].write(regs.PWM_DIV, div16, self.chip.now_ns)

    def write_top(self, s, top):
        self.slices[s].write(regs.PWM_TOP, top, self.chip.now_ns)

    def set_chan_level(self, s, ch, level):
        sl = self.slices[s]
        level &= 0xFFFF
        v = (sl.cc & 0x0000FFFF) | (level << 16) if ch else (sl.cc & 0xFFFF0000) | level
        sl.write(regs.PWM_CC, v, self.chip.now_ns)

    def set_polarity(self, s, inv_a, inv_b):
        sl = self.slices[s]
        v = (sl.csr & ~(regs.CSR_A_INV | regs.CSR_B_INV)) | (regs.CSR_A_INV if inv_a else 0) | \
            (regs.CSR_B_INV if inv_b else 0)
        sl.write_csr(v, self.chip.now_ns)

    def set_enabled(self, s, en):
        sl = self.slices[s]
        sl.write_csr((sl.csr & ~regs.CSR_EN) | (regs.CSR_EN if en else 0), self.chip.now_ns)

    def clock_changed(self, t):
        """machine.freq(): DIV/TOP stay, every PWM time scales with the new clk_sys."""
        for s in self.slices:
            s._restart(t)

    def prune(self, t_keep):
        for s in self.slices:
            i = bisect_right(s.seg_t, t_keep) - 1
            if i > 0:
                del s.segs[:i]
                del s.seg_t[:i]
