# Safety supervisor: the paths that must act without the main loop.
#
# Current sensing: I_SENSE sees |I| only while a phase drives, so hard machine.Timer callbacks take one sample in the
# +phase and one in the -phase of every pair. The engine starts the slice itself and knows to the sys clock tick when
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
#   c0 = counter; START(I_SENSE); c1 = counter                   -> I valid iff SENSE_SETTLE_US <= c0 <= c1 in-phase
#   i = RESULT; START(V_ELECTRODE); c2 = counter; v = RESULT      -> V valid iff also c2 in-phase (no wrap)
# The I conversion lies between c0 and c1 (two register accesses, ~12 us), so I is proven in-phase for any phase of
# at least SENSE_SETTLE_US + 12 us plus the callback's lateness; the V conversion needs ~18 us more. The first
# counter read is aimed ENTRY_US after the alarm, at SENSE_SETTLE_US into the phase for short phases and so that
# the reads are centred in the phase for longer ones (lateness is then absorbed on both sides). A phase too short
# for the V read (or a late callback) gives a sample with I only (V_OK = 0): S4 is decided on I alone, and S7 by
# the compliance test (current cannot reach the setpoint, or the probe current while paused); Z_max needs V.
# The aim constants only decide how many samples land in-phase (status: samples vs missed), never whether a sample
# is believed: the counter brackets decide that, so a late interrupt can never be mistaken for "no current".
# Two looks per pair catch an over-current that starts after the +phase sample within the same pair (at most
# phase + gap later); when the -phase deadline is too close for the CPU (short phase and gap) only the +phase is seen.
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
MID_US = 16       # ticks_us of the latest scheduled +phase sample deadline (whole us; the rest is in MID_FRAC)
PER_US = 17       # repetition period, us (rounded; for quiet_now)
NEG_US = 18       # -phase start after the +phase start, us (rounded; for quiet_now)
TOL_US = 19       # a sample later than this after its deadline is discarded
LATE = 20         # samples discarded for timing (an interrupt held off, e.g. by a flash write)
DUE_US = 21       # ticks_us deadline of the armed sample
DUE_NEG = 22      # 1: the armed sample is the -phase one
MID_FRAC = 23     # sub-us part of the +phase deadline at MID_US, in sys clock ticks (0..CLK-1)
PER_INT = 24      # repetition period = PER_INT us + PER_FRAC ticks
PER_FRAC = 25
NEG_TICKS = 26    # -phase deadline after the +phase deadline, sys clock ticks (= phase + gap)
CLK = 27          # sys clock ticks per us
NEXT_TIMER = 28   # which of the two Timer objects arms the next sample
AIM_US = 29       # sample deadline after its phase's start, us (negative: the alarm fires before the phase)
PH_US = 30        # phase width, us (for quiet_now)
SETTLE_CTS = 31   # slice counts into a phase before which I_SENSE is not trusted
WITH_V = 32       # 1: the phase leaves room for the V_ELECTRODE conversion after the I_SENSE one
V_OK = 33         # 1: V_RAW is from the last valid sample; 0: that sample had I only (V_RAW then reads 0)
NFLAGS = 34

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
WIN_V_US = 5 * MEM_US     # c0 -> c2: ... then RESULT, the V_ELECTRODE START write and the counter read

ADC_BASE = 0x4004C000     # RP2040 ADC: CS (EN b0, START_ONCE b2, AINSEL 14:12), RESULT +4 (12 bits)
ADC_RESULT = ADC_BASE + 4
ADC_CS_EN_START = 1 | 4
ADC_FIRST_GPIO = 26

