# Firmware modules that touch hardware, on the unix port with recording stand-ins for machine/rp2
# (fakes/): the choke point refuses over-cap requests without writing, the sampler's hardware plan puts every
# conversion where it belongs, and the hard-IRQ paths (scan callback, FAULT_N handler, engine kill) run under micropython.heap_lock(), i.e. they allocate nothing.
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
from safety import Supervisor, TRIPPED, PAUSED, ARMED, SET_RAW, SAMPLES, LATE, DUE_US, LOOK, MISSED, PAIRS, \
    I_RAW, V_RAW, V_OK
import sampler
from sampler import sample_plan, scan_plan, KIND_I, KIND_V, KIND_I_END
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
check("dma_channels_leave_room_for_the_sampler", len(ch) + 6 <= 12)
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
eng.stop()
sup = Supervisor(BOARD, eng, amp, hv)
amp.set_ua(400)
sup.set_setpoint(400)
I400 = B.ua_to_adc_raw(BOARD, 400)
V2K = 400 * 2000 // 1000 * 4096 // 3300 // 5     # 2 kOhm load


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


# the sample plan, for every phase/gap the spec allows (grid): every conversion inside its phase after the settling
# time, the last I of each phase END_US before its end, I samples at most SAMPLE_SPAN_US apart, V before the last I
# with a conversion's room on both sides; scans after each phase's last sample, never closer than one callback
def c(us, d):
    return (us * 125 + d - 1) // d


plan_bad = []
for ph in (20, 21, 27, 50, 100, 200, 250, 333, 500, 777, 1000):
    for gap in (0, 1, 50, 100, 500):
        for rate_mhz in (500000, 200000, 50000, 2000):
            if (2 * ph + gap) * rate_mhz > 1000000000:
                continue
            pl = planner.plan(ph, gap, rate_mhz, 125000000)
            d = pl["div"]
            pc, gc = pl["phase_counts"], pl["gap_counts"]
            smp = sample_plan(pc, gc, 125, d)
            offs = [o for o, _ in smp]
            if offs != sorted(offs) or len(smp) > safety.MAX_SLOTS or any(b - a < c(2, d) for a, b in zip(offs, offs[1:])):
                plan_bad.append(("order/spacing", ph, gap, smp))
                continue
            for s0 in (0, pc + gc):
                mine = [(o, k) for o, k in smp if s0 <= o < s0 + pc]
                ii = [o for o, k in mine if k != KIND_V]
                if not ii or any(o < s0 + c(sampler.SETTLE_US, d) - 1 for o, k in mine) or \
                        ii[-1] != s0 + pc - c(sampler.END_US, d) or mine[-1][1] != KIND_I_END or \
                        any(b - a > c(sampler.SAMPLE_SPAN_US, d) for a, b in zip(ii, ii[1:])) or \
                        (ph >= 10 and not any(k == KIND_V for o, k in mine)):
                    plan_bad.append(("phase", ph, gap, s0, mine))
            if len([1 for o, k in smp if s0 <= o < s0 + pc]) == 0:
                plan_bad.append(("empty", ph, gap))
            scans = scan_plan(smp, 125, d)
            ends = [o for o, k in smp if k == KIND_I_END]
            if not scans or scans[-1] < ends[-1] + c(sampler.READY_US, d) or \
                    any(b - a < c(sampler.MIN_SCAN_GAP_US, d) for a, b in zip(scans, scans[1:])) or \
                    any(not any(0 <= t - o <= c(sampler.SCAN_SPAN_US + sampler.MIN_SCAN_GAP_US, d) for t in scans)
                        for o in offs):
                plan_bad.append(("scans", ph, gap, scans, ends))
check("sample_plan_in_phase_spaced_and_scanned", not plan_bad, plan_bad[:2])


def wraps_from_tables(sup, gated, n, P):
    """The sampler's wrap instants (counts from a pair start) and the CS word at each, as the hardware would
    produce them from the tables: TOP latches one wrap after DMA writes it."""
    N = 2
    while N < n + 2:
        N *= 2
    top = [sup.top_t[2 * j] | sup.top_t[2 * j + 1] << 16 for j in range(N)]
    cs = [sup.cs_t[2 * j] | sup.cs_t[2 * j + 1] << 16 for j in range(N)]
    if gated:
        t = sup.kick_w[1] + 1                       # TOP the kick put in the shadow: latched at the pair start
        ws = [0, t]
        for j in range(N - 2):
            t += top[j] + 1
            ws.append(t)
        return ws, [cs[j] for j in range(N)], [top[N - 2], top[N - 1]]
    # continuous: the table starts one wrap before a pair start; one cycle adds up to the pair
    ws = [0]
    t = 0
    for j in range(N - 1):
        t += top[j] + 1
        ws.append(t)
    return ws, [cs[(j + 1) % N] for j in range(N)], sum(top[j] + 1 for j in range(N))


