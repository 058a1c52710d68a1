"""Shared helpers for the HIL tests: board facts from boards/ (the one source), waiting, and turning a rig capture
into the numbers the tests judge. Nothing here reads firmware variables; `status` is used only to know when to
look (the rig measures what is judged).
"""
from __future__ import annotations

import math
import time

from picostim import boards
from picostim.device import DeviceError
from picostim.shared import codes



def edge_ns(rig, prof=None) -> float:
    """The rig's edge resolution: the rig Pico reports it (two PIO cycles); the virtual rig sees edges exactly on
    the DUT's system clock tick (its info names the DUT's board)."""
    info = rig.info()
    if info.get("edge_resolution_ns"):
        return float(info["edge_resolution_ns"])
    return sys_tick_ns(prof or boards.load(info["board"]))


def profile_of(dut) -> dict:
    """The board profile the DUT says it is (boards/<board>.json)."""
    return boards.load(dut.info["board"])


def sys_tick_ns(prof) -> float:
    return 1e9 / prof["mcu"]["sys_clk_hz"]


def pwm_tick_ns(prof, pair_us: float) -> float:
    """The PWM count length the hardware must use for a pair of pair_us: the smallest integer divider whose
    16-bit period holds the pair (RP2040 PWM: TOP <= 65535)."""
    ticks = pair_us * 1000 / sys_tick_ns(prof)
    return sys_tick_ns(prof) * max(1, math.ceil(ticks / 65535))


def amp_tolerance(ua: float) -> float:
    """Amplitude limit: +-5 % or +-10 uA, whichever is wider."""
    return max(0.05 * ua, 10.0)


def cap_floor_ua(prof) -> float:
    """The least a unit may deliver when it holds a level at its cap bound: the firmware bounds the ISET duty so
    that even a current source at the worst of the board's tolerances (gain and offset high) stays at the cap
    (firmware/lib/calib.py cap_level); a unit at the other end of the tolerances delivers this much there."""
    t = prof.get("tolerances", {}).get("current_source", {})
    g, o = t.get("gain_pct", 0) / 100, t.get("offset_ua", 0)
    nominal = (prof["limits"]["cap_ua"] - o) / (1 + g) - prof["analog"]["i_fs_ua"] / 1250   # one ISET count less
    return (1 - g) * nominal - o


def source_offset_ua(prof) -> float:
    """The current source's offset tolerance (boards/*.json tolerances): what a unit may deliver at the smallest
    non-zero ISET duty, and below which it delivers nothing."""
    return float(prof.get("tolerances", {}).get("current_source", {}).get("offset_ua", 0))


def level_window(prof, ua: float) -> tuple[float, float]:
    """(low, high) the rig may measure for a level of `ua`: +-amp_tolerance, and never above the cap; a level above
    what every unit can reach under its cap bound may come out as low as that bound allows (cap_floor_ua)."""
    tol = amp_tolerance(ua)
    low = min(ua, cap_floor_ua(prof)) - (tol if ua <= cap_floor_ua(prof) else amp_tolerance(cap_floor_ua(prof)))
    return low, min(ua + tol, prof["limits"]["cap_ua"] + tol)


def wait_state(dut, rig, states, timeout_s: float = 10.0, step_s: float = 0.05) -> dict:
    """Poll `status` until its state is one of `states` (virtual time advances by the rig's clock)."""
    if isinstance(states, str):
        states = (states,)
    t_end = rig.now_s() + timeout_s
    while True:
        st = dut.status()
        if st["state"] in states:
            return st
        if rig.now_s() > t_end:
            raise AssertionError(f"DUT did not reach {states} within {timeout_s} s (state {st['state']!r})")
        rig.wait(step_s)


def start_running(dut, rig, level: int, timeout_s: float = 15.0, **waveform) -> dict:
    """Start stimulation and wait until the ramp is over; returns the start reply (applied values)."""
    reply = dut.start(level=level, **waveform)
    wait_state(dut, rig, codes.ST_RUNNING, timeout_s)
    return reply


def stop_quietly(dut):
    try:
        dut.stop()
    except DeviceError:
        pass


def _unavailable(e) -> bool:
    return "not available" in str(e) or "needs the virtual board" in str(e)


def inject(rig, fault: str, **kw):
    """rig.inject, but a fault this rig cannot produce (e.g. a firmware hang on the rig Pico) skips the test."""
    import pytest
    from picostim.sim.rig import RigError
    try:
        return rig.inject(fault, **kw)
    except RigError as e:
        if _unavailable(e):
            pytest.skip(f"rig cannot inject {fault}: {e}")
        raise


