# Safety supervisor: the paths that must act without the main loop.
#
# Current sensing: I_SENSE sees |I| only while a phase drives, so samples are taken by hard machine.Timer callbacks
# in the middle of the +phase and in the middle of the -phase of every pair. The engine starts the slice itself and
# knows to the microsecond when the first +phase middle comes (t_enable + lead); from there the schedule is exact in
# sys clock ticks (the repetition period is a whole number of ticks, not of microseconds). The rp2 Timer counts whole
# microseconds, so a periodic timer would drift against the PWM; instead each callback arms the next sample as a
# one-shot at the deadline computed from the exact tick schedule (whole us + a sub-us remainder carried in ticks, so
# the rounding never accumulates, for hours; ticks_add/ticks_diff for the 30-bit wrap). Two Timer objects take turns
# (a callback arms the other one, never re-inits the alarm that is firing). A callback that comes more than TOL_US
# after its deadline (an interrupt held off, e.g. by a flash write) does not judge: its sample is discarded and the
# chain goes on at the next deadline still ahead. Each sample is also bracketed by two reads of the slice counter and
# discarded unless both lie inside the expected phase, so a late interrupt can never be mistaken for "no current".
# Two looks per pair catch an over-current that starts after the +phase sample within the same pair (at most
# phase + gap later); when the -phase middle is too close for the CPU (short phase and gap) only the +phase is seen.
#
# Decisions are made in integer ADC counts inside the callback (no allocation, no floats):
#   S4 over-current: i_raw > trip_raw        -> kill output, ISET 0, HV off, latch (main loop reports it)
#   S7 contact lost: setpoint >= minimum and i < setpoint/2 (compliance) or Z > Z_max -> ISET to probe current
#   S5 FAULT_N falling edge (hard pin IRQ)   -> kill output, latch
# The hardware comparator on FAULT_N (1100 uA) backs up what a sample per pulse cannot catch inside one pulse.
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
MID_US = 16       # ticks_us of the latest scheduled +phase middle (whole us; the rest is in MID_FRAC)
PER_US = 17       # repetition period, us (rounded; for quiet_now)
NEG_US = 18       # -phase middle after the +phase middle, us (rounded; for quiet_now)
TOL_US = 19       # a sample later than this after its deadline is discarded
LATE = 20         # samples discarded for timing (an interrupt held off, e.g. by a flash write)
DUE_US = 21       # ticks_us deadline of the armed sample
DUE_NEG = 22      # 1: the armed sample is the -phase one
MID_FRAC = 23     # sub-us part of the +phase middle at MID_US, in sys clock ticks (0..CLK-1)
PER_INT = 24      # repetition period = PER_INT us + PER_FRAC ticks
PER_FRAC = 25
NEG_TICKS = 26    # -phase middle after the +phase middle, sys clock ticks
CLK = 27          # sys clock ticks per us
NEXT_TIMER = 28   # which of the two Timer objects arms the next sample
NFLAGS = 29

LEAD_US = 4       # a sample deadline closer than this when arming is skipped (the callback could not make it)

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
            self._sample_neg()
        else:
            self._sample()
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

    def _sample(self):
        # middle of the +phase: CTR in [0, CC_A)
        f = self.f
        m = self._mem32
        c0 = m[self.ctr] & 0xFFFF
        i = self.adc_i.read_u16() >> 4
        v = self.adc_v.read_u16() >> 4
        c1 = m[self.ctr] & 0xFFFF
        if c1 < c0 or c1 >= f[CC_A]:
            f[MISSED] += 1
            return
        f[CTR_POS] = c0
        self._judge(i, v)

    def _sample_neg(self):
        # middle of the -phase: CTR in [CC_B, TOP] and no wrap between the two counter reads. A second look per
        # pair, so an over-current that starts after the +phase sample is still caught inside the same pair.
        f = self.f
        m = self._mem32
        c0 = m[self.ctr] & 0xFFFF
        i = self.adc_i.read_u16() >> 4
        v = self.adc_v.read_u16() >> 4
        c1 = m[self.ctr] & 0xFFFF
        if c1 < c0 or c0 < f[CC_B]:
            f[MISSED] += 1
            return
        f[CTR_NEG] = c0
        self._judge(i, v)

    def _judge(self, i, v):
        f = self.f
        f[I_RAW] = i
        f[V_RAW] = v
        f[SAMPLES] += 1
        if i > self.trip_raw:
            self._trip(TRIP_OVER_CURRENT, i)
            return
        if f[PAUSED]:
            return
        s = f[SET_RAW]
        lost = s >= self.min_set_raw and 2 * i < s
        if not lost and i >= MIN_Z_RAW and v * self.zk > self.z_max * i:
            lost = True
        if lost:
            f[PAUSED] = 1
            f[PAUSE_I] = i
            f[PAUSE_V] = v
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
        f[TOL_US] = max(1, p["phase_counts"] * d // c // 2 - 2)
        # the +phase middle before the first one: _arm_next steps a period on to the first one still ahead
        t = e.first_mid_frac + c - f[PER_FRAC]
        f[MID_US] = time.ticks_add(e.first_mid_us, t // c - 1 - f[PER_INT])
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
        half = f[TOL_US] + 2
        lo = f[NEG_US] + half + 20                 # after the -phase ends
        hi = per - half - self.settle_us           # settled before the next +phase starts
        if hi <= lo:
            return True
        pos = time.ticks_diff(time.ticks_us(), f[MID_US]) % per
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
        """While paused at the probe current: contact is back when the probe current flows into Z <= Z_max."""
        f = self.f
        i = f[I_RAW]
        v = f[V_RAW]
        return i * 2 >= self.probe_raw and i >= MIN_Z_RAW // 2 and v * self.zk <= self.z_max * i

    def clear_pause(self):
        self.f[PAUSED] = 0

    def measured_ua(self):
        return B.adc_raw_to_ua(self.board, self.f[I_RAW])

    def measured_mv(self):
        return B.adc_raw_to_electrode_mv(self.board, self.f[V_RAW])

    def z_ohm(self, i_raw, v_raw):
        if i_raw <= 0:
            return None
        return v_raw * self.zk // i_raw
