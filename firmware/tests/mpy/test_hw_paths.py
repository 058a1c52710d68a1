# Firmware modules that touch hardware, on the unix port with recording stand-ins for machine/rp2
# (fakes/): the choke point refuses over-cap requests without writing, and the hard-IRQ paths (sample
# callback, FAULT_N handler, engine kill) run under micropython.heap_lock(), i.e. they allocate nothing.
import json
import micropython
import machine
import rp2
from mpytest import check, raises, done

with open("boards/handheld-home.json") as f:
    BOARD = json.load(f)

import board as B
import planner
import rp2regs as R
from amplitude import Amplitude, AmplitudeError
from engine import PulseEngine
import time
import safety
from safety import Supervisor, TRIPPED, PAUSED, ARMED, SET_RAW, SAMPLES, TOL_US, LATE, DUE_US, DUE_NEG, LOOK, \
    SETTLE_CTS, MISSED, look_plan
import pscodes as C

pins = BOARD["pins"]
amp = Amplitude(BOARD)
w0 = amp.pwm.writes
e = raises("over_cap_refused", AmplitudeError, amp.set_ua, 401)
check("over_cap_code", e is not None and e.code == C.E_OVER_CAP)
raises("over_ceiling_refused", AmplitudeError, amp.set_ua, 1001)
raises("float_refused", AmplitudeError, amp.set_ua, 100.0)
check("over_cap_no_iset_write", amp.pwm.writes == w0 and amp.pwm.d == 0)
raises("ramp_over_cap_refused", AmplitudeError, amp.ramp_to_ua, 450, 300, 0)
check("ramp_over_cap_no_write", amp.pwm.writes == w0)
# the cap bound (calib.cap_level): even a unit whose current source is at the worst of the board's tolerances
# (gain +5 %, offset +10 uA) stays at or below the cap at the highest compare level ever written
tol = BOARD["tolerances"]["current_source"]
g_hi, o_hi = 1 + tol["gain_pct"] / 100, tol["offset_ua"]
bound = amp.set_ua(400)
check("cap_bound_below_cap", 0 < bound < 400 and bound >= (400 - o_hi) / g_hi - 1, bound)
worst = 0
for ua in range(0, 401):
    got = amp.set_ua(ua)
    cc = (amp.pwm.d * (amp.top + 1) + 32767) // 65535       # what rp2 machine_pwm writes to CC
    i_out = cc * 1000 // (amp.top + 1)
    worst = max(worst, abs(got - min(ua, bound)), abs(i_out - got))
    if i_out * g_hi + o_hi > 400:
        worst = 999
check("iset_resolution_le_1ua_and_never_above_cap", worst <= 1, "worst %d" % worst)
amp.set_ua(0)
amp.ramp_to_ua(300, 1500, 1000)
amp.tick(1000 + 750)
check("ramp_midway", 145 <= amp.applied_ua <= 155, amp.applied_ua)
amp.tick(1000 + 1500)
check("ramp_done", amp.applied_ua == 300)
amp.ramp_to_ua(80, 300, 3000)
check("decrease_immediate", amp.applied_ua == 80 and not amp.ramping())

# engine: idle state and DMA chains
eng = PulseEngine(BOARD)
cc_addr = R.pwm_reg(0, R.PWM_CC)
check("engine_idle_word", machine.mem32[cc_addr] == planner.IDLE_WORD)
check("engine_funcsel_pwm", machine.mem32[R.gpio_ctrl(pins["BRIDGE_A"])] == R.FUNCSEL_PWM)
p = planner.plan(250, 50, 2000, 125000000)
eng.load(p)
eng.gate(True)
ch = [d for d in rp2.made if not d.closed]
check("dma_channels", len(ch) == len(p["cc_segments"]) + len(p["top_segments"]), len(ch))
treq_ok = all(((d.ctrl >> 15) & 0x3F) == R.DREQ_PWM_WRAP0 for d in ch)
check("dma_paced_by_pwm_wrap", treq_ok)
check("dma_cc_chain_loops", ((ch[0].ctrl >> 11) & 15) == ch[1].channel and ((ch[1].ctrl >> 11) & 15) == ch[0].channel)
check("dma_no_increment", all((d.ctrl >> 4) & 3 == 0 for d in ch))
check("dma_cc_targets", ch[0].cfg[1] == cc_addr and ch[0].cfg[2] == 1 and ch[1].cfg[2] == p["idle_periods"])
check("slice_enabled", machine.mem32[R.PWM_EN + R.ALIAS_SET] & 1 == 1)

