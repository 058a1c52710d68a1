# Safety supervisor: the paths that must act without the main loop.
#
# Why the timing is in hardware. I_SENSE carries |I| only while a phase drives, so a current sample is worth
# something only if it provably lies inside a phase. On the real MicroPython image a hard machine.Timer callback
# starts 36 us (p50) to 64 us (max) after its deadline, and every register access from Python costs several us more:
# a phase of 20 us cannot be hit from Python at all, and a 200 us one only with luck. So no Python decides *when* a
# conversion happens; the chip does, and Python only reads results whose instants are known by construction:
#
#   sampler   PWM slice SAMPLER_SLICE (no board pin uses it) counts with the output slice's divider. Its wraps come
#             at the planned sample instants of a pair: its TOP is rewritten at every wrap from a table (DMA "top",
#             paced by its own wrap DREQ, read ring), and at every wrap DMA "cs" (same DREQ, second table) writes
#             the ADC's CS: START_ONCE with AINSEL (I_SENSE or V_ELECTRODE), or a word that starts nothing.
#             The conversion samples at that wrap, a few sys clocks after the planned tick.
#   lock      gated trains (the usual case: a pair, then idle periods): the output's own CC chain, at the wrap that
#             loads the active word (the start of the last idle period, a known length before the pair), chains
#             three unpaced channels: CTR and TOP of the sampler (so it wraps exactly at the pair start) and a
#             MULTI_CHAN_TRIGGER that starts "top" and "cs" for one pass over their tables (2^k transfers, so the
#             read ring is back at the table start for the next pair). Between pairs the sampler idles at TOP
#             0xFFFF and no DMA runs. Continuous trains: the sampler is enabled together with the output slice and
#             its table of periods adds up to one pair, so "top" and "cs" simply run forever.
#   results   ADC FIFO -> DMA "rx" (DREQ_ADC) into a 256-entry ring (write ring, no CPU). Exactly `n` conversions
#             per pair in a fixed order, so the k-th result since arming belongs to slot k mod n of the plan.
#   scanning  one hard Timer callback per cluster of samples (after the last sample of each phase, and every
#             SCAN_SPAN_US inside long phases) reads how far "rx" has written and judges the new results. Its
#             lateness (IRQ entry, other IRQs, GC) delays the verdict but never changes what was measured.
#
# Where the samples are, per phase (why): the last I sample END_US before the phase ends (an over-current that
# starts in the phase is seen in that phase), I samples at most SAMPLE_SPAN_US apart from SETTLE_US after the
# edge (an onset at the phase start is seen within a span), and one V_ELECTRODE sample V_BEFORE_US before the
# last I sample (Z = V/I of the same phase, for S7). A 20 us phase gets I at 4 us, V at 16 us and I at 19 us.
# Decisions, in integer ADC counts in the scan (no allocation, no floats):
#   S4 over-current: any I sample > trip_raw       -> kill output (HV off, bridge forced low, ISET 0), latch
#   S7 contact lost: setpoint >= minimum and I < setpoint/2, or Z > Z_max   -> ISET to the probe current
#   S5 FAULT_N falling edge (hard pin IRQ)          -> kill output, latch
#   stall: the ring lapped before a scan read it (the scanner was held off longer than the ring holds), or the
#          main loop sees no scan for that long      -> kill output, latch (no unsupervised stimulation)
# The hardware comparator on FAULT_N (1100 uA) backs up what the samples cannot see between them. The main loop
# reads the ADC through machine.ADC only while not stimulating (selftest); the FIFO is off then.
import sys
import time
import uctypes
from array import array
from machine import Pin, ADC, Timer, mem32
from micropython import const
import rp2

import board as B
import rp2regs as R
from pscodes import CONTACT_PROBE_UA, CONTACT_MIN_SETPOINT_UA

