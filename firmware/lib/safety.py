# Safety supervisor: the paths that must act without the main loop.
#
# Current sensing: I_SENSE sees |I| only while a phase drives, so hard machine.Timer callbacks take samples ("looks")
# inside the phases of every pair, on a plan made at arm() (where and why: below). The engine starts the slice itself and knows to the sys clock tick when
# the first +phase starts; from there the schedule is exact in ticks (the repetition period is a whole number of
# ticks, not of microseconds). The rp2 Timer counts whole microseconds, so a periodic timer would drift against the
# PWM; instead each callback arms the next sample as a one-shot at the deadline computed from the exact tick schedule
# (whole us + a sub-us remainder carried in ticks, so the rounding never accumulates, for hours; ticks_add/ticks_diff
# for the 30-bit wrap). Two Timer objects take turns (a callback arms the other one, never re-inits the alarm that is
# firing). A callback that comes more than TOL_US after its deadline (an interrupt held off, e.g. by a flash write)
# does not judge: its sample is discarded and the chain goes on at the next deadline still ahead.
#
# Why a sample fits any phase of 20-1000 us: a machine.ADC.read_u16 from Python costs ~20 us on an RP2040, so
# bracketing two of them with counter reads (~58 us from the first counter read to the last) could never prove a
# sample inside a phase shorter than ~120 us: every short-phase sample was discarded and S4/S7 never acted. Here the
# conversions are started through the ADC registers instead (CS.START_ONCE with AINSEL, one mem32 write: the ADC
# samples at once and has RESULT 2 us later, long before the next Python statement reads it), and only what must be
# proven is bracketed:
#   c0 = counter; START(I_SENSE); c1 = counter; i = RESULT       -> I valid iff SENSE_SETTLE_US <= c0 <= c1 in-phase
# The I conversion lies between c0 and c1 (two register accesses, ~12 us), so I is proven in-phase for any phase of
# at least SENSE_SETTLE_US + 12 us plus the callback's lateness. Where V fits, it is converted first and I last:
#   c0; START(V); c1; v = RESULT; START(I); c2; i = RESULT      -> V valid iff c0, c1 in-phase, I iff c1, c2
# (~30 us from c0 to c2), so the I conversion is always one register access before the closing counter read.
# A phase too short for the V read gives a sample with I only (V_OK = 0): S4 is decided on I alone, and S7 by the
# compliance test (current cannot reach the setpoint, or the probe current while paused); Z_max needs V.
#
# Where the looks are aimed, and why (S4 goal: output off <= 1 ms after the onset, for onsets anywhere):
# an over-current that starts after a look's I conversion is seen only at the next look. Nothing flows between
# pairs, so the only onsets the next pair cannot catch in time are those after the last look of the -phase. Hence:
# * the last look of each phase is aimed as late as the bracket allows: its closing counter read LATE_SLACK_US
#   before the phase ends (slack for a late interrupt; later than that the look is discarded, never misjudged).
# * the pair's last look (-phase) ends with one more I conversion END_SLACK_US before the phase ends, unbracketed:
#   I_SENSE carries current only inside a phase, so a reading can only be raised by it, never faked low; it only
#   moves the last conversion to the very end (where it fits with the same V: phases >= 30 us I-only, >= 48 us
#   with V; 38-47 us phases keep V instead). What stays uncovered is the -phase after its last conversion:
#   ~END_SLACK_US per pair (LATE_SLACK_US + MEM_US, ~10 us, where the end conversion does not fit; ~20 us in a pair
#   whose end conversion comes too late): an onset there is caught at the next pair, a period later. No sampling
#   supervisor can close it (nothing flows after the phase to look at); the FAULT_N comparator backs it up, and
#   the bench measures its width.
# * looks are added so that no instant of a phase is more than LOOK_SPAN_US before the next I conversion: long
#   phases get looks spread over them, and the -phase's first look comes early enough to catch an onset at the
#   end of the +phase across the gap (gap <= 500 us). LOOK_SPAN_US + the ~50 us from the conversion to ISET 0
#   and the bridge forced idle stays under the 1 ms goal with ~100 us to spare.
# * when two looks would come closer than MIN_LOOK_GAP_US (short phases and gap) one callback cannot sample and
#   re-arm for the next in time: the +phase look is dropped, because the -phase look also covers the whole +phase
#   (it comes less than LOOK_SPAN_US after it), while the reverse would leave the -phase a period uncovered.
# A trip forces the bridge inputs low at once (GPIO OUTOVER), not at the pair's end (the idle CC word latches only
# at the wrap): "bridge idle" within the phase in progress; clear_trip hands the pins back to the PWM.
# The aim constants only decide how many samples land in-phase (status: samples vs missed), never whether a sample
# is believed: the counter brackets decide that, so a late interrupt can never be mistaken for "no current".
#
# Decisions are made in integer ADC counts inside the callback (no allocation, no floats):
#   S4 over-current: i_raw > trip_raw        -> kill output, ISET 0, HV off, latch (main loop reports it)
#   S7 contact lost: setpoint >= minimum and i < setpoint/2 (compliance) or Z > Z_max -> ISET to probe current
#   S5 FAULT_N falling edge (hard pin IRQ)   -> kill output, latch
# The hardware comparator on FAULT_N (1100 uA) backs up what a sample per pulse cannot catch inside one pulse.
# The main loop reads the ADC through machine.ADC only while not stimulating (selftest), so it never races these
# register-level conversions; the CS writes leave TS_EN clear (the temperature sensor is not used).
import time
from array import array
from machine import Pin, ADC, Timer, mem32