# supervisor hard-IRQ paths under heap_lock; the supervisor's clock is a stand-in the test moves (wraps at 2**30
# like rp2's ticks_us), so deadlines and lateness are exact
class Clock:
    MASK = (1 << 30) - 1
    HALF = 1 << 29
    now = (1 << 30) - 3000000          # wraps 3 s into the run

    def ticks_us(self):
        return Clock.now

    def ticks_add(self, a, b):
        return (a + b) & Clock.MASK

    def ticks_diff(self, a, b):
        return ((a - b + Clock.HALF) & Clock.MASK) - Clock.HALF


clock = Clock()
safety.time = clock
hv = machine.Pin(pins["HV_EN"], machine.Pin.OUT, value=1)
sup = Supervisor(BOARD, eng, amp, hv)
machine.preset([R.pwm_reg(0, R.PWM_CTR), machine.ADC_CS, machine.ADC_RESULT])
amp.set_ua(400)
sup.set_setpoint(400)
i_pin, v_pin = pins["I_SENSE"], pins["V_ELECTRODE"]
machine.ADC.values[i_pin] = B.ua_to_adc_raw(BOARD, 400) << 4
machine.ADC.values[v_pin] = (400 * 2000 // 1000 * 4096 // 3300 // 5) << 4     # 2 kOhm load


def run_locked(fn, arg=None):
    """Call an IRQ path as a hard IRQ runs it (heap locked, fakes refusing allocation); the exception or None."""
    err = None
    machine._locked[0] = True
    micropython.heap_lock()
    try:
        fn(arg)
    except Exception as ex:
        err = ex
    micropython.heap_unlock()
    machine._locked[0] = False
    return err


def tick_locked():
    return run_locked(sup._tick)


# the look plan: for every phase/gap the spec allows (grid), each look's counter brackets fit inside its phase
# (first read after the settling time, the closing one LATE_SLACK_US before the end at the latest), V wherever it
# fits, no two looks closer than one callback can chain, and no instant of a pair more than LOOK_SPAN_US before an
# I conversion, except the -phase's own tail after its last conversion (the residual window the bench measures):
# END_SLACK_US where the end conversion fits with the same V, else LATE_SLACK_US + one register access
M = safety.MEM_US
plan_bad = []
for ph in (20, 21, 25, 29, 30, 33, 34, 37, 38, 40, 47, 48, 50, 60, 80, 100, 150, 200, 300, 400, 500, 700, 800, 801,
           900, 990, 1000):
    for gap in (0, 10, 20, 50, 100, 200, 300, 400, 499, 500):
        looks = look_plan(ph, gap)
        conv, starts = [], []
        for c0, neg, v, end in looks:
            base = ph + gap if neg else 0
            starts.append(base + c0)
            win = safety.WIN_V_US if v else safety.WIN_I_US
            conv.append(base + c0 + win - M)               # the bracketed I conversion
            if end:
                conv.append(base + c0 + win + 2 * M)       # ... and the end conversion after it
            if c0 < safety.SENSE_SETTLE_US + 1 or c0 + win > max(ph - safety.LATE_SLACK_US,
                                                                 safety.SENSE_SETTLE_US + 1 + safety.WIN_I_US):
                plan_bad.append(("bracket", ph, gap, c0, v))
            if not v and ph - safety.LATE_SLACK_US - safety.WIN_V_US >= safety.SENSE_SETTLE_US + 1:
                plan_bad.append(("no_v", ph, gap, c0))
        if not looks or len(looks) > safety.MAX_LOOKS or not looks[-1][1]:
            plan_bad.append(("count", ph, gap, len(looks)))
            continue
        if any(b - a < safety.MIN_LOOK_GAP_US for a, b in zip(starts, starts[1:])):
            plan_bad.append(("close", ph, gap, starts))
        tail = 2 * ph + gap - conv[-1]
        fits_end = ph >= (48 if looks[-1][2] else 30)
        if tail > (safety.END_SLACK_US if fits_end else safety.LATE_SLACK_US + M):
            plan_bad.append(("tail", ph, gap, tail))
        for t in list(range(0, ph, 3)) + list(range(ph + gap, conv[-1], 3)):
            nxt = [x for x in conv if x >= t]
            if nxt[0] - t > safety.LOOK_SPAN_US:
                plan_bad.append(("span", ph, gap, t, nxt[0] - t))
                break
check("look_plan_fits_phases_chains_and_covers", not plan_bad, plan_bad[:3])

# the look chain follows the exact tick schedule for hours: 130.7 Hz is 956389 ticks, not a whole number of us;
# 1000 us phases with a 500 us gap take 4 looks per pair
ctr_addr = R.pwm_reg(0, R.PWM_CTR)
for (ph, gap, rate_mhz, minutes) in ((100, 50, 130700, 5.1), (1000, 500, 50000, 1.0)):
    p2 = planner.plan(ph, gap, rate_mhz, 125000000)
    eng.plan = p2
    eng.first_start_us = clock.ticks_add(Clock.now, 1000)
    eng.first_start_frac = 17
    sup.arm()
    machine.mem32[ctr_addr] = sup.f[SETTLE_CTS] + 1     # (the fake counter stands still inside the +phase)
    # exact instants, sys clock ticks (long ints here): the first +phase start, then each look's deadline after its
    # phase's start (ENTRY_US before its first counter read)
    start_ticks = (Clock.now + 1000) * 125 + 17
    plan2 = look_plan(ph, gap)
    offs = [(c0 - safety.ENTRY_US) * 125 + (p2["phase_counts"] + p2["gap_counts"]) * p2["div"] * neg
            for c0, neg, v, end in plan2]
    worst = 0
    pair = 0
    expect_k = 0
    order_ok = True
    pairs = int(minutes * 60e6 / p2["period_us"])   # 40000 x 7.65 ms at 130.7 Hz: the us clock wraps once
    for k in range(len(plan2) * pairs):
        due = sup.f[DUE_US]
        t_armed = Clock.now
        timer_ok = machine.Timer.last is not None and machine.Timer.last.period == clock.ticks_diff(due, t_armed)
        if not timer_ok:
            break
        order_ok = order_ok and sup.f[LOOK] == expect_k and sup.f[DUE_NEG] == plan2[expect_k][1]
        exact = start_ticks + pair * p2["period_ticks"] + offs[expect_k]
        want = ((exact + 62) // 125) & Clock.MASK   # the whole us nearest the exact instant
        worst = max(worst, abs(clock.ticks_diff(due, want)))
        expect_k += 1
        if expect_k == len(plan2):
            expect_k = 0
            pair += 1
        Clock.now = clock.ticks_add(due, 3)         # interrupt latency
        if k == 0 and ph == 100:
            err = tick_locked()                 # once under heap_lock: sample + re-arm allocate nothing
            check("sample_no_alloc", err is None, repr(err))
            check("sample_normal_no_trip", sup.f[TRIPPED] == 0 and sup.f[PAUSED] == 0 and sup.f[SAMPLES] == 1,
                  (sup.f[TRIPPED], sup.f[PAUSED], sup.f[SAMPLES], sup.f[MISSED], sup.f[LATE]))
        else:
            sup._tick(None)
    check("chain_rearms_from_the_callback_%d" % ph, timer_ok and machine.Timer.last.mode == machine.Timer.ONE_SHOT
          and machine.Timer.last.hard and machine.Timer.last.cb == sup._tick_cb)
    check("chain_every_planned_look_in_order_%d" % ph, order_ok and pair == pairs and len(plan2) == (2, 4)[ph == 1000],
          (pair, pairs, plan2))
    check("chain_deadlines_within_1us_of_the_exact_schedule_for_minutes_%d" % ph, worst <= 1,
          "worst %d us, %d pairs" % (worst, pair))
    check("no_sample_late_on_schedule_%d" % ph, sup.f[LATE] == 0, sup.f[LATE])

# a sample off the schedule (half a second late, e.g. an interrupt held off) is discarded, not judged, and the chain
# goes on at the next deadline still ahead
machine.ADC.values[i_pin] = 0
Clock.now = clock.ticks_add(sup.f[DUE_US], 500000)
n0 = sup.f[SAMPLES]
err = tick_locked()
check("late_sample_no_alloc", err is None, repr(err))
check("late_sample_discarded", sup.f[LATE] == 1 and sup.f[SAMPLES] == n0 and sup.f[PAUSED] == 0)
check("late_chain_resumes_ahead", 0 < clock.ticks_diff(sup.f[DUE_US], Clock.now) <= p2["period_us"] + 1)
sup.f[TOL_US] = 200000

# a counter outside the settled +phase (still settling, or past the phase) makes the sample missed, not judged
for ctr in (0, sup.f[SETTLE_CTS] - 1, p2["phase_counts"], p2["cc_b"]):
    machine.mem32[ctr_addr] = ctr
    sup.f[DUE_US] = Clock.now
    sup.f[DUE_NEG] = 0
    n0, m0 = sup.f[SAMPLES], sup.f[MISSED]
    tick_locked()
    check("out_of_phase_sample_missed_%d" % ctr, sup.f[SAMPLES] == n0 and sup.f[MISSED] == m0 + 1
          and sup.f[PAUSED] == 0)
machine.mem32[ctr_addr] = sup.f[SETTLE_CTS] + 1


def tick_pos_locked():
    # a +phase sample due now
    sup.f[DUE_US] = Clock.now
    sup.f[DUE_NEG] = 0
    return tick_locked()

# contact lost (open load: no current at 400 uA setpoint) -> probe current, paused
machine.ADC.values[i_pin] = 0
machine.ADC.values[v_pin] = 4000 << 4
err = tick_pos_locked()
check("no_contact_no_alloc", err is None, repr(err))
check("no_contact_paused_to_probe", sup.f[PAUSED] == 1 and amp.applied_ua == C.CONTACT_PROBE_UA)

# over-current -> trip: idle word, ISET 0, HV off, DMA channels disabled
sup.clear_pause()
machine.ADC.values[i_pin] = (B.ua_to_adc_raw(BOARD, sup.trip_ua) + 3) << 4
eng_ctrl_before = [d.ctrl for d in ch]
err = tick_pos_locked()
check("trip_no_alloc", err is None, repr(err))
check("trip_latched", sup.f[TRIPPED] == 1)
check("trip_idle_word", machine.mem32[cc_addr] == planner.IDLE_WORD)
check("trip_iset_zero", amp.pwm.d == 0 and amp.applied_ua == 0)
check("trip_hv_off", machine.Pin.levels[pins["HV_EN"]] == 0)
check("trip_dma_disabled", all(d.ctrl & 1 == 0 for d in ch))
bridge_ctrl = [R.gpio_ctrl(pins["BRIDGE_A"]), R.gpio_ctrl(pins["BRIDGE_B"])]
check("trip_bridge_forced_low_at_once", all(machine.mem32[a] == R.FUNCSEL_PWM | R.OUTOVER_LOW for a in bridge_ctrl))

# FAULT_N hard IRQ
sup.clear_trip()
check("clear_trip_gives_bridge_back_to_pwm", all(machine.mem32[a] == R.FUNCSEL_PWM for a in bridge_ctrl))
hv.value(1)
err = run_locked(sup._fault)
check("fault_n_no_alloc", err is None, repr(err))
check("fault_n_trip", sup.f[TRIPPED] == 2 and machine.Pin.levels[pins["HV_EN"]] == 0
      and all(machine.mem32[a] == R.FUNCSEL_PWM | R.OUTOVER_LOW for a in bridge_ctrl))
sup.clear_trip()

# stop closes every channel and leaves the idle word
eng.stop()
check("stop_closes_dma", all(d.closed for d in ch))
check("stop_idle_word", machine.mem32[cc_addr] == planner.IDLE_WORD)
check("stop_slice_disabled", machine.mem32[R.PWM_EN + R.ALIAS_CLR] & 1 == 1)
done()
