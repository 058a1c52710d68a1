"""Treatment zones (issue 17) at the electrodes: every zone's limit holds at every level for every program the zone
allows; a zone change mid-session drops the output at once (or ramps it up, S8); bad zones change nothing.

Expected values come from the board profile (boards/<board>.json, limits resolved by the same code the device runs)
and the DUT's level table; what is judged is what the rig measured.
"""
import pytest
from hypothesis import given, settings, strategies as st

import support
from picostim import boards
from picostim.device import DeviceError
from picostim.shared import codes
from support import amp_tolerance, full_pulses

PROGRAMS = boards.load_programs()


def _all_zone_names():
    names = []
    for b in boards.names():
        p = boards.load(b)
        if p.get("kind") == "stimulator":
            names += [z["name"] for z in boards.zone_table(p) if z["name"] not in names]
    return names


ZONE_NAMES = _all_zone_names()
PROGRAM_NAMES = sorted(PROGRAMS)
# a custom waveform every zone of the shipped profiles allows (max phase 250 us, max rate 10 Hz)
SLOW_WAVE = {"phase_us": 200, "gap_us": 100, "rate_hz": 10}


@pytest.fixture(autouse=True)
def default_zone_after(dut):
    """Tests here choose zones: the next test (any file) starts in the board's default zone again."""
    yield
    support.stop_quietly(dut)
    try:
        dut.set_zone(dut.zones()["default"])
    except Exception:
        pass


def zone_of(prof, name):
    for z in boards.zone_table(prof):
        if z["name"] == name:
            return z
    return None


def window_s(program):
    """Capture length that holds at least one full pulse of the program's first step at its plateau: one period;
    for bursts one whole on + off cycle (so a burst's end, where its ramp got furthest, is inside)."""
    st0 = PROGRAMS[program]["steps"][0]
    w = 1.05 / st0["rate_hz"] + 2 * (2 * st0["phase_us"] + st0.get("gap_us", 0)) / 1e6
    if st0.get("burst_on_s"):
        w += st0["burst_on_s"] + st0["burst_off_s"] + 0.1
    return w