import board as B
import rp2regs as R
from pscodes import CONTACT_PROBE_UA, CONTACT_MIN_SETPOINT_UA

# flag slots (array 'i')
TRIPPED = 0       # 0 none, 1 over-current, 2 FAULT_N
TRIP_RAW = 1
TRIP_US = 2
I_RAW = 3
V_RAW = 4
SAMPLES = 5
MISSED = 6
PAUSED = 7
SET_RAW = 8
ARMED = 9
CC_A = 10
PAUSE_I = 11
PAUSE_V = 12
CC_B = 13
CTR_POS = 14      # slice counter at the last valid +phase sample (where in the phase the timer lands)
CTR_NEG = 15      # ... and at the last valid -phase sample
MID_US = 16       # ticks_us of the +phase start of the pair being looked at (whole us; the rest is in MID_FRAC)
PER_US = 17       # repetition period, us (rounded; for quiet_now)
NEG_US = 18       # -phase start after the +phase start, us (rounded; for quiet_now)
TOL_US = 19       # a sample later than this after its deadline is discarded
LATE = 20         # samples discarded for timing (an interrupt held off, e.g. by a flash write)
DUE_US = 21       # ticks_us deadline of the armed sample
DUE_NEG = 22      # 1: the armed look is in the -phase
MID_FRAC = 23     # sub-us part of the +phase start at MID_US, in sys clock ticks (0..CLK-1)
PER_INT = 24      # repetition period = PER_INT us + PER_FRAC ticks
PER_FRAC = 25
NEG_TICKS = 26    # -phase start after the +phase start, sys clock ticks (= phase + gap)
CLK = 27          # sys clock ticks per us
NEXT_TIMER = 28   # which of the two Timer objects arms the next sample
AIM_US = 29       # the first look's deadline after the +phase start, us (negative: before the phase)
PH_US = 30        # phase width, us (for quiet_now)
SETTLE_CTS = 31   # slice counts into a phase before which I_SENSE is not trusted
WITH_V = 32       # 1: the phase leaves room for the V_ELECTRODE conversion before the I_SENSE one
V_OK = 33         # 1: V_RAW is from the last valid sample; 0: that sample had I only (V_RAW then reads 0)
LOOK = 34         # index of the armed look in the pair's plan
NLOOKS = 35       # looks per pair in the plan
NFLAGS = 36