TRIP_OVER_CURRENT = 1
TRIP_FAULT_N = 2
MIN_Z_RAW = 10    # below ~8 uA the impedance estimate is noise; do not decide contact from it


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
        # two one-shot timers that take turns, made once (no allocation when the chain re-arms in the callback)
        self.timers = (Timer(), Timer())
        self._tick_cb = self._tick
        self._fault_cb = self._fault
        self._mem32 = mem32
        self.fault_pin = Pin(pins["FAULT_N"], Pin.IN, Pin.PULL_UP)
        self.fault_pin.irq(handler=self._fault_cb, trigger=Pin.IRQ_FALLING, hard=True)

    # --- hard-IRQ paths: no allocation, no floats ---
    def kill(self):
        # fastest first: no compliance supply = no current within the pulse; then no setpoint; then the bridge
        self.hv.value(0)
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
        # one-shot deadline reached: sample the phase it was armed for (unless too late), then arm the next one
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
        """Arm the next sample after the one at DUE_US: the -phase middle of the same pair if still ahead, else the
        next +phase middle still ahead. Exact tick schedule: whole us in MID_US, the remainder in MID_FRAC."""
        f = self.f
        c = f[CLK]
        now = time.ticks_us()
        if not f[DUE_NEG]:
            t = f[MID_FRAC] + f[NEG_TICKS]
            due = time.ticks_add(f[MID_US], t // c + (1 if 2 * (t % c) >= c else 0))
            if time.ticks_diff(due, now) >= LEAD_US:
                self._arm_at(due, 1)
                return
        while True:
            t = f[MID_FRAC] + f[PER_FRAC]
            f[MID_US] = time.ticks_add(f[MID_US], f[PER_INT] + t // c)
            f[MID_FRAC] = t % c
            due = time.ticks_add(f[MID_US], 1 if 2 * f[MID_FRAC] >= c else 0)
            if time.ticks_diff(due, now) >= LEAD_US:
                self._arm_at(due, 0)
                return

    def _arm_at(self, due, neg):
        f = self.f
        f[DUE_US] = due
        f[DUE_NEG] = neg
        k = f[NEXT_TIMER]
        f[NEXT_TIMER] = 1 - k
        self.timers[k].init(mode=Timer.ONE_SHOT, period=time.ticks_diff(due, time.ticks_us()), tick_hz=1000000,
                            callback=self._tick_cb, hard=True)

    def _look(self, lo, hi, slot):
        """One sample of the phase whose settled counter range is [lo, hi): conversions started through the ADC
        registers, each bracketed by counter reads (see the top of this file)."""
        f = self.f
        m = self._mem32
        ctr = self.ctr
        c0 = m[ctr] & 0xFFFF
        m[self.adc_cs] = self.cs_i       # I_SENSE sampled now
        c1 = m[ctr] & 0xFFFF
        if c0 < lo or c1 < c0 or c1 >= hi:
            f[MISSED] += 1
            return
        i = m[self.adc_res] & 0xFFF      # (a 2 us conversion, done by now)
        v = -1                           # (not measured)
        if f[WITH_V]:
            m[self.adc_cs] = self.cs_v   # V_ELECTRODE sampled now
            c2 = m[ctr] & 0xFFFF
            if c1 <= c2 < hi:
                v = m[self.adc_res] & 0xFFF
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
        """Start phase-locked sampling for the engine's current schedule (after engine.gate(True)). Does not wait:
        the first sample is armed for the first +phase middle still ahead."""
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
        # the first counter read lands at `at` us into the phase: as early as the sense allows when the phase is
        # short (all the slack goes to a late callback), centred when it is long; V only if it fits behind I
        first = SENSE_SETTLE_US + 1
        f[WITH_V] = 1 if ph >= first + WIN_V_US else 0
        at = max(first, (ph - (WIN_V_US if f[WITH_V] else WIN_I_US)) // 2)
        f[AIM_US] = at - ENTRY_US
        # later than this, the I_SENSE bracket cannot close inside the phase any more
        f[TOL_US] = max(1, ph - at - WIN_I_US + ENTRY_US)
        # the +phase deadline before the first one: _arm_next steps a period on to the first one still ahead
        t = e.first_start_frac + f[AIM_US] * c - f[PER_FRAC]
        f[MID_US] = time.ticks_add(e.first_start_us, t // c - f[PER_INT])
        f[MID_FRAC] = t % c
        f[DUE_NEG] = 1
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
        pos = (time.ticks_diff(time.ticks_us(), f[MID_US]) + f[AIM_US]) % per     # from the +phase start
        return lo <= pos <= hi

    def set_setpoint(self, ua):
        self.f[SET_RAW] = B.ua_to_adc_raw(self.board, ua)

    def tripped(self):
        return self.f[TRIPPED]

    def clear_trip(self):
        self.f[TRIPPED] = 0
        self.f[TRIP_RAW] = 0

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