def amp_limits(prof, program, want, n_levels):
    """(low, high) for the plateau amplitude of a program step holding `want` uA. A burst ramps from 0 at every
    burst start at S8's pace (ramp_ms_per_level_step per level step's worth, at least the step's own burst ramp); when
    that is longer than the burst, the burst ends below `want` (e.g. ems, 2 s bursts, at the top levels of
    handheld-pro): then the plateau is that fraction of `want` (0.1 s of loop and pulse granularity allowed)."""
    tol = amp_tolerance(want)
    lo, hi = support.level_window(prof, want)     # (a level above the unit's cap bound comes out at the bound)
    st0 = PROGRAMS[program]["steps"][0] if program else {}
    if not st0.get("burst_on_s"):
        return lo, hi
    lim = prof["limits"]
    steps = max(1, -(-want * n_levels // lim["cap_ua"]))
    ramp = max(lim["ramp_ms_per_level_step"] / 1000 * steps, st0.get("burst_ramp_s", 0))
    if ramp <= st0["burst_on_s"]:
        return lo, hi
    return min(lo, want * (st0["burst_on_s"] - 0.1) / ramp - tol), hi


def settle_s(prof):
    """The ISET RC filter (tau) settles in 5 tau: the earliest a changed amplitude is whole at the electrodes."""
    return 5 * prof["analog"]["iset_rc_tau_us"] / 1e6


def peak_amp(cap):
    """Largest |phase amplitude| and |peak| over the complete pulses (0 when none)."""
    ps = full_pulses(cap)
    amp = max((abs(a) for p in ps for a in p.amp_ua), default=0.0)
    peak = max((abs(a) for p in ps for a in p.peak_ua), default=0.0)
    return len(ps), amp, peak


def ramp_s(prof, n_levels):
    return prof["limits"]["ramp_ms_per_level_step"] / 1000 * n_levels + 0.3


@pytest.mark.parametrize("program", PROGRAM_NAMES)
@pytest.mark.parametrize("zone", ZONE_NAMES)
def test_zone_limit_holds_at_every_level(dut, rig, measure, prof, levels_ua, zone, program):
    """Top level down to 1 in one session (decreases are immediate): at each level the pulses carry
    min(level uA, zone limit), and never more than the zone limit."""
    z = zone_of(prof, zone)
    if z is None:
        pytest.skip(f"{prof['name']} has no {zone} zone")
    if program not in prof["programs"]:
        pytest.skip(f"{prof['name']} does not allow {program}")
    if program not in z["programs"]:
        # not allowed in this zone: refused with zone_refused, and the electrodes stay idle
        with pytest.raises(DeviceError) as e:
            dut.start(level=1, program=program, zone=zone)
        measure("refused_code_zone_refused", e.value.code == codes.E_ZONE_REFUSED, "", low=1)
        cap = rig.capture(0.1)
        measure("idle_after_refusal", cap.max_abs_ua, "uA", high=1.0)
        measure("state_idle", dut.status()["state"] == codes.ST_IDLE, "", low=1)
        return
    n = len(levels_ua)
    limit = z["limit_ua"]
    reply = dut.start(level=n, program=program, zone=zone)
    measure("reply_zone_limit_matches_profile", reply["zone_limit_ua"], "uA", low=limit, high=limit)
    rig.wait(ramp_s(prof, n))
    w = window_s(program)
    worst_over = -1e9
    for level in range(n, 0, -1):
        if level < n:
            r = dut.set_level(level)
            expect_bound = codes.BOUND_ZONE if levels_ua[level - 1] > limit else codes.BOUND_LEVEL
            measure(f"L{level}_reply_bound_{expect_bound}", r.get("bound") == expect_bound, "", low=1)
            rig.wait(settle_s(prof))
        cap = rig.capture(w, keep_pieces=False)
        if level == n:
            support.attach_trace(measure, cap, f"{zone}/{program} at level {n}", t_span_s=min(w, 2.5))
        want = min(levels_ua[level - 1], limit)
        lo, hi = amp_limits(prof, program, want, n)
        npulses, amp, peak = peak_amp(cap)
        measure(f"L{level}_pulses", npulses, "", low=1)
        measure(f"L{level}_amp", amp, "uA", low=lo, high=hi)
        worst_over = max(worst_over, peak - limit)
    measure("worst_peak_above_zone_limit", worst_over, "uA", high=amp_tolerance(limit))


def _lowest_zone(prof):
    zt = boards.zone_table(prof)
    return min(zt, key=lambda z: z["limit_ua"]), next(z for z in zt if z["default"])


def test_zone_change_mid_session_drops_at_once_then_ramps_back(dut, rig, measure, prof, levels_ua):
    low, home = _lowest_zone(prof)
    n = len(levels_ua)
    top = levels_ua[-1]
    if low["limit_ua"] >= top:
        pytest.skip("no zone limit below the top level on this board")
    wave = dict(SLOW_WAVE, rate_hz=min(SLOW_WAVE["rate_hz"], (low["max_rate_mhz"] or 10000) / 1000))
    period_ns = 1e9 / wave["rate_hz"]
    support.start_running(dut, rig, n, zone=home["name"], **wave)
    _, amp0, _ = peak_amp(rig.capture(2.2 / wave["rate_hz"], keep_pieces=False))
    lo, hi = support.level_window(prof, top)
    measure("before_amp", amp0, "uA", low=lo, high=hi)
    # down: the next pulse after the request already at the new limit
    t_req = rig.now_s()
    r = dut.set_zone(low["name"])
    t_reply = rig.now_s()
    measure("reply_zone_limit", r["zone_limit_ua"], "uA", low=low["limit_ua"], high=low["limit_ua"])
    cap = rig.capture(0.6, start_s=t_req, keep_pieces=False)
    lim, tol = low["limit_ua"], amp_tolerance(low["limit_ua"])
    ps = full_pulses(cap)
    # (from the reply on, plus the ISET filter's settling: the output cannot fall faster than its RC)
    t_whole = (t_reply + settle_s(prof)) * 1e9
    measure("pulses_above_limit_after_reply", sum(1 for p in ps if p.t_ns >= t_whole and
                                                  max(abs(a) for a in p.peak_ua) > lim + tol), "", high=0)
    first_ok = next((p for p in ps if max(abs(a) for a in p.peak_ua) <= lim + tol), None)
    measure("pulses_after_change", len(ps), "", low=3)
    measure("first_limited_pulse_after_request", ((first_ok.t_ns - cap.t0_ns) / 1e6) if first_ok else 1e9, "ms",
            high=period_ns / 1e6 + 50)
    after = [p for p in ps if first_ok is not None and p.t_ns >= first_ok.t_ns]
    measure("peak_after_drop", max((abs(a) for p in after for a in p.peak_ua), default=0.0), "uA", high=lim + tol)
    measure("amp_after_drop", max((abs(a) for p in after for a in p.amp_ua), default=0.0), "uA",
            low=lim - tol, high=lim + tol)
    # up again: an S8 ramp, not a jump
    steps = max(1, -(-(top - lim) * n // prof["limits"]["cap_ua"]))
    min_ramp_s = prof["limits"]["ramp_ms_per_level_step"] / 1000 * steps
    t_up = rig.now_s()
    dut.set_zone(home["name"])
    cap = rig.capture(min_ramp_s + 0.8, start_s=t_up, keep_pieces=False)
    support.attach_trace(measure, cap, "zone back to the default: ramped")
    ps = full_pulses(cap)
    top_low = support.level_window(prof, top)[0]       # (the top level may be held at the unit's cap bound)
    reach = next((p for p in ps if min(abs(a) for a in p.amp_ua) >= top_low), None)
    frac = min(1.0, (top_low - lim) / (top - amp_tolerance(top) - lim))
    measure("ramp_up_time", ((reach.t_ns - cap.t0_ns) / 1e9) if reach else 1e9, "s",
            low=min_ramp_s * frac - 1.5 / wave["rate_hz"], high=min_ramp_s + 0.5)
    jumps = max((abs(abs(b.amp_ua[0]) - abs(a.amp_ua[0])) for a, b in zip(ps, ps[1:])), default=0.0)
    measure("largest_step_between_pulses", jumps, "uA", high=(top - lim) / steps + amp_tolerance(top))


def test_zone_change_refused_when_program_not_allowed_changes_nothing(dut, rig, measure, prof, levels_ua):
    zt = boards.zone_table(prof)
    home = next(z for z in zt if z["default"])
    pick = [(p, z) for p in home["programs"] for z in zt if p not in z["programs"]]
    if not pick:
        pytest.skip("every zone allows every program of the default zone")
    program, other = pick[0]
    n = len(levels_ua)
    dut.start(level=n, program=program, zone=home["name"])
    rig.wait(ramp_s(prof, n))
    w = window_s(program)
    _, amp0, _ = peak_amp(rig.capture(w, keep_pieces=False))
    with pytest.raises(DeviceError) as e:
        dut.set_zone(other["name"])
    measure("refused_code", e.value.code == codes.E_ZONE_REFUSED, "", low=1)
    with pytest.raises(DeviceError) as e2:
        dut.set_zone("no_such_zone")
    measure("unknown_zone_code", e2.value.code == codes.E_UNKNOWN_ZONE, "", low=1)
    _, amp1, _ = peak_amp(rig.capture(w, keep_pieces=False))
    lo, hi = amp_limits(prof, program, min(levels_ua[-1], home["limit_ua"]), n)
    measure("amp_before", amp0, "uA", low=lo, high=hi)
    measure("amp_after_refusals", amp1, "uA", low=lo, high=hi)
    measure("amp_change_after_refusals", abs(amp1 - amp0), "uA", high=amp_tolerance(amp0))
    measure("zone_unchanged", dut.status()["zone"] == home["name"], "", low=1)


def test_unknown_zone_at_start_refused_output_idle(dut, rig, measure, prof):
    before = dut.status()
    with pytest.raises(DeviceError) as e:
        dut.start(level=1, zone="eyelid", **SLOW_WAVE)
    measure("code_unknown_zone", e.value.code == codes.E_UNKNOWN_ZONE, "", low=1)
    measure("detail_lists_zones", all(z["name"] in e.value.detail for z in boards.zone_table(prof)), "", low=1)
    cap = rig.capture(0.3)
    measure("idle", cap.max_abs_ua, "uA", high=1.0)
    after = dut.status()
    measure("zone_unchanged", after["zone"] == before["zone"] and after["state"] == codes.ST_IDLE, "", low=1)


def test_hypothesis_zone_level_program(dut, rig, measure, prof, levels_ua):
    """Any zone (the board's, or junk), level (in or out of range) and program (allowed or not, or junk): either the
    device refuses with a coded error, the electrodes stay idle and the zone is unchanged, or what the rig measures
    is min(level, zone limit) once the level is set."""
    zt = {z["name"]: z for z in boards.zone_table(prof)}
    n = len(levels_ua)
    stats = {"accepted": 0, "refused": 0, "over": -1e9, "err": 0.0, "idle_max": 0.0}

    names = st.sampled_from(sorted(zt))

    @settings(max_examples=40, deadline=None, derandomize=True, database=None)
    @given(zone=st.one_of(names, names, st.text(max_size=12)),
           level=st.one_of(st.integers(1, n), st.integers(-1, n + 2)),
           program=st.one_of(st.none(), st.sampled_from(PROGRAM_NAMES), st.sampled_from(["bogus", ""])))
    def one(zone, level, program):
        support.stop_quietly(dut)
        zone_before = dut.status()["zone"]
        kw = {"program": program} if program is not None else dict(SLOW_WAVE)
        try:
            reply = dut.start(level=level, zone=zone, raise_to_level=False, **kw)
        except DeviceError as e:
            assert e.code in codes.ERROR_CODES, e.code
            z = zt.get(zone)
            allowed = z is not None and 1 <= level <= n and (program is None or program in z["programs"])
            assert not allowed, f"refused ({e.code}: {e.detail}) although zone, level and program are allowed"
            cap = rig.capture(0.05)
            stats["idle_max"] = max(stats["idle_max"], cap.max_abs_ua)
            assert cap.max_abs_ua <= 1.0, cap.max_abs_ua
            assert dut.status()["zone"] == zone_before
            stats["refused"] += 1
            return
        z = zt[zone]     # accepted: the zone exists, the level is in range and the program is allowed there
        assert 1 <= level <= n and (program is None or program in z["programs"]), reply
        if reply["level"] < level:
            dut.set_level(level)
        rig.wait(ramp_s(prof, n))
        w = window_s(program) if program else 1.05 / SLOW_WAVE["rate_hz"] + 0.01
        npulses, amp, peak = peak_amp(rig.capture(w, keep_pieces=False))
        want = min(levels_ua[level - 1], z["limit_ua"])
        lo, hi = amp_limits(prof, program, want, n)
        assert npulses >= 1
        stats["err"] = max(stats["err"], lo - amp, amp - hi)
        stats["over"] = max(stats["over"], peak - z["limit_ua"] - amp_tolerance(z["limit_ua"]))
        assert lo <= amp <= hi, (zone, level, program, amp, want)
        assert peak <= z["limit_ua"] + amp_tolerance(z["limit_ua"]), (zone, level, program, peak)
        stats["accepted"] += 1
        support.stop_quietly(dut)

    one()
    measure("examples_accepted", stats["accepted"], "", low=3)
    measure("examples_refused", stats["refused"], "", low=3)
    measure("worst_amp_error_beyond_tolerance", stats["err"], "uA", high=0)
    measure("worst_peak_beyond_zone_limit_tolerance", stats["over"], "uA", high=0)
    measure("worst_current_after_refusal", stats["idle_max"], "uA", high=1.0)


def test_start_low_and_last_session_level(dut, rig, measure, prof, levels_ua, restore_levels):
    """config start_low: a session asked for the top level starts at level 1 (measured), an up press raises it one
    level; with start_low off a session starts no higher than the last one ended."""
    n = len(levels_ua)
    if n < 3:
        pytest.skip("needs three levels")
    dut.config_set({"start_low": True})
    r = dut.start(level=n, raise_to_level=False, **SLOW_WAVE)
    measure("start_bound_start_low", r.get("start_bound") == codes.START_BOUND_LOW, "", low=1)
    rig.wait(ramp_s(prof, n))
    _, amp, _ = peak_amp(rig.capture(0.25, keep_pieces=False))
    want = levels_ua[0]
    measure("amp_start_low", amp, "uA", low=want - amp_tolerance(want), high=want + amp_tolerance(want))
    rig.press("up", ms=120)
    rig.wait(ramp_s(prof, 1))
    _, amp, _ = peak_amp(rig.capture(0.25, keep_pieces=False))
    want = levels_ua[1]
    measure("amp_after_up", amp, "uA", low=want - amp_tolerance(want), high=want + amp_tolerance(want))
    dut.stop()                                      # this session ended at level 2
    dut.config_set({"start_low": False})
    r = dut.start(level=n, raise_to_level=False, **SLOW_WAVE)
    measure("start_bound_last_session", r.get("start_bound") == codes.START_BOUND_LAST, "", low=1)
    rig.wait(ramp_s(prof, n))
    _, amp, _ = peak_amp(rig.capture(0.25, keep_pieces=False))
    measure("amp_last_session_level", amp, "uA", low=want - amp_tolerance(want), high=want + amp_tolerance(want))


def _blinks(rig, seconds, step_s=0.02):
    """Rising edges of the status LED sampled by the rig over `seconds`."""
    edges, last = 0, None
    t_end = rig.now_s() + seconds
    while rig.now_s() < t_end:
        on = (rig.leds()["status"] or 0.0) > 0.5
        if last is not None and on and not last:
            edges += 1
        last = on
        rig.wait(step_s)
    return edges


def test_zone_button_long_press_steps_zone_led_shows_it_limit_holds(dut, rig, measure, prof, levels_ua):
    """Long presses of the profile's zone button step through the zones; the status LED blinks the chosen zone's
    1-based place; a session then started by a short press is held to that zone's limit (at the electrodes)."""
    sel = prof.get("zones", {}).get("select")
    if not sel:
        pytest.skip("the profile has no zone button")
    zt = boards.zone_table(prof)
    target = min(range(len(zt)), key=lambda i: zt[i]["limit_ua"])   # the zone with the lowest limit
    start = next(i for i, z in enumerate(zt) if z["default"])
    presses = (target - start) % len(zt)
    hold_s = (sel["long_press_ms"] + 150) / 1000
    pattern_max_s = codes.ZONE_BLINK_MS * (2 * len(zt) + 1) / 1000
    rig.wait(pattern_max_s)         # any zone pattern shown before (a set_zone) is over
    for i in range(presses):
        rig.press(sel["button"], ms=hold_s * 1000)
        if i < presses - 1:
            rig.wait(hold_s + pattern_max_s + 0.1)
    # the last long press fires while still held, then its pattern runs: dark, k blinks
    k = target + 1
    blinks = _blinks(rig, hold_s + codes.ZONE_BLINK_MS * (2 * k + 1) / 1000 + 0.3)
    measure("led_blinks", blinks, "", low=k, high=k)
    measure("zone_chosen", dut.status()["zone"] == zt[target]["name"], "", low=1)
    # a short press of the same button still starts a session, in the chosen zone
    rig.press("power", ms=150)
    rig.wait(0.3)
    support.wait_state(dut, rig, (codes.ST_RAMPING, codes.ST_RUNNING), 3.0)
    n = len(levels_ua)
    dut.set_level(n)
    rig.wait(ramp_s(prof, n))
    prog = dut.status().get("program")
    w = window_s(prog) if prog in PROGRAMS else 0.3
    npulses, amp, peak = peak_amp(rig.capture(w, keep_pieces=False))
    lim = zt[target]["limit_ua"]
    want = min(levels_ua[-1], lim)
    measure("pulses", npulses, "", low=1)
    measure("amp_in_chosen_zone", amp, "uA", low=want - amp_tolerance(want), high=want + amp_tolerance(want))
    measure("peak_vs_zone_limit", peak, "uA", high=lim + amp_tolerance(lim))


def test_audit_and_telemetry_carry_zone(dut, rig, measure, prof, levels_ua, restore_levels):
    zt = boards.zone_table(prof)
    low = min(zt, key=lambda z: z["limit_ua"])
    dut.set_zone(low["name"])
    before = restore_levels
    new = list(before)
    new[0] = before[0] - 1
    dut.levels_set(new, operator="zones-hil")
    e = dut.audit()[-1]
    measure("audit_zone", e.get("zone") == low["name"], "", low=1)
    measure("audit_zone_limit", e.get("zone_limit_ua") or 0, "uA", low=low["limit_ua"], high=low["limit_ua"])
    dut.start(level=len(levels_ua), zone=low["name"], **SLOW_WAVE)
    samples = list(dut.telemetry(rate_hz=50, duration_s=0.4))
    measure("telemetry_samples", len(samples), "", low=1)
    measure("telemetry_zone", all(s.get("zone") == low["name"] for s in samples), "", low=1)
    measure("telemetry_zone_limit", max((s.get("zone_limit_ua") or 0) for s in samples), "uA",
            low=low["limit_ua"], high=low["limit_ua"])