# a sample deadline closer than this when arming is skipped: arming reads the clock, Timer.init reads it again
# (3 us each), so a closer alarm fires late and the sample would land past its window (counted missed for nothing)
LEAD_US = 8
# RP2040 figures (MicroPython at 125 MHz; the board profiles' mcu.vclock is calibrated to the same): they aim the
# samples, the counter brackets judge them (see the top of this file).
SENSE_SETTLE_US = 3   # I_SENSE (R_sense x gain 10) settled this long after a bridge edge
# deadline -> first counter read: Timer.init takes the relative period from its own clock read, one ticks read
# after ours (3); the engine's enable stamp is read one ticks read after the enable (3); alarm IRQ entry (3), the
# lateness ticks read (3) and the counter access (6). On the virtual board the first read lands where aimed to
# within 1 us (status sample_ctr).
ENTRY_US = 18
MEM_US = 6            # one mem32 access from Python
WIN_I_US = 2 * MEM_US     # c0 -> c1: the I_SENSE START write and the closing counter read
WIN_V_US = 5 * MEM_US     # c0 -> c2: V START, counter, V RESULT, I START, closing counter read
# the look plan (see the top of this file)
LATE_SLACK_US = 4     # a phase's last look closes its bracket this long before the phase ends (late-interrupt slack)
LOOK_SPAN_US = 800    # from any instant of a phase to the next planned I conversion, at most
END_SLACK_US = 2      # the -phase's end conversion (unbracketed, see _look) this long before the phase ends
MIN_LOOK_GAP_US = 100     # deadlines closer than this cannot be chained (sample + re-arm ~50 us in the profile)
MAX_LOOKS = 8         # per pair (phases <= 1000 us, gap <= 500 us need at most 4 with LOOK_SPAN_US 800)

ADC_BASE = 0x4004C000     # RP2040 ADC: CS (EN b0, START_ONCE b2, AINSEL 14:12), RESULT +4 (12 bits)
ADC_RESULT = ADC_BASE + 4
ADC_CS_EN_START = 1 | 4
ADC_FIRST_GPIO = 26

TRIP_OVER_CURRENT = 1
TRIP_FAULT_N = 2
MIN_Z_RAW = 10    # below ~8 uA the impedance estimate is noise; do not decide contact from it


def _look_at(s):
    """(c0, with V) for a look whose I conversion is s us into its phase: c0 = its first counter read, us into the
    phase; V is converted before I where that still starts after the settling time."""
    first = SENSE_SETTLE_US + 1
    if s - 4 * MEM_US >= first:
        return s - 4 * MEM_US, 1
    return max(first, s - MEM_US), 0


