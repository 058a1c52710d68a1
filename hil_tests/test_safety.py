"""Safety rules S1-S14 (spec section 3), each with the fault injected by the rig and the outcome measured at the
electrodes (current, bridge activity, HV time, the ISET tap), never read from firmware variables.
"""
import pytest

import support
from picostim.device import DeviceError
from picostim.shared import codes
from support import amp_tolerance, full_pulses, pulse_numbers

RATE = 200          # pulses every 5 ms: reaction times below are resolved to a pulse
PHASE, GAP = 200, 100


def _idle_numbers(measure, cap, prefix="idle"):
    measure(f"{prefix}_max_current", cap.max_abs_ua, "uA", high=1.0)
    measure(f"{prefix}_active_pulses", cap.n_active, "", high=0)
    support.measure_hv_on(measure, f"{prefix}_hv_on", cap, 0.0)


def _iset_max_ua(prof, log):
    return max((e["duty"] * prof["analog"]["i_fs_ua"] for e in log), default=0.0)


def _expect_error(code, fn, *a, **kw):
    with pytest.raises(DeviceError) as e:
        fn(*a, **kw)
    assert e.value.code == code, f"expected {code}, got {e.value.code} ({e.value.detail})"
    return e.value


# ---- S1 safe boot, S13 idle is idle ----------------------------------------------------------------------------

@pytest.mark.production
def test_s1_power_on_is_idle(bench, rig, measure):
    rig.inject("power_loss")
    rig.wait(0.05)
    t0 = rig.now_s()
    rig.inject("power_restore")
    cap = rig.capture(1.5, start_s=t0)
    _idle_numbers(measure, cap, "boot")
    support.reconnect(bench.device)


