# Safety supervisor: the paths that must act without the main loop.
#
# Current sensing: I_SENSE sees |I| only while a phase drives, so samples are taken by two hard machine.Timers
# phase-locked to the pair schedule, one in the middle of the +phase and one in the middle of the -phase. The
# engine starts the slice itself and knows to the microsecond when the first +phase begins (t_enable + lead);
# the repetition period is a whole number of microseconds (planner), and the timers (1 us resolution,
# drift-free periodic re-arm) and the PWM run from the same crystal, so timers created at those instants keep
# hitting the middle of every phase. Each sample is bracketed by two reads of the slice counter and discarded
# unless both lie inside the expected phase (no wrap between them), so a late interrupt can never be mistaken
# for "no current". Two looks per pair catch an over-current that starts after the +phase sample within the
# same pair (at most phase + gap later).
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
MID_US = 16       # ticks_us of a +phase middle (schedule anchor)
PER_US = 17       # repetition period, us
NEG_US = 18       # -phase middle after the +phase middle, us
TOL_US = 19       # a sample further than this from its phase middle is discarded
LATE = 20         # samples discarded for timing (an interrupt held off, e.g. by a flash write)
NFLAGS = 21

TRIP_OVER_CURRENT = 1
TRIP_FAULT_N = 2
MIN_Z_RAW = 10    # below ~8 uA the impedance estimate is noise; do not decide contact from it


def _wait_until_us(target):
    """Return at ticks_us() == target (to the microsecond): sleep the bulk, spin the last millisecond."""
    rest = time.ticks_diff(target, time.ticks_us())
    if rest > 1500:
        time.sleep_us(rest - 1000)
    while time.ticks_diff(target, time.ticks_us()) > 0:
        pass


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
        self.timer = None
        self.t_armed_us = 0
        self._sample_cb = self._sample
        self._sample_neg_cb = self._sample_neg
        self.timer_neg = None
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

    def _on_time(self, off_us):
        # The counter check alone cannot tell the pair's period from an idle period (the counter runs through
        # [0, CC_A) in both), so a sample delayed by a whole period would read "no current". Check the time too:
        # it must lie within TOL_US of a phase middle of the schedule. Small ints only.
        f = self.f
        if f[PER_US] <= 0:
            return False
        r = time.ticks_diff(time.ticks_us(), f[MID_US]) - off_us
        r %= f[PER_US]
        if r <= f[TOL_US] or f[PER_US] - r <= f[TOL_US]:
            return True
        f[LATE] += 1
        return False

    def _sample(self, _t):
        # middle of the +phase: CTR in [0, CC_A)
        f = self.f
        if f[ARMED] == 0 or not self._on_time(0):
            return
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

    def _sample_neg(self, _t):
        # middle of the -phase: CTR in [CC_B, TOP] and no wrap between the two counter reads. A second look per
        # pair, so an over-current that starts after the +phase sample is still caught inside the same pair.
        f = self.f
        if f[ARMED] == 0 or not self._on_time(f[NEG_US]):
            return
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
        """Start phase-locked sampling for the engine's current schedule (after engine.gate(True))."""
        self.disarm()
        e = self.engine
        p = e.plan
        self.f[CC_A] = p["phase_counts"]
        self.f[CC_B] = p["cc_b"]
        # wait for the middle of the next +phase still ahead, then start the periodic timer there (its first
        # callback comes one period later, in the middle of a +phase again)
        per = p["period_us"]
        mid = e.first_mid_us
        wait = time.ticks_diff(mid, time.ticks_us())
        while wait < 0:
            mid = time.ticks_add(mid, per)
            wait += per
        _wait_until_us(mid)
        f = self.f
        f[MID_US] = mid
        f[PER_US] = per
        f[NEG_US] = (p["phase_counts"] + p["gap_counts"]) * p["div"] // p["clk_per_us"]
        f[TOL_US] = max(1, p["phase_counts"] * p["div"] // p["clk_per_us"] // 2 - 2)
        self.t_armed_us = time.ticks_us()
        self.timer = Timer(mode=Timer.PERIODIC, period=per, tick_hz=1000000, callback=self._sample_cb, hard=True)
        # the -phase middle is (phase + gap) later in the same pair
        _wait_until_us(time.ticks_add(mid, f[NEG_US]))
        self.timer_neg = Timer(mode=Timer.PERIODIC, period=per, tick_hz=1000000, callback=self._sample_neg_cb,
                               hard=True)
        self.f[ARMED] = 1

    def disarm(self):
        self.f[ARMED] = 0
        if self.timer is not None:
            self.timer.deinit()
            self.timer = None
        if self.timer_neg is not None:
            self.timer_neg.deinit()
            self.timer_neg = None

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