def look_plan(ph, gap):
    """The looks of one pair in time order, [(c0 us into its phase, neg, with V, with the end conversion)], for phase
    and gap widths in us (why there: see the top of this file)."""
    first_s = SENSE_SETTLE_US + 1 + MEM_US            # earliest I conversion (an I-only look at the settled time)
    last = max(first_s, ph - LATE_SLACK_US - MEM_US)  # the I conversion of a phase's last look, closed in-phase
    looks = []
    n = (last + LOOK_SPAN_US - 1) // LOOK_SPAN_US     # +phase: from its start, no instant over LOOK_SPAN_US from a look
    for j in range(1, n + 1):
        c0, v = _look_at(last * j // n)
        looks.append((c0, 0, v, 0))
    # the pair's last look: one more I conversion END_SLACK_US before the -phase ends, after the bracketed one,
    # where that fits with the same V as without it
    c0, v = _look_at(last)
    end = 0
    win = WIN_V_US if v else WIN_I_US
    if ph - END_SLACK_US - 2 * MEM_US - win >= SENSE_SETTLE_US + 1:
        c0, end = ph - END_SLACK_US - 2 * MEM_US - win, 1
    s_end = c0 + win - MEM_US                         # its bracketed I conversion
    # earlier -phase looks: an onset at the end of the +phase seen within LOOK_SPAN_US across the gap, then no
    # instant over LOOK_SPAN_US from a look; each at least MIN_LOOK_GAP_US before the last one
    q = LOOK_SPAN_US - gap - (ph - last)
    if q < s_end:
        q = max(first_s, min(q, c0 - MIN_LOOK_GAP_US + MEM_US))
        m = (s_end - q + LOOK_SPAN_US - 1) // LOOK_SPAN_US
        for j in range(m):
            a, w = _look_at(q + (s_end - q) * j // m)
            looks.append((a, 1, w, 0))
    looks.append((c0, 1, v, end))
    # looks too close after the one before: the earlier one goes (a +phase look: the -phase one covers it)
    out = []
    for lk in looks:
        t = lk[0] + (ph + gap if lk[1] else 0)
        while out and t - (out[-1][0] + (ph + gap if out[-1][1] else 0)) < MIN_LOOK_GAP_US:
            out.pop()
        out.append(lk)
    return out[-MAX_LOOKS:]


class Supervisor:
    def __init__(self, board, engine, amp, hv_pin):
        self.board = board
        self.engine = engine
        self.amp = amp
        self.hv = hv_pin
        pins = board["pins"]
        an = board["analog"]
        lim = board["limits"]
        self.f = array("i", [0] * NFLAGS)
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
        self.ctr = engine.ctr
        self.adc_cs = ADC_BASE
        self.adc_res = ADC_RESULT
        self.cs_i = ADC_CS_EN_START | ((pins["I_SENSE"] - ADC_FIRST_GPIO) << 12)
        self.cs_v = ADC_CS_EN_START | ((pins["V_ELECTRODE"] - ADC_FIRST_GPIO) << 12)
        self.t_armed_us = 0
        # the pair's look plan (filled by arm): deadline after the +phase start (sys clock ticks), kind (b0 -phase,
        # b1 with V), lateness tolerance (us)
        self.look_off = array("i", [0] * MAX_LOOKS)
        self.look_kind = array("i", [0] * MAX_LOOKS)   # b2: the end conversion (see _look)
        self.look_tol = array("i", [0] * MAX_LOOKS)
        # a trip forces both bridge inputs low at once (the idle CC word would only latch at the pair's end)
        self.bridge_ctrl_a = R.gpio_ctrl(pins["BRIDGE_A"])
        self.bridge_ctrl_b = R.gpio_ctrl(pins["BRIDGE_B"])
        self.bridge_forced_low = R.FUNCSEL_PWM | R.OUTOVER_LOW
        # two one-shot timers that take turns, made once (no allocation when the chain re-arms in the callback)
        self.timers = (Timer(), Timer())
        self._tick_cb = self._tick
        self._fault_cb = self._fault
        self._mem32 = mem32
        self.fault_pin = Pin(pins["FAULT_N"], Pin.IN, Pin.PULL_UP)
        self.fault_pin.irq(handler=self._fault_cb, trigger=Pin.IRQ_FALLING, hard=True)

    # --- hard-IRQ paths: no allocation, no floats ---
    def recalibrate(self):
        """Thresholds in raw counts again after the calibration record changed (calib.py, through board.py's
        conversions): the over-current trip decides on calibrated current."""
        self.trip_raw = B.ua_to_adc_raw(self.board, self.trip_ua)
        self.min_set_raw = B.ua_to_adc_raw(self.board, CONTACT_MIN_SETPOINT_UA)
        self.probe_raw = B.ua_to_adc_raw(self.board, CONTACT_PROBE_UA)

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
            self.f[TRIP_US] = time.ticks_us()
        self.kill()

    def _fault(self, _pin):
        self._trip(TRIP_FAULT_N, 0)

    def _tick(self, _t):
        # one-shot deadline reached: look at the phase it was armed for (unless too late), then arm the next one
        f = self.f
        if f[ARMED] == 0:
            return
        if time.ticks_diff(time.ticks_us(), f[DUE_US]) > f[TOL_US]:
            f[LATE] += 1
        elif f[DUE_NEG]:
            # -phase: CTR in [CC_B, TOP] and no wrap between the counter reads
            self._look(f[CC_B] + f[SETTLE_CTS], 0x10000, CTR_NEG)
        else:
            # +phase: CTR in [0, CC_A)
            self._look(f[SETTLE_CTS], f[CC_A], CTR_POS)
        if f[ARMED]:                     # (a trip disarms)
            self._arm_next()

    def _arm_next(self):
        """Arm the first look still ahead after the armed one (LOOK): the next in the pair's plan, else the plan of
        the next pair. Exact tick schedule: the pair's +phase start in MID_US (whole us) + MID_FRAC (ticks), each
        look's deadline a fixed number of ticks after it, rounded to the nearest us once."""
        f = self.f
        c = f[CLK]
        offs = self.look_off
        now = time.ticks_us()
        k = f[LOOK]
        while True:
            k += 1
            if k >= f[NLOOKS]:
                k = 0
                t = f[MID_FRAC] + f[PER_FRAC]
                f[MID_US] = time.ticks_add(f[MID_US], f[PER_INT] + t // c)
                f[MID_FRAC] = t % c
            t = f[MID_FRAC] + offs[k]
            due = time.ticks_add(f[MID_US], t // c + (1 if 2 * (t % c) >= c else 0))
            if time.ticks_diff(due, now) >= LEAD_US:
                self._arm_at(due, k)
                return

    def _arm_at(self, due, k):
        f = self.f
        f[DUE_US] = due
        f[LOOK] = k
        kind = self.look_kind[k]
        f[DUE_NEG] = kind & 1
        f[WITH_V] = kind >> 1
        f[TOL_US] = self.look_tol[k]
        k = f[NEXT_TIMER]
        f[NEXT_TIMER] = 1 - k
        self.timers[k].init(mode=Timer.ONE_SHOT, period=time.ticks_diff(due, time.ticks_us()), tick_hz=1000000,
                            callback=self._tick_cb, hard=True)

    def _look(self, lo, hi, slot):
        """One look at the phase whose settled counter range is [lo, hi): conversions started through the ADC
        registers, each bracketed by counter reads, V (where planned) before I so I comes last (see the top of this
        file)."""
        f = self.f
        m = self._mem32
        ctr = self.ctr
        c0 = m[ctr] & 0xFFFF
        a = c0
        v = -1                           # (not measured)
        if f[WITH_V]:
            m[self.adc_cs] = self.cs_v   # V_ELECTRODE sampled now
            a = m[ctr] & 0xFFFF
            if lo <= c0 <= a < hi:
                v = m[self.adc_res] & 0xFFF  # (a 2 us conversion, done by now)
        m[self.adc_cs] = self.cs_i       # I_SENSE sampled now
        b = m[ctr] & 0xFFFF
        if a < lo or b < a or b >= hi:
            f[MISSED] += 1
            return
        i = m[self.adc_res] & 0xFFF
        if self.look_kind[f[LOOK]] & 4:
            # the end conversion, unbracketed: I_SENSE carries current only inside a phase, so a reading above the
            # proven one was taken inside one (an over-current is one, whichever phase); one that lands past the
            # phase end reads ~0 and changes nothing
            m[self.adc_cs] = self.cs_i
            e = m[self.adc_res] & 0xFFF
            if e > i:
                i = e
        f[slot] = c0
        self._judge(i, v)

    def _judge(self, i, v):
        # v < 0: no V_ELECTRODE in this sample (V_RAW/PAUSE_V then read 0 and V_OK 0, so readers of V_RAW never
        # see a negative count)
        f = self.f
        f[I_RAW] = i
        f[V_OK] = 1 if v >= 0 else 0
        f[V_RAW] = v if v >= 0 else 0
        f[SAMPLES] += 1
        if i > self.trip_raw:
            self._trip(TRIP_OVER_CURRENT, i)
            return
        if f[PAUSED]:
            return
        s = f[SET_RAW]
        lost = s >= self.min_set_raw and 2 * i < s
        if not lost and v >= 0 and i >= MIN_Z_RAW and v * self.zk > self.z_max * i:
            lost = True
        if lost:
            f[PAUSED] = 1
            f[PAUSE_I] = i
            f[PAUSE_V] = v if v >= 0 else 0
            self.amp.set_probe()

    # --- main-loop side ---
    def arm(self):
        """Start phase-locked looks for the engine's current schedule (after engine.gate(True)). Does not wait:
        the first look still ahead of the first pair is armed."""
        self.disarm()
        e = self.engine
        p = e.plan
        f = self.f
        c = p["clk_per_us"]
        d = p["div"]
        f[CC_A] = p["phase_counts"]
        f[CC_B] = p["cc_b"]
        f[CLK] = c
        f[PER_INT] = p["period_ticks"] // c
        f[PER_FRAC] = p["period_ticks"] % c
        f[NEG_TICKS] = (p["phase_counts"] + p["gap_counts"]) * d
        f[PER_US] = p["period_us"]
        f[NEG_US] = (f[NEG_TICKS] + c // 2) // c
        ph = p["phase_counts"] * d // c
        f[PH_US] = ph
        f[SETTLE_CTS] = (SENSE_SETTLE_US * c + d - 1) // d
        looks = look_plan(ph, p["gap_counts"] * d // c)
        n = len(looks)
        for k in range(n):
            at, neg, v, end = looks[k]
            # deadline: ENTRY_US before the first counter read; tolerance: later than this the I bracket cannot
            # close inside the phase any more
            self.look_off[k] = (at - ENTRY_US) * c + (f[NEG_TICKS] if neg else 0)
            self.look_kind[k] = neg | (v << 1) | (end << 2)
            self.look_tol[k] = max(1, ph - at - (WIN_V_US if v else WIN_I_US) + ENTRY_US)
        f[NLOOKS] = n
        f[AIM_US] = self.look_off[0] // c
        # the pair before the first one, its last look: _arm_next steps on to the first look still ahead
        t = e.first_start_frac - f[PER_FRAC]
        f[MID_US] = time.ticks_add(e.first_start_us, t // c - f[PER_INT])
        f[MID_FRAC] = t % c
        f[LOOK] = n - 1
        f[NEXT_TIMER] = 0
        self.t_armed_us = time.ticks_us()
        f[ARMED] = 1
        self._arm_next()

    def disarm(self):
        self.f[ARMED] = 0
        self.timers[0].deinit()
        self.timers[1].deinit()

    def quiet_now(self):
        """True when an ISET change now settles (5 RC time constants) before the next pulse and cannot land
        inside a pair: amplitude changes between the phases of one pair would unbalance it. Always True when not
        sampling or when the period leaves no such window (then ramp steps are small anyway)."""
        f = self.f
        if f[ARMED] == 0 or f[PER_US] <= 0:
            return True
        per = f[PER_US]
        lo = f[NEG_US] + f[PH_US] + 20             # after the -phase ends
        hi = per - 20 - self.settle_us             # settled before the next +phase starts
        if hi <= lo:
            return True
        pos = time.ticks_diff(time.ticks_us(), f[MID_US]) % per     # from the +phase start
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
        return i * 2 >= self.probe_raw and i >= MIN_Z_RAW // 2 and (f[V_OK] == 0 or v * self.zk <= self.z_max * i)

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