tab_bad = []
for (ph, gap, rate_mhz) in ((20, 0, 500000), (200, 50, 200000), (1000, 500, 50000), (250, 50, 500), (300, 100, 50000),
                            (200, 100, 30000), (1000, 0, 500000), (999, 1, 500000)):
    if (2 * ph + gap) * rate_mhz > 1000000000:
        continue
    pl = planner.plan(ph, gap, rate_mhz, 125000000)
    del machine.log[:]              # (the fake's write log: not needed here, and the heap is an RP2040's)
    eng.load(pl)
    eng.gate(True)
    smp = sample_plan(pl["phase_counts"], pl["gap_counts"], 125, pl["div"])
    n = len(smp)
    gated = not pl["continuous"]
    ws, words, tail = wraps_from_tables(sup, gated, n, pl["pair_counts"])
    want = [sup.cs_v if k == KIND_V else sup.cs_i for o, k in smp]
    if ws[1:n + 1] != [o for o, k in smp] or words[1:n + 1] != want or words[0] != sup.cs_none or \
            any(w != sup.cs_none for w in words[n + 1:]) or any(b <= a for a, b in zip(ws, ws[1:])):
        tab_bad.append(("wraps", ph, gap, rate_mhz, ws[:n + 2], [o for o, k in smp]))
    if gated:
        lead = pl["top_segments"][-1][0] + 1
        ccA = eng.dmas[0]
        kc = sup.dmas[3]
        if tail != [0xFFFF, 0xFFFF] or sup.kick_w[0] != 0x10000 - lead or ws[-1] >= pl["pair_counts"] or \
                (ccA.ctrl >> 11) & 15 != kc.channel or (sup.dmas[5].ctrl >> 11) & 15 != eng.dmas[1].channel or \
                machine.mem32[R.pwm_reg(0, R.PWM_TOP)] != lead - 1 or eng.first_start_us != clock.ticks_add(
                    eng.t_enable_us, 2 * lead * pl["div"] // 125):
            tab_bad.append(("lock", ph, gap, rate_mhz, tail, list(sup.kick_w), lead))
    elif tail != pl["pair_counts"]:
        tab_bad.append(("cycle", ph, gap, rate_mhz, tail, pl["pair_counts"]))
    treq = R.DREQ_PWM_WRAP0 + safety.SAMPLER_SLICE
    if (sup.dmas[1].ctrl >> 15) & 0x3F != treq or (sup.dmas[2].ctrl >> 15) & 0x3F != treq or \
            (sup.dmas[0].ctrl >> 15) & 0x3F != sampler.TREQ_ADC or sup.dmas[1].write != sup.s_top or \
            sup.dmas[2].write != sampler.ADC_CS or sup.dmas[0].read != sampler.ADC_FIFO:
        tab_bad.append(("channels", ph, gap))
check("sampler_tables_wrap_at_the_planned_instants", not tab_bad, tab_bad[:2])
import uctypes
check("dma_rings_aligned", uctypes.addressof(sup.ring) % 512 == 0 and uctypes.addressof(sup.top_t) % 128 == 0
      and uctypes.addressof(sup.cs_t) % 128 == 0)
check("sampler_slice_enabled_with_the_output", machine.mem32[R.PWM_EN + R.ALIAS_SET] == 1 | (1 << safety.SAMPLER_SLICE))

# the scan chain follows the exact tick schedule for minutes: 130.7 Hz is 956389 ticks, not a whole number of us
for (ph, gap, rate_mhz, minutes) in ((100, 50, 130700, 5.1), (1000, 500, 50000, 1.0)):
    p2 = planner.plan(ph, gap, rate_mhz, 125000000)
    del machine.log[:]
    eng.load(p2)
    eng.gate(True)
    eng.first_start_us = clock.ticks_add(Clock.now, 1000)
    eng.first_start_frac = 17
    sup.arm()
    start_ticks = (Clock.now + 1000) * 125 + 17
    offs = [sup.scan_off[k] for k in range(sup.f[safety.NLOOKS])]
    worst = 0
    pair = 0
    expect_k = 0
    order_ok = True
    timer_ok = True
    pairs = int(minutes * 60e6 / p2["period_us"])
    for k in range(len(offs) * pairs):
        due = sup.f[DUE_US] + (1 if sup.f[safety.DUE_FRAC] else 0)     # (armed at the first whole us at/after)
        timer_ok = machine.Timer.last is not None and machine.Timer.last.period == clock.ticks_diff(due, Clock.now)
        if not timer_ok:
            break
        order_ok = order_ok and sup.f[LOOK] == expect_k
        exact = start_ticks + pair * p2["period_ticks"] + offs[expect_k]
        want = ((exact + 124) // 125) & Clock.MASK   # the first whole us at or after the exact instant
        worst = max(worst, abs(clock.ticks_diff(due, want)))
        expect_k += 1
        if expect_k == len(offs):
            expect_k = 0
            pair += 1
        Clock.now = clock.ticks_add(due, 40)         # interrupt latency
        sup.f[safety.SCAN_US] = Clock.now            # (nothing in the ring: a scan finds no result)
        if k == 0:
            err = run_locked(sup._scan)
            check("scan_no_alloc_%d" % ph, err is None, repr(err))
        else:
            sup._scan(None)
    check("chain_rearms_from_the_callback_%d" % ph, timer_ok and machine.Timer.last.mode == machine.Timer.ONE_SHOT
          and machine.Timer.last.hard and machine.Timer.last.cb == sup._tick_cb)
    check("chain_every_planned_scan_in_order_%d" % ph, order_ok and pair == pairs, (pair, pairs, offs))
    check("chain_deadlines_within_1us_of_the_exact_schedule_for_minutes_%d" % ph, worst <= 1,
          "worst %d us, %d pairs" % (worst, pair))
    check("no_scan_late_on_schedule_%d" % ph, sup.f[LATE] == 0, sup.f[LATE])

# results the DMA put in the ring are judged in plan order (200/50 us: I I V I per phase), under heap_lock
p3 = planner.plan(200, 50, 200000, 125000000)


def rearm(clear_trip=True):
    """After a trip: cleared, 400 uA, HV on, p3 loaded and running, the supervisor armed, the ring written from 0."""
    if clear_trip:
        sup.clear_trip()
    amp.set_ua(400)
    hv.value(1)
    eng.load(p3)
    eng.gate(True)
    sup.arm()
    wpos[0] = 0


eng.load(p3)
eng.gate(True)
sup.arm()
kinds = [k for o, k in sample_plan(p3["phase_counts"], p3["gap_counts"], 125, p3["div"])]

wpos = [0]


def dma_writes(vals):
    for v in vals:
        sup.ring[wpos[0] % safety.RING] = v
        wpos[0] += 1
    sup.rx.write = sup.ring_base + 2 * (wpos[0] % safety.RING)


def pair_vals(i, v, i_end=None):
    return [v if k == KIND_V else (i if k == KIND_I else (i if i_end is None else i_end)) for k in kinds]


def scan_now():
    Clock.now = clock.ticks_add(Clock.now, 1000)
    return run_locked(sup._scan)


for _ in range(3):
    dma_writes(pair_vals(I400, V2K))
err = scan_now()
check("scan_judges_every_result_no_alloc", err is None and sup.f[SAMPLES] == 3 * len(kinds) and sup.f[PAIRS] == 3 and sup.f[TRIPPED] == 0 and sup.f[PAUSED] == 0,
      (err, sup.f[SAMPLES], sup.f[PAIRS]))
check("scan_keeps_i_and_v_of_the_phase", sup.f[I_RAW] == I400 and sup.f[V_RAW] == V2K and sup.f[V_OK] == 1)
# half a pair now, the rest at the next scan: a scan never judges a result twice or skips one
dma_writes(pair_vals(I400, V2K)[:3])
scan_now()
n1 = sup.f[SAMPLES]
dma_writes(pair_vals(I400, V2K)[3:])
scan_now()
check("scan_resumes_where_it_stopped", sup.f[PAIRS] == 4 and sup.f[SAMPLES] == n1 + len(kinds[3:]))
# the ring wraps (256 entries) without losing the plan slot
for _ in range(40):
    dma_writes(pair_vals(I400, V2K))
    scan_now()
check("ring_wraps_in_step", sup.f[PAIRS] == 44 and sup.f[PAUSED] == 0 and sup.f[TRIPPED] == 0 and sup.f[MISSED] == 0)

# contact lost (open load: no current at 400 uA setpoint) -> probe current, paused
dma_writes(pair_vals(0, 4000))
err = scan_now()
check("no_contact_no_alloc", err is None, repr(err))
check("no_contact_paused_to_probe", sup.f[PAUSED] == 1 and amp.applied_ua == C.CONTACT_PROBE_UA)
sup.clear_pause()
amp.set_ua(400)
# Z above Z_max (V at the top of the range with the setpoint flowing): paused by the phase's V/I
dma_writes(pair_vals(I400, 4000))
scan_now()
check("high_z_paused", sup.f[PAUSED] == 1)
sup.clear_pause()
amp.set_ua(400)

# a V result above the trip count (an open contact reads a high V) is not an over-current
dma_writes(pair_vals(I400, 4095))
scan_now()
check("high_v_is_not_over_current", sup.f[TRIPPED] == 0)
sup.clear_pause()
amp.set_ua(400)
# an over-current in a mid-phase I sample trips as well as one in the phase's last
dma_writes([B.ua_to_adc_raw(BOARD, sup.trip_ua) + 3 if k == KIND_I else (V2K if k == KIND_V else I400) for k in kinds])
err = scan_now()
check("mid_phase_over_current_trips", err is None and sup.f[TRIPPED] == 1)
rearm()

# over-current in any I slot -> trip: idle word, ISET 0, HV off, DMA channels disabled, bridge forced low at once
over = B.ua_to_adc_raw(BOARD, sup.trip_ua) + 3
ch = [eng.dmas[i] for i in range(eng.n_dma)]
dma_writes(pair_vals(I400, V2K, i_end=over))
err = scan_now()
check("trip_no_alloc", err is None, repr(err))
check("trip_latched", sup.f[TRIPPED] == 1 and sup.f[safety.TRIP_RAW] == over)
check("trip_idle_word", machine.mem32[cc_addr] == planner.IDLE_WORD)
check("trip_iset_zero", amp.pwm.d == 0 and amp.applied_ua == 0)
check("trip_hv_off", machine.Pin.levels[pins["HV_EN"]] == 0)
check("trip_dma_disabled", all(d.ctrl & 1 == 0 for d in ch))
bridge_ctrl = [R.gpio_ctrl(pins["BRIDGE_A"]), R.gpio_ctrl(pins["BRIDGE_B"])]
check("trip_bridge_forced_low_at_once", all(machine.mem32[a] == R.FUNCSEL_PWM | R.OUTOVER_LOW for a in bridge_ctrl))

# a scanner held off longer than the ring holds (results lost unjudged) fails safe: output off, latched as a stall
rearm()
dma_writes(pair_vals(I400, V2K))
Clock.now = clock.ticks_add(Clock.now, sup.f[safety.CAP_US] + 1)
err = run_locked(sup._scan)
check("stall_no_alloc", err is None, repr(err))
check("stall_trip_output_off", sup.f[TRIPPED] == safety.TRIP_STALL and machine.Pin.levels[pins["HV_EN"]] == 0 and
      machine.mem32[cc_addr] == planner.IDLE_WORD and sup.f[MISSED] == len(kinds),
      (sup.f[TRIPPED], machine.Pin.levels[pins["HV_EN"]], sup.f[MISSED], len(kinds)))
# ... and when the scanner does not run at all, the main loop sees it
sup.clear_trip()
eng.load(p3)
eng.gate(True)
sup.arm()
check("not_stalled_when_scanning", not sup.stalled())
Clock.now = clock.ticks_add(Clock.now, sup.f[safety.CAP_US] + sup.f[safety.PER_US] + 1)
check("stalled_seen_by_the_main_loop", sup.stalled())

# FAULT_N hard IRQ
sup.clear_trip()
check("clear_trip_gives_bridge_back_to_pwm", all(machine.mem32[a] == R.FUNCSEL_PWM for a in bridge_ctrl))
hv.value(1)
err = run_locked(sup._fault)
check("fault_n_no_alloc", err is None, repr(err))
check("fault_n_trip", sup.f[TRIPPED] == 2 and machine.Pin.levels[pins["HV_EN"]] == 0
      and all(machine.mem32[a] == R.FUNCSEL_PWM | R.OUTOVER_LOW for a in bridge_ctrl))
sup.clear_trip()

# stop closes every channel (the sampler's too) and leaves the idle word, the FIFO off
allch = [eng.dmas[i] for i in range(eng.n_dma)] + [d for d in sup.dmas if d is not None]
eng.stop()
check("stop_closes_dma", all(d.closed for d in allch) and all(d is None for d in sup.dmas))
check("stop_idle_word", machine.mem32[cc_addr] == planner.IDLE_WORD)
check("stop_slice_disabled", machine.mem32[R.PWM_EN + R.ALIAS_CLR] & 1 == 1)
check("stop_fifo_off", machine.mem32[safety.ADC_FCS] == 0)
done()