def test_s1_power_cut_while_running_reboots_idle(bench, dut, rig, measure, levels_ua):
    support.start_running(dut, rig, 2, phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    rig.inject("power_loss")
    rig.wait(0.1)
    t0 = rig.now_s()
    rig.inject("power_restore")
    cap = rig.capture(1.5, start_s=t0)
    _idle_numbers(measure, cap, "after_restore")
    support.reconnect(dut)


def test_s1_hard_reset_while_running_is_idle(dut, rig, measure):
    support.start_running(dut, rig, 2, phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    dut.reset()
    cap = rig.capture(0.3)
    _idle_numbers(measure, cap)


@pytest.mark.production
def test_s13_stop_leaves_output_idle(dut, rig, measure, levels_ua):
    support.start_running(dut, rig, len(levels_ua), phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    before = rig.capture(0.02)
    measure("running_pulses", before.n_active, "", low=3)
    dut.stop()
    rig.wait(0.01)
    cap = rig.capture(0.3)
    _idle_numbers(measure, cap)


def test_s13_idle_after_boot_for_a_while(dut, rig, measure):
    cap = rig.capture(1.0, keep_pieces=False)
    _idle_numbers(measure, cap)


# ---- S2/S3 ceiling, caps, the choke point ------------------------------------------------------------------------

@pytest.mark.production
def test_s3_level_above_cap_refused_nothing_changes(dut, rig, measure, prof, restore_levels):
    cap_ua = prof["limits"]["cap_ua"]
    n = len(restore_levels)
    t_mark = int(rig.now_s() * 1e9)
    _expect_error(codes.E_OVER_CAP, dut.levels_set, level=n, ua=cap_ua + 1, operator="hil")
    measure("levels_unchanged", dut.levels_get() == restore_levels, "", low=1)
    log = support.iset_log(rig, t_mark, optional=True)
    if log is not None:
        measure("iset_writes_above_cap", sum(1 for e in log if e["duty"] * prof["analog"]["i_fs_ua"] > cap_ua + 1),
                "", high=0)
    support.start_running(dut, rig, n, phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    c = rig.capture(0.03)
    measure("amp_max", pulse_numbers(c)["amp_max"], "uA", high=restore_levels[-1] + amp_tolerance(restore_levels[-1]))


@pytest.mark.parametrize("what", ["cap+1", "ceiling", "ceiling+1", "huge"])
def test_s2_level_table_above_cap_refused(dut, rig, measure, prof, restore_levels, what):
    cap_ua = prof["limits"]["cap_ua"]
    value = {"cap+1": cap_ua + 1, "ceiling": codes.FIRMWARE_CEILING_UA,
             "ceiling+1": codes.FIRMWARE_CEILING_UA + 1, "huge": 10 ** 9}[what]
    if value <= cap_ua:
        pytest.skip("board cap equals the ceiling")
    table = list(restore_levels[:-1]) + [value]
    t_mark = int(rig.now_s() * 1e9)
    e = _expect_error(codes.E_OVER_CAP, dut.levels_set, table, operator="hil")
    measure("refused_over_cap", e.code == codes.E_OVER_CAP, "", low=1)
    measure("levels_unchanged", dut.levels_get() == restore_levels, "", low=1)
    log = support.iset_log(rig, t_mark, optional=True)
    if log is not None:
        measure("iset_max", _iset_max_ua(prof, log), "uA", high=cap_ua)


def test_s3_trial_amplitude_above_cap_refused_while_running(dut, rig, measure, prof, levels_ua):
    cap_ua = prof["limits"]["cap_ua"]
    support.start_running(dut, rig, 1, phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    before = pulse_numbers(rig.capture(0.03))
    t_mark = int(rig.now_s() * 1e9)
    _expect_error(codes.E_OVER_CAP, dut.request, "set_level", level=1, ua=cap_ua + 50)
    after = pulse_numbers(rig.capture(0.5))
    log = support.iset_log(rig, t_mark, optional=True)
    if log is not None:
        measure("iset_max_after", _iset_max_ua(prof, log), "uA", high=before["amp_max"] + 1)
    measure("amp_change", abs(after["amp_pos"] - before["amp_pos"]), "uA", high=2.0)


@pytest.mark.production
def test_s2_current_never_above_cap_at_top_level_on_all_loads(dut, rig, measure, prof, levels_ua):
    cap_ua = prof["limits"]["cap_ua"]
    worst = 0.0
    support.start_running(dut, rig, len(levels_ua), phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    for load in ("500", "2k", "10k"):
        rig.set_load(load)
        c = rig.capture(0.05)
        worst = max(worst, c.max_abs_ua)
    measure("max_current", worst, "uA", high=cap_ua + amp_tolerance(cap_ua))


# ---- S4 runtime over-current, S5 FAULT_N --------------------------------------------------------------------------

def test_s4_overcurrent_trips_and_latches(dut, rig, measure, prof, levels_ua):
    top = levels_ua[-1]
    support.start_running(dut, rig, len(levels_ua), phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    limit = prof["limits"]["cap_ua"] + max(prof["limits"]["cap_ua"] * prof["limits"]["overcurrent_margin_pct"] / 100,
                                           prof["limits"]["overcurrent_margin_min_ua"])
    t_inj = rig.now_s()
    support.inject(rig, "overcurrent", factor=1.3)          # the current source now delivers 130 % of the setpoint
    cap = rig.capture(0.2, start_s=t_inj)
    support.attach_trace(measure, cap, t_span_s=0.03)
    t_inj_ns = int(t_inj * 1e9)
    over = [p for p in cap.pulses if max(abs(a) for a in p.peak_ua) > limit]
    measure("pulses_over_limit", len(over), "", low=1, high=1)   # the first over-limit pulse is the last
    onset = max(over[0].t_ns, t_inj_ns) if over else t_inj_ns
    off = support.last_active_pulse_end(cap, 1.0) or onset
    measure("trip_latency", (off - onset) / 1e6, "ms", high=1.0)
    late = [p for p in cap.pulses if p.t_ns > off and p.active]
    measure("pulses_after_trip", len(late), "", high=0)
    # latched: refuses to start again until cleared; nothing comes out meanwhile
    rig.inject("clear")
    _expect_error(codes.E_FAULT_LATCHED, dut.start, level=1)
    quiet = rig.capture(0.1)
    _idle_numbers(measure, quiet, "latched")
    trips = [e for e in dut.poll_events(0.3) if e.get("ev") == codes.EV_TRIP]
    measure("trip_events", len(trips), "", low=1)
    if trips:
        measure("trip_reported_ua", trips[0].get("measured_ua", 0), "uA", low=limit, high=top * 1.3 * 1.1)
    dut.clear_fault()
    support.start_running(dut, rig, 1, phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    measure("restart_after_clear_pulses", rig.capture(0.03).n_active, "", low=3)


@pytest.mark.parametrize("load", ["2k", "10k"])
def test_s5_fault_n_trips_immediately(dut, rig, measure, levels_ua, load):
    rig.set_load(load)
    support.start_running(dut, rig, 2, phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    t_inj = rig.now_s()
    rig.inject("fault_n", ms=2.0)
    cap = rig.capture(0.1, start_s=t_inj)
    t_inj_ns = int(t_inj * 1e9)
    end = support.last_active_pulse_end(cap, 1.0)
    latency_ms = 0.0 if end is None or end < t_inj_ns else (end - t_inj_ns) / 1e6
    # output off within the spec's trip goal (S4: <= 1 ms after onset); no new pulse may start
    measure("fault_n_latency", latency_ms, "ms", high=1.0)
    measure("pulses_started_after_fault_n", sum(1 for p in cap.pulses if p.active and p.t_ns > t_inj_ns + 50_000),
            "", high=0)
    support.measure_hv_on(measure, "hv_on_after", cap, 1.0)
    rig.wait(0.01)
    _expect_error(codes.E_FAULT_LATCHED, dut.start, level=1)


# ---- S7 contact ---------------------------------------------------------------------------------------------------

def test_s7_contact_loss_pauses_within_2ms_of_a_pulse(dut, rig, measure, prof, levels_ua):
    support.start_running(dut, rig, 3, phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    t_inj = rig.now_s()
    t_inj_ns = int(t_inj * 1e9)
    rig.inject("contact_loss")
    cap = rig.capture(0.05, start_s=t_inj)
    first = next((p for p in cap.pulses if p.t_ns >= t_inj_ns), None)
    measure("pulse_after_loss_seen", first is not None, "", low=1)
    onset = first.t_ns if first else t_inj_ns
    drops = [e for e in support.iset_log(rig, t_inj_ns)
             if e["duty"] * prof["analog"]["i_fs_ua"] <= codes.CONTACT_PROBE_UA + 1]
    measure("pause_latency", ((drops[0]["t_ns"] - onset) / 1e6) if drops else 1e3, "ms", high=2.0)
    ev = [e for e in dut.poll_events(0.1) if e.get("ev") == codes.EV_PAUSE]
    measure("pause_events", len(ev), "", low=1)


def test_s7_recontact_ramps_from_zero_over_one_second(dut, rig, measure, prof, levels_ua):
    level = 3
    target = levels_ua[level - 1]
    support.start_running(dut, rig, level, phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    rig.inject("contact_loss")
    support.wait_state(dut, rig, codes.ST_PAUSED, 2.0, step_s=0.01)
    rig.wait(0.2)
    t_ret = rig.now_s()
    rig.inject("contact_return")
    cap = rig.capture(prof["limits"]["recontact_ramp_ms"] / 1000 + 0.8, start_s=t_ret, keep_pieces=False)
    ps = [p for p in full_pulses(cap)]
    measure("pulses", len(ps), "", low=20)
    first_amp = max(abs(a) for a in ps[0].amp_ua) if ps else 0.0
    measure("first_pulse_amp", first_amp, "uA", high=codes.CONTACT_PROBE_UA + amp_tolerance(codes.CONTACT_PROBE_UA))
    reach = next((p for p in ps if min(abs(a) for a in p.amp_ua) >= 0.9 * target), None)
    t_reach = (reach.t_ns - int(t_ret * 1e9)) / 1e9 if reach else 99.0
    measure("time_to_90pct", t_reach, "s", low=0.9 * prof["limits"]["recontact_ramp_ms"] / 1000,
            high=prof["limits"]["recontact_ramp_ms"] / 1000 + 0.7)
    amps = [min(abs(a) for a in p.amp_ua) for p in ps]
    jumps = max((b - a for a, b in zip(amps, amps[1:])), default=0.0)
    measure("largest_step_between_pulses", jumps, "uA", high=0.1 * target + 5)


def test_s7_open_electrodes_at_start_no_current(dut, rig, measure, levels_ua):
    rig.set_load("open")
    dut.start(level=len(levels_ua), phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    rig.wait(0.5)
    st = dut.status()
    measure("paused_or_refused", st["state"] in (codes.ST_PAUSED, codes.ST_RAMPING, codes.ST_IDLE), "", low=1)
    rig.set_load("2k")
    t0 = rig.now_s()
    cap = rig.capture(0.15, start_s=t0)
    # electrodes placed on skin while paused: no shock, the first pulses are at the probe current
    ps = full_pulses(cap)
    measure("max_amp_first_150ms", max((abs(a) for p in ps for a in p.amp_ua), default=0.0), "uA",
            high=max(codes.CONTACT_PROBE_UA + 10, 0.2 * levels_ua[-1]))


@pytest.mark.parametrize("phase_us,gap_us", [(20, 0), (50, 20)])
def test_s4_s7_act_on_short_phases(dut, rig, measure, prof, levels_ua, phase_us, gap_us):
    # The spec allows phases down to 20 us: the supervisor must see the current in them too (a sample it cannot
    # prove inside a phase is discarded, so a supervisor too slow for short phases would never act).
    period_ms = 1000 / RATE
    limit = prof["limits"]["cap_ua"] + max(prof["limits"]["cap_ua"] * prof["limits"]["overcurrent_margin_pct"] / 100,
                                           prof["limits"]["overcurrent_margin_min_ua"])
    support.start_running(dut, rig, len(levels_ua), phase_us=phase_us, gap_us=gap_us, rate_hz=RATE)
    t_inj = rig.now_s()
    support.inject(rig, "overcurrent", factor=1.3)
    cap = rig.capture(0.1, start_s=t_inj)
    over = [p for p in cap.pulses if max(abs(a) for a in p.peak_ua) > limit]
    measure("pulses_over_limit", len(over), "", low=1, high=2)
    onset = max(over[0].t_ns, int(t_inj * 1e9)) if over else int(t_inj * 1e9)
    off = support.last_active_pulse_end(cap, 1.0) or onset
    measure("trip_latency", (off - onset) / 1e6, "ms", high=period_ms + 1.0)
    trips = [e for e in dut.poll_events(0.3) if e.get("ev") == codes.EV_TRIP]
    measure("trip_events", len(trips), "", low=1)
    rig.inject("clear")
    dut.clear_fault()
    support.start_running(dut, rig, len(levels_ua), phase_us=phase_us, gap_us=gap_us, rate_hz=RATE)
    t_inj = rig.now_s()
    t_inj_ns = int(t_inj * 1e9)
    rig.inject("contact_loss")
    cap = rig.capture(0.05, start_s=t_inj)
    first = next((p for p in cap.pulses if p.t_ns >= t_inj_ns), None)
    onset = first.t_ns if first else t_inj_ns
    drops = [e for e in support.iset_log(rig, t_inj_ns)
             if e["duty"] * prof["analog"]["i_fs_ua"] <= codes.CONTACT_PROBE_UA + 1]
    measure("pause_latency", ((drops[0]["t_ns"] - onset) / 1e6) if drops else 1e3, "ms", high=2.0)
    rig.inject("contact_return")


# ---- S8 ramps --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("level", [1, 3, 5])
def test_s8_start_ramps_at_least_300ms_per_level(dut, rig, measure, prof, levels_ua, level):
    level = min(level, len(levels_ua))
    target = levels_ua[level - 1]
    cap_ua = prof["limits"]["cap_ua"]
    steps = max(1, -(-target * len(levels_ua) // cap_ua))
    min_ramp_s = prof["limits"]["ramp_ms_per_level_step"] / 1000 * steps
    t0 = rig.now_s()
    dut.start(level=level, phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    cap = rig.capture(min_ramp_s + 0.6, start_s=t0, keep_pieces=False)
    ps = full_pulses(cap)
    measure("pulses", len(ps), "", low=10)
    t_first = ps[0].t_ns if ps else 0
    reach = next((p for p in ps if min(abs(a) for a in p.amp_ua) >= target - amp_tolerance(target)), None)
    # a linear ramp of min_ramp_s to the target passes (target - tolerance) at this fraction of it
    frac = 1 - amp_tolerance(target) / target
    measure("ramp_time", ((reach.t_ns - t_first) / 1e9) if reach else 99.0, "s", low=min_ramp_s * frac * 0.95,
            high=min_ramp_s + 0.5)
    measure("first_pulse_amp", max(abs(a) for a in ps[0].amp_ua) if ps else 0.0, "uA",
            high=0.25 * target + amp_tolerance(target))


@pytest.mark.parametrize("rate_hz", [200, 250])
def test_s8_ramp_moves_in_small_steps_whatever_the_loop_timing(dut, rig, measure, prof, levels_ua, rate_hz):
    # 250 Hz: the pair period equals the main loop's ramp period (4 ms), so a loop that steps the ramp only in a
    # quiet window it happens to be in can lock outside the window and apply the whole ramp at once later (S8).
    # 200 Hz: the same lock on a board whose loop iteration takes ~1 ms (the emulated chip).
    target = levels_ua[min(3, len(levels_ua)) - 1]
    level_step = prof["limits"]["cap_ua"] / len(levels_ua)
    t0 = rig.now_s()
    dut.start(level=min(3, len(levels_ua)), phase_us=PHASE, gap_us=GAP, rate_hz=rate_hz)
    steps = max(1, -(-target * len(levels_ua) // prof["limits"]["cap_ua"]))
    cap = rig.capture(prof["limits"]["ramp_ms_per_level_step"] / 1000 * steps + 0.5, start_s=t0, keep_pieces=False)
    amps = [min(abs(a) for a in p.amp_ua) for p in full_pulses(cap)]
    measure("pulses", len(amps), "", low=10)
    measure("final_amp", amps[-1] if amps else 0.0, "uA", low=target - amp_tolerance(target))
    rises = [b - a for a, b in zip(amps, amps[1:])]
    # a linear ramp of one level step per 300 ms moves ~1/60 of a step per 5 ms pair; a loop that steps only every
    # ~20 ms (a missed quiet window, a GC) moves ~1/15. A quarter step is far from that and from the locked loop's
    # whole-ramp jump (96 uA in one pair at 250 Hz on the unix engine, 80 uA steps; on emu at 200 Hz the locked
    # ramp did not move at all in 1.5 s: no current pulses, final_amp fails)
    measure("max_rise_per_pair", max(rises, default=0.0), "uA", high=0.25 * level_step)


def test_s8_decrease_is_immediate(dut, rig, measure, levels_ua):
    support.start_running(dut, rig, len(levels_ua), phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    t0 = rig.now_s()
    dut.set_level(1)
    cap = rig.capture(0.1, start_s=t0)
    ps = full_pulses(cap)
    low = levels_ua[0]
    settled = next((p for p in ps if max(abs(a) for a in p.amp_ua) <= low + amp_tolerance(low)), None)
    measure("decrease_latency", ((settled.t_ns - int(t0 * 1e9)) / 1e6) if settled else 1e3, "ms",
            high=20.0)


def test_s8_level_up_one_step_ramps(dut, rig, measure, prof, levels_ua):
    support.start_running(dut, rig, 1, phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    t0 = rig.now_s()
    dut.set_level(2)
    step_s = prof["limits"]["ramp_ms_per_level_step"] / 1000
    cap = rig.capture(step_s + 0.4, start_s=t0, keep_pieces=False)
    target = levels_ua[1]
    ps = full_pulses(cap)
    reach = next((p for p in ps if min(abs(a) for a in p.amp_ua) >= target - amp_tolerance(target)), None)
    start = levels_ua[0]
    frac = (target - amp_tolerance(target) - start) / (target - start)
    measure("step_ramp_time", ((reach.t_ns - int(t0 * 1e9)) / 1e9) if reach else 99.0, "s",
            low=step_s * frac * 0.95, high=step_s + 0.3)


# ---- S9 session limit ---------------------------------------------------------------------------------------------

def test_s9_session_auto_off_with_two_second_ramp_down(dut, rig, measure, prof, levels_ua):
    session_s = 3
    target = levels_ua[1]
    t0 = rig.now_s()
    reply = dut.start(level=2, phase_us=PHASE, gap_us=GAP, rate_hz=50, duration_s=session_s)
    measure("session_applied", reply.get("session_s"), "s", low=session_s, high=session_s)
    rampdown_s = prof["limits"]["session_rampdown_ms"] / 1000
    cap = rig.capture(session_s + rampdown_s + 1.0, start_s=t0, keep_pieces=False)
    ps = full_pulses(cap)
    last_full = max((p.t_ns for p in ps if min(abs(a) for a in p.amp_ua) >= target - amp_tolerance(target)),
                    default=0)
    last_any = max((p.t_ns for p in ps), default=0)
    measure("ramp_down_time", (last_any - last_full) / 1e9, "s", low=rampdown_s * 0.9, high=rampdown_s * 1.1 + 0.05)
    measure("session_end_time", (last_any - int(t0 * 1e9)) / 1e9, "s",
            low=session_s + rampdown_s * 0.9, high=session_s + rampdown_s + 0.5)
    tail = rig.capture(0.3)
    _idle_numbers(measure, tail, "after_session")
    ends = [e for e in dut.poll_events(0.3) if e.get("ev") == codes.EV_SESSION_END]
    measure("session_end_events", len(ends), "", low=1, high=1)


def test_s9_session_longer_than_board_max_not_applied(dut, rig, measure, prof):
    too_long = prof["limits"]["session_max_s"] + 60
    try:
        reply = dut.start(level=1, phase_us=PHASE, gap_us=GAP, rate_hz=RATE, duration_s=too_long)
        applied = reply.get("session_s", too_long)
    except DeviceError as e:
        applied = 0 if e.code == codes.E_OUT_OF_RANGE else too_long
    measure("session_applied", applied, "s", high=prof["limits"]["session_max_s"])


# ---- S10 charging --------------------------------------------------------------------------------------------------

def test_s10_no_start_while_charging(dut, rig, measure):
    support.inject(rig, "charging", on=True)
    rig.wait(0.05)
    _expect_error(codes.E_CHARGING, dut.start, level=1, phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    cap = rig.capture(0.2)
    _idle_numbers(measure, cap, "charging")


def test_s10_charger_plugged_while_running_stops_output(dut, rig, measure):
    support.start_running(dut, rig, 2, phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    t0 = rig.now_s()
    support.inject(rig, "charging", on=True)
    cap = rig.capture(0.3, start_s=t0)
    end = support.last_active_pulse_end(cap, 1.0)
    measure("stop_latency", ((end - int(t0 * 1e9)) / 1e6) if end else 0.0, "ms", high=50.0)
    tail = rig.capture(0.2)
    _idle_numbers(measure, tail, "charging")


# ---- S11 watchdog ---------------------------------------------------------------------------------------------------

def test_s11_hang_resets_and_output_goes_safe(bench, dut, rig, measure, prof):
    support.start_running(dut, rig, 2, phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    t0 = rig.now_s()
    support.inject(rig, "hang")
    cap = rig.capture(2.0, start_s=t0, keep_pieces=False)
    end = support.last_active_pulse_end(cap, 1.0)
    wdt_s = prof["limits"]["wdt_timeout_ms"] / 1000
    measure("output_off_after_hang", ((end - int(t0 * 1e9)) / 1e9) if end else 0.0, "s", high=min(1.0, wdt_s + 0.05))
    info = support.reconnect(dut)
    measure("reset_cause_wdt", info.get("reset_cause"), "", low=3, high=3)
    _idle_numbers(measure, rig.capture(0.3), "after_reset")


# ---- S14 Ctrl-C, soft reset ---------------------------------------------------------------------------------------

def _repl(dut):
    from picostim.rawrepl import RawRepl
    return RawRepl(dut.t)


def test_s14_ctrl_c_into_repl_leaves_output_idle(dut, rig, measure):
    support.start_running(dut, rig, 3, phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    repl = _repl(dut)
    try:
        repl.enter()
        cap = rig.capture(0.3)
        _idle_numbers(measure, cap, "repl")
    finally:
        repl.soft_reset(run_main=True)
        dut.hello(timeout=30)


def test_s14_soft_reset_while_running_leaves_output_idle(dut, rig, measure):
    support.start_running(dut, rig, 3, phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    repl = _repl(dut)
    try:
        repl.enter()
        repl.soft_reset(run_main=False)     # what mpremote does on connect
        cap = rig.capture(0.3)
        _idle_numbers(measure, cap, "soft_reset")
    finally:
        repl.soft_reset(run_main=True)
        dut.hello(timeout=30)


def test_s14_app_restarts_idle_after_soft_reset(dut, rig, measure):
    support.start_running(dut, rig, 3, phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    repl = _repl(dut)
    repl.enter()
    repl.soft_reset(run_main=True)
    dut.hello(timeout=30)
    cap = rig.capture(0.5)
    _idle_numbers(measure, cap, "after_restart")


def test_s7_impedance_above_zmax_pauses_at_probe_current(dut, rig, measure, prof, levels_ua):
    """A load well above Z_max (the source also hits compliance there): stimulation pauses at the probe current
    instead of driving the electrodes at compliance."""
    rig.set_load(str(int(prof["limits"]["z_max_ohm"] * 2.5)))
    dut.start(level=len(levels_ua), phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    rig.wait(prof["limits"]["ramp_ms_per_level_step"] / 1000 * len(levels_ua) + 0.5)
    cap = rig.capture(0.1)
    ps = full_pulses(cap)
    measure("amp_max_while_paused", max((abs(a) for p in ps for a in p.amp_ua), default=0.0), "uA",
            high=codes.CONTACT_PROBE_UA + amp_tolerance(codes.CONTACT_PROBE_UA))
    ev = [e for e in dut.poll_events(0.3) if e.get("ev") == codes.EV_PAUSE]
    measure("pause_events", len(ev), "", low=1)


def test_s4_power_button_clears_latched_fault(dut, rig, measure):
    support.start_running(dut, rig, 1, phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    rig.inject("fault_n", ms=2.0)
    rig.wait(0.05)
    _expect_error(codes.E_FAULT_LATCHED, dut.start, level=1, phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    rig.press("power", ms=150)          # the user clears it
    rig.wait(0.3)
    support.stop_quietly(dut)
    support.start_running(dut, rig, 1, phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    measure("pulses_after_user_clear", rig.capture(0.03).n_active, "", low=3)


def test_s14_exception_at_startup_leaves_output_idle(bench, dut, rig, measure):
    """A provisioning mistake makes the application raise while starting: the output stays idle (and the board
    sits at the REPL), measured while the broken app 'runs'."""
    support.start_running(dut, rig, 3, phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    repl = _repl(dut)
    repl.enter()
    original = repl.eval("open('/board.json','rb').read()")
    try:
        repl.exec("f=open('/board.json','wb');f.write(b'{\"schema\": 1, \"pins\": 5}');f.close()")
        repl.soft_reset(run_main=True)          # boot.py + main.py run into the exception
        cap = rig.capture(0.5)
        _idle_numbers(measure, cap, "after_exception")
    finally:
        repl.enter()
        repl.exec(f"f=open('/board.json','wb');f.write({original!r});f.close()")
        repl.soft_reset(run_main=True)
        dut.hello(timeout=30)


# ---- self-test against the rig's known resistor ------------------------------------------------------------------

@pytest.mark.parametrize("load, ohm", [("500", 500), ("2k", 2000), ("10k", 10000)])
def test_selftest_measures_the_known_resistor(dut, rig, measure, load, ohm):
    rig.set_load(load)
    r = dut.selftest(expect_ohm=ohm)
    assert r.get("measured_ohm") is not None, r["checks"]
    measure("selftest_measured_ohm", r.get("measured_ohm"), "ohm", low=ohm * 0.9, high=ohm * 1.1)
    checks = {c["name"]: c["ok"] for c in r["checks"]}
    measure("selftest_output_path_ok", int(bool(checks.get("output_path"))), "", low=1, high=1)
    tail = rig.capture(0.2)
    measure("idle_after_selftest", tail.max_abs_ua, "uA", high=1.0)


def test_selftest_fails_on_an_open_load(dut, rig, measure):
    rig.set_load("open")
    try:
        r = dut.selftest(expect_ohm=2000)
    finally:
        rig.set_load("2k")
    measure("selftest_passed_on_open_load", int(bool(r.get("passed"))), "", low=0, high=0)