# flag slots (array 'i'); indices read by the app and status are kept stable
TRIPPED = const(0)       # 0 none, 1 over-current, 2 FAULT_N, 3 stall
TRIP_RAW = const(1)
_TRIP_US = const(2)
I_RAW = const(3)
V_RAW = const(4)
SAMPLES = const(5)       # results judged (I and V)
MISSED = const(6)        # samples lost to a lapped ring
PAUSED = const(7)
SET_RAW = const(8)
ARMED = const(9)
CC_A = const(10)
_PAUSE_I = const(11)
_PAUSE_V = const(12)
PAIRS = const(13)        # pairs whose samples were all judged
CTR_POS = const(14)      # planned counter of the +phase's last I sample (status sample_ctr)
CTR_NEG = const(15)      # ... and of the -phase's
_MID_US = const(16)       # ticks_us of the +phase start of the pair being scanned (for quiet_now; to ~1 us)
PER_US = const(17)
_NEG_US = const(18)
_RPOS = const(19)         # ring index of the next result to judge
LATE = const(20)         # scans that came more than _LATE_US after their deadline
DUE_US = const(21)
_SLOT = const(22)         # plan slot of the result at _RPOS
_CLK = const(27)
_NEXT_TIMER = const(28)
SCAN_US = const(29)      # ticks_us of the last scan
_PH_US = const(30)
CAP_US = const(31)       # the ring holds this long: a longer gap between scans lost samples
NSLOT = const(32)
V_OK = const(33)
LOOK = const(34)         # index of the armed scan in the pair's scan plan
NLOOKS = const(35)
_BUSY_US = const(36)      # time spent in scans, us (from each scan's first statement; the IRQ entry before it is not seen)
E_POS = const(37)     # plan slot of the +phase's last I sample (its V, if any, is the slot before)
_E_NEG = const(38)     # ... of the -phase's
VMASK = const(39)     # b0: the +phase has a V sample, b1: the -phase
DUE_FRAC = const(40)  # sub-us part of the armed scan's exact instant, sys clock ticks
_OFF0_US = const(41)   # the pair's first scan after the pair start, us (rounded down)
_NFLAGS = const(42)
_RING_MASK = const(255)

TRIP_OVER_CURRENT = const(1)
TRIP_FAULT_N = const(2)
TRIP_STALL = const(3)

SAMPLER_SLICE = const(3)
_LATE_US = const(500)
_LEAD_US = const(30)           # a scan closer than this when arming is skipped (arming itself takes ~25 us)
MAX_SLOTS = const(30)        # samples per pair (tables of 32 words)
RING = const(256)            # ring entries (u16), 512 bytes aligned to 512
_MAX_SCANS = const(12)
_TABLE_WORDS = const(32)   # words per sampler table (2^k used)
_MIN_Z_RAW = const(10)        # below ~8 uA the impedance estimate is noise; do not decide contact from it


ADC_FCS = const(0x4004C008)
_ADC_CS_EN_START = const(1 | 4)
_ADC_FIRST_GPIO = const(26)