def iset_log(rig, since_ns: int = 0, optional: bool = False):
    """The rig's ISET tap log. A rig without the tap skips the test (never passes it vacuously), or returns None
    when `optional` (the test then judges only what else it measured)."""
    import pytest
    from picostim.sim.rig import RigError
    try:
        return rig.iset_log(since_ns)
    except RigError as e:
        if not _unavailable(e):
            raise
        if optional:
            return None
        pytest.skip(f"rig has no ISET tap: {e}")


def measure_hv_on(measure, name, cap, high_ms):
    """Compliance supply on-time in the window, when the rig can see HV_EN (the rig Pico cannot: null)."""
    if cap.hv_on_ns is not None:
        measure(name, cap.hv_on_ns / 1e6, "ms", high=high_ms)


def reconnect(dut, timeout_s: float = 30.0) -> dict:
    """The port went away (power cycle, reset): reopen it and wait for the application's `hello`."""
    dut.t.reconnect(timeout_s)
    dut.poll_events()
    return dut.hello(timeout=timeout_s)


def full_pulses(cap) -> list:
    """Complete biphasic pulses that carry current (both phases inside the window)."""
    return [p for p in cap.pulses if p.active and not p.partial and len(p.widths_ns) == 2]


def pulse_numbers(cap) -> dict:
    """Worst-case numbers over the complete pulses of a capture."""
    ps = full_pulses(cap)
    if not ps:
        return {"n": 0}
    pos_w = [p.widths_ns[0] if p.polarity[0] == "+" else p.widths_ns[1] for p in ps]
    neg_w = [p.widths_ns[1] if p.polarity[0] == "+" else p.widths_ns[0] for p in ps]
    amps = [abs(a) for p in ps for a in p.amp_ua]
    q_phase = [max(abs(q) for q in p.q_nc) for p in ps]
    starts = [p.t_ns for p in ps]
    periods = [b - a for a, b in zip(starts, starts[1:])]
    return {
        "n": len(ps),
        "pos_w_min": min(pos_w), "pos_w_max": max(pos_w),
        "neg_w_min": min(neg_w), "neg_w_max": max(neg_w),
        "width_diff_max": max(abs(a - b) for a, b in zip(pos_w, neg_w)),
        "gap_min": min(p.gap_ns for p in ps), "gap_max": max(p.gap_ns for p in ps),
        "amp_min": min(amps), "amp_max": max(amps),
        "amp_pos": sum(abs(p.amp_ua[0]) for p in ps) / len(ps),
        "amp_neg": sum(abs(p.amp_ua[1]) for p in ps) / len(ps),
        "q_phase_max": max(q_phase),
        "q_net_src_max": max(abs(p.q_src_net_nc) for p in ps),
        "polarities": sorted({p.polarity for p in ps}),
        "period_min": min(periods) if periods else None,
        "period_max": max(periods) if periods else None,
    }


def attach_trace(measure, cap, name="electrode current", t_span_s: float | None = None, points: int = 1500,
                 requested_ua: float | None = None):
    """Put the captured electrode current on the test's report (a plot), with the requested amplitude and its
    tolerance band (amp_tolerance) when given."""
    try:
        t1 = cap.t1_ns if t_span_s is None else min(cap.t1_ns, cap.t0_ns + int(t_span_s * 1e9))
        tr = cap.trace(points, cap.t0_ns, t1)
        limits = None
        if requested_ua is not None:
            tol = amp_tolerance(requested_ua)
            limits = (requested_ua - tol, requested_ua + tol)
        measure.waveform(name, [(t - cap.t0_ns) / 1000.0 for t in tr.t_ns], {"I (uA)": list(tr.i_ua)}, unit="uA",
                         requested=requested_ua, limits=limits)
    except Exception:  # a missing trace never fails a test; the numbers do
        pass


def first_time_below(cap, ua: float, after_ns: int, hold_ns: int = 0) -> int | None:
    """Earliest time >= after_ns from which |i| stays below `ua` to the end of the capture, from the envelope's
    max/min per bin (a peak detector: a pulse inside a bin shows)."""
    env = cap.envelope
    ts, lo, hi = env["t_ns"], env["min_ua"], env["max_ua"]
    if not ts:
        return None
    half = (ts[1] - ts[0]) // 2 if len(ts) > 1 else 0
    last_above = None
    for t, a, b in zip(ts, lo, hi):
        if t + half < after_ns:
            continue
        if max(abs(a), abs(b)) >= ua:
            last_above = t + half
    return after_ns if last_above is None else last_above


def last_active_pulse_end(cap, min_ua: float) -> int | None:
    """End time (ns) of the last pulse whose phase amplitude exceeds min_ua."""
    end = None
    for p in cap.pulses:
        if max(abs(a) for a in p.amp_ua) > min_ua:
            end = p.t_ns + sum(p.widths_ns) + (p.gap_ns or 0)
    return end


def wall_deadline(seconds: float) -> float:
    return time.monotonic() + seconds