def _windows(a):
    """In `a` (array 'H' of 2*RING entries, i.e. twice the ring's bytes): the ring, aligned to its 512 bytes (a DMA
    write ring), and the two sampler tables (TABLE_WORDS 32-bit words each, aligned to their 128 bytes for a DMA
    read ring) in the slack around it. Table words are written as pairs of u16 (values < 65536, high half 0)."""
    nb = 2 * RING
    off = (-uctypes.addressof(a)) & (nb - 1)
    tb = 4 * _TABLE_WORDS
    t = off - 2 * tb if off >= 2 * tb else off + nb      # (below the ring if there is room, else above it)
    m = memoryview(a)
    return m[off // 2:(off + nb) // 2], m[t // 2:(t + tb) // 2], m[(t + tb) // 2:(t + 2 * tb) // 2]


class Supervisor:
    def __init__(self, board, engine, amp, hv_pin):
        self.board = board
        self.engine = engine
        self.amp = amp
        self.hv = hv_pin
        pins = board["pins"]
        an = board["analog"]
        lim = board["limits"]
        for g in pins.values():
            if g is not None and g < 30 and (g >> 1) & 7 == SAMPLER_SLICE:
                raise ValueError("pin %d is on the sampler's PWM slice %d" % (g, SAMPLER_SLICE))
        self.f = array("i", [0] * _NFLAGS)
        self.adc_i = ADC(Pin(pins["I_SENSE"]))
        self.adc_v = ADC(Pin(pins["V_ELECTRODE"]))
        self.trip_ua = B.trip_limit_ua(board)
        self.trip_raw = B.ua_to_adc_raw(board, self.trip_ua)
        self.min_set_raw = B.ua_to_adc_raw(board, CONTACT_MIN_SETPOINT_UA)
        self.probe_ua = CONTACT_PROBE_UA
        self.probe_raw = B.ua_to_adc_raw(board, CONTACT_PROBE_UA)
        # Z = V/I in ohms from raw counts: vref cancels, Z = v_raw*div*R_sense*gain / i_raw
        self.zk = an["v_electrode_divider"] * an["r_sense_ohm"] * an["sense_gain"]
        self.z_max = lim["z_max_ohm"]
        self.settle_us = 5 * an.get("iset_rc_tau_us", 500)
        self.cs_i = _ADC_CS_EN_START | ((pins["I_SENSE"] - _ADC_FIRST_GPIO) << 12)
        self.cs_v = _ADC_CS_EN_START | ((pins["V_ELECTRODE"] - _ADC_FIRST_GPIO) << 12)
        self.cs_none = 1 | ((pins["I_SENSE"] - _ADC_FIRST_GPIO) << 12)   # ADC on, nothing started
        s = SAMPLER_SLICE
        self.s_mask = 1 << s
        self.s_csr = R.pwm_reg(s, R.PWM_CSR)
        self.s_div = R.pwm_reg(s, R.PWM_DIV)
        self.s_ctr = R.pwm_reg(s, R.PWM_CTR)
        self.s_top = R.pwm_reg(s, R.PWM_TOP)
        # buffers made once (DMA rings must be aligned; no allocation on the IRQ paths)
        self._ring_a = None      # ring and tables: allocated at the first prime (a session), then kept
        self.ring = self.top_t = self.cs_t = None
        self.planned = None      # the plan the tables were built for
        self.kick_w = array("I", [0, 0, 0])     # sampler CTR, sampler TOP, MULTI_CHAN_TRIGGER mask
        self.thr = array("H", range(MAX_SLOTS))      # per plan slot: a result above this trips (V slots: never)
        self.scan_off = array("i", [0] * _MAX_SCANS)     # ticks after the pair start
        self.scan_step = array("i", [0] * _MAX_SCANS)    # ticks from the scan before (scan 0: from the last one)
        self.dmas = [None] * 6
        self.rx = None
        self.ring_base = 0
        self.t_armed_us = 0
        self.primed = False
        # a trip forces both bridge inputs low at once (the idle CC word would only latch at the pair's end)
        self.bridge_ctrl_a = R.gpio_ctrl(pins["BRIDGE_A"])
        self.bridge_ctrl_b = R.gpio_ctrl(pins["BRIDGE_B"])
        self.bridge_forced_low = R.FUNCSEL_PWM | R.OUTOVER_LOW
        self.timers = (Timer(), Timer())
        self._tick_cb = self._scan
        self._fault_cb = self._fault
        self._mem32 = mem32
        self.fault_pin = Pin(pins["FAULT_N"], Pin.IN, Pin.PULL_UP)
        self.fault_pin.irq(handler=self._fault_cb, trigger=Pin.IRQ_FALLING, hard=True)
        engine.sampler = self

    def recalibrate(self):
        """Raw thresholds again after the unit's calibration record changed (calib.py through board.ua_to_adc_raw):
        the over-current trip decides on calibrated current."""
        self.trip_raw = B.ua_to_adc_raw(self.board, self.trip_ua)
        self.min_set_raw = B.ua_to_adc_raw(self.board, CONTACT_MIN_SETPOINT_UA)
        self.probe_raw = B.ua_to_adc_raw(self.board, CONTACT_PROBE_UA)
        self.planned = None          # (the per-slot limits are rebuilt at the next prime)

    # --- sampler hardware (main loop: called by the engine around enabling its slice) ---
    def halt(self):
        """Sampler off: its DMA channels stopped and released, FIFO off, slice stopped."""
        self.primed = False
        for i in range(6):
            ch = self.dmas[i]
            if ch is not None:
                ch.ctrl = 0
                ch.active(0)
                ch.close()
                self.dmas[i] = None
        self.rx = None
        mem32[ADC_FCS] = 0
        mem32[R.PWM_EN + R.ALIAS_CLR] = self.s_mask

    def prime(self, p, cc_first):
        """Program the sampler for plan p while both slices are stopped (the engine enables them together after
        this returns). cc_first: the engine's DMA channel that writes the active CC word (gated trains), else None.
        Returns the PWM EN bits to set with the output's. The code lives in sampler.py, loaded for this and
        dropped again (main loop only; the heap is an RP2040's)."""
        self.halt()
        if self._ring_a is None:
            # (built from a range: no temporary as large as the array, which would fragment the heap)
            self._ring_a = array("H", range(2 * RING))
            self.ring, self.top_t, self.cs_t = _windows(self._ring_a)
        import sampler
        try:
            return sampler.prime(self, p, cc_first)
        finally:
            del sys.modules["sampler"]

    # --- hard-IRQ paths: no allocation, no floats ---
    def kill(self):
        # fastest first: no compliance supply = no current within the pulse; then the bridge inputs forced low (the
        # phase in progress ends now, electrodes tied); then no setpoint; then no further pairs
        self.hv.value(0)
        m = self._mem32
        m[self.bridge_ctrl_a] = self.bridge_forced_low
        m[self.bridge_ctrl_b] = self.bridge_forced_low
        self.amp.force_zero()
        self.engine.kill()
        self.f[ARMED] = 0

    def _trip(self, reason, raw):
        if self.f[TRIPPED] == 0:
            self.f[TRIPPED] = reason
            self.f[TRIP_RAW] = raw
            self.f[_TRIP_US] = time.ticks_us()
        self.kill()

    def _fault(self, _pin):
        self._trip(TRIP_FAULT_N, 0)

    def _scan(self, _t):
        """Judge every result the DMA has put in the ring since the last scan, then arm the next scan. Over-current
        first, in the tightest loop (every result against its slot's limit: the trip limit for I, none for V); the
        loop always runs to the end, so a trip latches the largest over-limit current of the range (the fault
        record's figure) and a scan's cost does not depend on where in the range the fault is. Then contact and Z
        from each phase's last I sample (and its V), the latest of each polarity."""
        f = self.f
        if f[ARMED] == 0:
            return
        now = time.ticks_us()
        if time.ticks_diff(now, f[DUE_US]) > _LATE_US:
            f[LATE] += 1
        w = ((self.rx.write - self.ring_base) >> 1) & _RING_MASK
        q = f[_RPOS]
        if time.ticks_diff(now, f[SCAN_US]) > f[CAP_US]:
            # the ring may have lapped: results were lost unjudged (the scanner was held off too long)
            f[MISSED] += (w - q) & _RING_MASK
            self._trip(TRIP_STALL, 0)
            return
        f[SCAN_US] = now
        ring = self.ring
        thr = self.thr
        n = f[NSLOT]
        s = f[_SLOT]
        q0 = q
        s0 = s
        over = 0
        while q != w:
            x = ring[q]
            if x > thr[s] and x > over:
                over = x
            q = (q + 1) & _RING_MASK
            s += 1
            if s == n:
                s = 0
        if over:
            self._trip(TRIP_OVER_CURRENT, over)
            return
        new = (w - q0) & _RING_MASK
        if new:
            # the latest phase end in the range (either polarity: an open contact shows in both); the verdict
            # first, the bookkeeping after it (on the chip each statement here costs microseconds)
            jn = (f[_E_NEG] - s0) % n
            jn = jn + ((new - 1 - jn) // n) * n if jn < new else -1
            jp = (f[E_POS] - s0) % n
            jp = jp + ((new - 1 - jp) // n) * n if jp < new else -1
            if jn >= 0 or jp >= 0:
                if jn > jp:
                    j = jn
                    vm = f[VMASK] & 2
                else:
                    j = jp
                    vm = f[VMASK] & 1
                x = ring[(q0 + j) & _RING_MASK]
                v = ring[(q0 + j - 1) & _RING_MASK] if vm else -1
                if f[PAUSED] == 0:
                    sp = f[SET_RAW]
                    if (sp >= self.min_set_raw and 2 * x < sp) or \
                            (vm and x >= _MIN_Z_RAW and v * self.zk > self.z_max * x):
                        self.amp.set_probe()
                        f[PAUSED] = 1
                        f[_PAUSE_I] = x
                        f[_PAUSE_V] = v if vm else 0
                f[I_RAW] = x
                f[V_OK] = 1 if vm else 0
                f[V_RAW] = v if vm else 0
            f[SAMPLES] += new
            f[PAIRS] += (s0 + new) // n
        f[_RPOS] = w
        f[_SLOT] = s
        if f[ARMED]:
            self._arm_next()
        f[_BUSY_US] += time.ticks_diff(time.ticks_us(), now)

    def _arm_next(self):
        """Arm the next scan. Exact tick schedule: DUE_US (whole us) + DUE_FRAC (ticks) is the exact instant of
        the armed scan; the next is scan_step[k] ticks after it (across the period end too), armed at the first
        whole us at or after it. A scan already due runs at once (never skipped: it may hold a phase's last sample),
        unless the one after it is due too (then that one judges both: no burst of scans after a long hold-off)."""
        f = self.f
        c = f[_CLK]
        n = f[NLOOKS]
        step = self.scan_step
        now = time.ticks_us()
        k = f[LOOK]
        while True:
            k += 1
            if k == n:
                k = 0
            t = f[DUE_FRAC] + step[k]
            f[DUE_US] = time.ticks_add(f[DUE_US], t // c)
            f[DUE_FRAC] = t % c
            due = f[DUE_US] + (1 if f[DUE_FRAC] else 0)
            if k == 0:
                f[_MID_US] = time.ticks_add(due, -f[_OFF0_US])
            if time.ticks_diff(due, now) >= _LEAD_US:
                break
            k2 = k + 1 if k + 1 < n else 0
            if time.ticks_diff(time.ticks_add(due, (step[k2] + c - 1) // c), now) > 0:
                break
        f[LOOK] = k
        j = f[_NEXT_TIMER]
        f[_NEXT_TIMER] = 1 - j
        per = time.ticks_diff(due, time.ticks_us())
        if per < 1:
            per = 1                 # (a period <= 0 would arm the alarm ~71 minutes ahead on rp2)
        self.timers[j].init(mode=Timer.ONE_SHOT, period=per, tick_hz=1000000, callback=self._tick_cb, hard=True)

    # --- main-loop side ---
    def arm(self):
        """Start scanning for the engine's current schedule (after engine.gate(True), which primed the sampler).
        Does not wait: the first scan still ahead is armed."""
        self.timers[0].deinit()
        self.timers[1].deinit()
        f = self.f
        f[ARMED] = 0
        e = self.engine
        p = e.plan
        if not self.primed or p is None:
            return
        c = p["clk_per_us"]
        d = p["div"]
        f[_CLK] = c
        f[PER_US] = p["period_us"]
        neg = (p["phase_counts"] + p["gap_counts"]) * d
        f[_NEG_US] = (neg + c // 2) // c
        f[_PH_US] = p["phase_counts"] * d // c
        n = f[NSLOT]
        f[CAP_US] = (RING - n) * p["period_us"] // n
        f[_RPOS] = 0
        f[_SLOT] = 0
        # scan steps (ticks from the scan before), then the exact instant of the last scan of the pair before the
        # first one: _arm_next steps on from there to the first scan still ahead
        off = self.scan_off
        ns = f[NLOOKS]
        step = self.scan_step
        for k in range(1, ns):
            step[k] = off[k] - off[k - 1]
        step[0] = p["period_ticks"] - off[ns - 1] + off[0]
        f[_OFF0_US] = off[0] // c
        t = e.first_start_frac + off[ns - 1] - p["period_ticks"]
        f[DUE_US] = time.ticks_add(e.first_start_us, t // c)
        f[DUE_FRAC] = t % c
        f[_MID_US] = time.ticks_add(e.first_start_us, -f[PER_US])
        f[LOOK] = ns - 1
        f[_NEXT_TIMER] = 0
        self.t_armed_us = time.ticks_us()
        f[SCAN_US] = self.t_armed_us
        f[ARMED] = 1
        self._arm_next()

    def disarm(self):
        self.f[ARMED] = 0
        self.timers[0].deinit()
        self.timers[1].deinit()

    def stalled(self):
        """The scanner has not run for longer than the ring holds while armed (held off, or its timer lost):
        the main loop then fails safe."""
        f = self.f
        return f[ARMED] != 0 and time.ticks_diff(time.ticks_us(), f[SCAN_US]) > f[CAP_US] + f[PER_US]

    def stall_trip(self):
        self._trip(TRIP_STALL, 0)

    def quiet_now(self):
        """True when an ISET change now settles (5 RC time constants) before the next pulse and cannot land
        inside a pair: amplitude changes between the phases of one pair would unbalance it. Always True when not
        sampling or when the period leaves no such window (then ramp steps are small anyway)."""
        f = self.f
        if f[ARMED] == 0 or f[PER_US] <= 0:
            return True
        per = f[PER_US]
        lo = f[_NEG_US] + f[_PH_US] + 20             # after the -phase ends
        hi = per - 20 - self.settle_us             # settled before the next +phase starts
        if hi <= lo:
            return True
        pos = time.ticks_diff(time.ticks_us(), f[_MID_US]) % per     # from the +phase start
        return lo <= pos <= hi

    def set_setpoint(self, ua):
        self.f[SET_RAW] = B.ua_to_adc_raw(self.board, ua)

    def tripped(self):
        return self.f[TRIPPED]

    def clear_trip(self):
        """Unlatch (the output is idle by now: the app idles it on the trip): the bridge pins back to the PWM,
        which holds the idle word."""
        self.f[TRIPPED] = 0
        self.f[TRIP_RAW] = 0
        mem32[self.bridge_ctrl_a] = R.FUNCSEL_PWM
        mem32[self.bridge_ctrl_b] = R.FUNCSEL_PWM

    def fault_pin_asserted(self):
        return self.fault_pin.value() == 0

    def paused(self):
        return self.f[PAUSED] != 0

    def contact_back(self):
        """While paused at the probe current: contact is back when the probe current flows into Z <= Z_max (Z
        unknown when the last sample had no V: phase too short for it, then the probe current flowing decides)."""
        f = self.f
        i = f[I_RAW]
        v = f[V_RAW]
        return i * 2 >= self.probe_raw and i >= _MIN_Z_RAW // 2 and (f[V_OK] == 0 or v * self.zk <= self.z_max * i)

    def clear_pause(self):
        self.f[PAUSED] = 0

    def measured_ua(self):
        return B.adc_raw_to_ua(self.board, self.f[I_RAW])

    def measured_mv(self):
        if not self.f[V_OK]:
            return None
        return B.adc_raw_to_electrode_mv(self.board, self.f[V_RAW])

    def z_ohm(self, i_raw, v_raw):
        if i_raw <= 0 or v_raw <= 0:
            return None         # (v_raw 0: not measured -- phase too short for V -- or below one LSB)
        return v_raw * self.zk // i_raw
