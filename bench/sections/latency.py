"""Safety latencies on the virtual board, measured by the rig (electrode current, ISET register log), in virtual
RP2040 time: over-current onset -> output off (S4), contact loss -> pause (S7), FAULT_N -> off (S5),
firmware hang -> watchdog reset (S11). Distributions over many trials.

Definitions (all from rig measurements, never firmware variables):
* output off = the later of (a) the first ISET write to 0 after the onset and (b) the end of the last phase that
  carries current (|i| > 2 uA) after the onset.
* over-current onset = the first instant excess current flows: the injection itself if it lands inside a phase,
  else the start of the first phase after it (measured: that phase's peak exceeds cap + max(5 %, 20 uA)).
* excess-current exposure = the time excess current actually flows at the electrodes between the onset and the
  trip (the over-limit parts of the phases), which is what matters physically: with pulses, "output off <= 1 ms
  after onset" cannot hold for an onset just after the last sample of a pair at a low rate (the next look is a
  period later), but no excess flows between the pulses.
* pause = the first ISET write at or below the contact-probe amplitude after the contact is lost.
* contact-loss onset = the first instant the loss can show at the electrodes: the injection itself if it lands
  inside a phase, else the start of the first phase after it (between pulses no current is asked to flow, so no
  device can tell an open contact from a closed one; at 200 Hz that wait is up to ~4.5 ms and is not the device's
  reaction time). Measured from the rig's capture of the pulses, like the over-current onset.

Over-current and contact-loss injections are scheduled by the rig at an instant drawn uniformly over one pulse
period (seeded), `inject(..., at_s=)`: the fault lands exactly there, not at a board round trip (which cluster at
the firmware's sample instants and main-loop wake-ups and would bias the sample).

Baseline (same run): the firmware's main-loop polling period measured from telemetry timestamps — what a
loop-polled (no IRQ, no hardware gating) safety check could at best achieve."""
from __future__ import annotations

import random
import time

from benchlib import (Figure, TrialHung, board_profile, dist, provisioned_board, reconnect, run_with_timeout,
                      trip_limit_ua, wait_virtual)

CLOCK = "model"
PRE_NS = 3_000_000       # captures start before the injection so a pulse in progress is seen whole
LEAD_NS = 1_000_000      # a scheduled onset comes at least this long after the scheduling call
EXPOSURE_GOAL_MS = 1.0   # time excess current may flow per over-current fault (see run())
EXPOSURE_STEP_NS = 500   # resolution of the exposure measurement
SETTLE_S = 0.35          # level 1 ramps over 300 ms (S8); injections come after it
WAVE = {"phase_us": 200, "gap_us": 50, "rate_hz": 200}


def _ps():
    from picostim.shared import codes
    return codes


def _iset_ua(e, i_fs):
    return e["duty"] * i_fs


def output_off_ns(vb, cap, t_on, i_fs):
    """Rig-measured instant the output is off after t_on (None if it never went off in the capture)."""
    log = vb.rig.iset_log(since_ns=t_on)
    zero = next((e["t_ns"] for e in log if _iset_ua(e, i_fs) < 0.5), None)
    if zero is None:
        return None
    last_end = t_on
    for p in cap.pulses:
        for k, (w, pk) in enumerate(zip(p.widths_ns, p.peak_ua)):
            start = p.t_ns if k == 0 else p.t_ns + p.widths_ns[0] + (p.gap_ns or 0)
            if abs(pk) > 2.0 and start + w > t_on:
                last_end = max(last_end, start + w)
    return max(zero, last_end)


def landed(vb):
    """When an injected fault took effect: the board applies a rig change at the CPU's granted horizon (never in
    its past), so the instant is the board clock right after the inject call, not before it."""
    return vb.now_ns()


def fault_n_edge(vb, prof, t_from):
    """The FAULT_N line's falling edge as the rig sees it (None if the board offers no pin history)."""
    chip = getattr(vb, "chip", None)
    if chip is None or not hasattr(chip, "pin_edges"):
        return None
    try:
        res = chip.pin_edges(prof["pins"]["FAULT_N"], t_from - 1000, vb.now_ns() + 1)
    except Exception:  # noqa: BLE001
        return None
    edges = res[1] if isinstance(res, (list, tuple)) and len(res) == 2 and isinstance(res[1], list) else res
    falls = [t for t, lvl in edges if lvl == 0 and t >= t_from - 1000]
    return falls[0] if falls else None


def _start(vb, dev, level):
    dev.start(level=level, duration_s=600, **WAVE)
    wait_virtual(vb, SETTLE_S)


def _recover(vb, dev):
    vb.rig.inject("clear")
    wait_virtual(vb, 0.02)
    try:
        dev.stop()
    except Exception:       # noqa: BLE001
        pass
    try:
        dev.clear_fault()
    except Exception:       # noqa: BLE001
        pass


def uniform_onset_ns(vb, rnd):
    """An instant drawn uniformly over one pulse period, LEAD_NS ahead of the board's present."""
    period_ns = int(round(1e9 / WAVE["rate_hz"]))
    return vb.now_ns() + LEAD_NS + int(rnd.uniform(0.0, period_ns))


def phase_peaks(cap):
    """(start, end, peak uA) of every phase the capture saw, in order."""
    out = []
    for p in cap.pulses:
        for k, (w, pk) in enumerate(zip(p.widths_ns, p.peak_ua)):
            start = p.t_ns if k == 0 else p.t_ns + p.widths_ns[0] + (p.gap_ns or 0)
            out.append((start, start + w, abs(pk)))
    return sorted(out)


def trial_overcurrent(vb, dev, prof, rnd):
    """(onset -> output off, excess-current exposure), ms."""
    i_fs = prof["analog"]["i_fs_ua"]
    limit = trip_limit_ua(prof)
    _start(vb, dev, 1)
    # source gain error large enough to take level 1 past the trip point (a short ramp keeps trials quick)
    factor = round(limit * 1.15 / prof["levels_ua"][0], 2)
    t_at = uniform_onset_ns(vb, rnd)
    vb.rig.inject("overcurrent", at_s=t_at / 1e9, factor=factor)
    cap = vb.rig.capture(0.05, start_s=(t_at - PRE_NS) / 1e9, trace_bins=10)
    phases = [(a, b) for a, b, pk in phase_peaks(cap) if pk > limit and b > t_at]
    onset = max(phases[0][0], t_at) if phases else None       # mid-phase: the excess starts at the injection
    off = output_off_ns(vb, cap, onset, i_fs) if onset is not None else None
    _recover(vb, dev)
    if onset is None or off is None:
        return None
    # the electrode current itself, every EXPOSURE_STEP_NS from the onset to output off
    n = max(2, (off - onset) // EXPOSURE_STEP_NS + 1)
    tr = cap.trace(n, t0_ns=onset, t1_ns=onset + (n - 1) * EXPOSURE_STEP_NS)
    exposure = sum(1 for i in tr.i_ua if abs(i) > limit) * EXPOSURE_STEP_NS
    return (off - onset) / 1e6, exposure / 1e6


def phase_spans(cap):
    """(start, end) of every phase the capture saw, in order."""
    out = []
    for p in cap.pulses:
        for k, w in enumerate(p.widths_ns):
            start = p.t_ns if k == 0 else p.t_ns + p.widths_ns[0] + (p.gap_ns or 0)
            out.append((start, start + w))
    return sorted(out)


def contact_onset_ns(cap, t_loss):
    """First instant the lost contact shows at the electrodes: t_loss inside a phase, else the next phase start."""
    for start, end in phase_spans(cap):
        if start <= t_loss < end:
            return t_loss
        if start >= t_loss:
            return start
    return None


def trial_contact(vb, dev, prof, rnd):
    i_fs = prof["analog"]["i_fs_ua"]
    probe = min(_ps().CONTACT_PROBE_UA, prof["limits"]["cap_ua"])
    _start(vb, dev, 1)
    t_inj = uniform_onset_ns(vb, rnd)
    vb.rig.inject("contact_loss", at_s=t_inj / 1e9)
    cap = vb.rig.capture(0.05, start_s=(t_inj - PRE_NS) / 1e9, keep_pieces=False, trace_bins=10)
    onset = contact_onset_ns(cap, t_inj)
    log = vb.rig.iset_log(since_ns=t_inj)
    paused = next((e["t_ns"] for e in log if _iset_ua(e, i_fs) <= probe + 0.5), None)
    vb.rig.inject("contact_return")
    _recover(vb, dev)
    return None if paused is None or onset is None else (paused - onset) / 1e6


def trial_fault_n(vb, dev, prof, rnd):
    i_fs = prof["analog"]["i_fs_ua"]
    _start(vb, dev, 1)
    wait_virtual(vb, rnd.uniform(0.0, 0.01))
    t_call = vb.now_ns()
    vb.rig.inject("fault_n", ms=5)
    t_inj = fault_n_edge(vb, prof, t_call) or landed(vb)
    cap = vb.rig.capture(0.02, start_s=(t_inj - PRE_NS) / 1e9, keep_pieces=False, trace_bins=10)
    off = output_off_ns(vb, cap, t_inj, i_fs)
    _recover(vb, dev)
    return None if off is None else (off - t_inj) / 1e6


def trial_hang(vb, dev, prof, rnd):
    """Hang while stimulating; the watchdog must reset the board (output off by the reset)."""
    _start(vb, dev, 1)
    wait_virtual(vb, rnd.uniform(0.0, 0.01))
    boots = vb.boot_count
    vb.rig.inject("hang")
    t_inj = landed(vb)
    wdt_ms = prof["limits"]["wdt_timeout_ms"]
    cap = vb.rig.capture(wdt_ms * 2.5 / 1000, start_s=(t_inj - PRE_NS) / 1e9, keep_pieces=False, trace_bins=10)
    # the reset re-initialises the chip (its ISET log too): output off = end of the last current-carrying phase
    ends = [p.t_ns + sum(p.widths_ns) + (p.gap_ns or 0) for p in cap.pulses if p.active]
    off = max(ends) if ends and max(ends) > t_inj else None
    end = time.monotonic() + 3.0
    while vb.boot_count == boots and time.monotonic() < end:   # the board restarts its CPU on another thread
        time.sleep(0.01)
    reset = vb.boot_count > boots and vb.reset_cause == 3
    reconnect(dev)
    return None if off is None or not reset else (off - t_inj) / 1e6


def loop_period_baseline(dev, seconds=1.0):
    """Main-loop period from telemetry at the highest rate: device ms between consecutive samples."""
    ts = [s["t_ms"] for s in dev.telemetry(rate_hz=1000, duration_s=seconds)]
    d = [b - a for a, b in zip(ts, ts[1:]) if b > a]
    return min(d) if d else None


FNS = {"overcurrent": trial_overcurrent, "contact": trial_contact, "fault_n": trial_fault_n, "hang": trial_hang}


def campaign(clock, n, prof, rnd):
    """Run the trials on one board; returns (per-kind results, failed trial notes, unexpected resets, factor,
    loop-period baseline)."""
    out, failed_trials = {}, {}
    resets = 0
    with provisioned_board(clock=clock) as (vb, dev):
        factor = vb.cpu_factor
        try:
            base = loop_period_baseline(dev)
        except Exception as e:  # noqa: BLE001
            base = None
            failed_trials["baseline"] = [f"{type(e).__name__}: {e}"[:200]]
            reconnect(dev)
        for kind, count in n.items():
            vals, bad, extra = [], 0, []
            for _ in range(count):
                boots = vb.boot_count
                try:
                    v = run_with_timeout(FNS[kind], 40, vb, dev, prof, rnd)
                except TrialHung as e:
                    failed_trials.setdefault(kind, []).append(f"{e}; {kind} trials stopped")
                    bad += 1
                    break
                except Exception as e:  # noqa: BLE001 — a trial that breaks is counted, the campaign goes on
                    v = None
                    failed_trials.setdefault(kind, []).append(f"{type(e).__name__}: {e}"[:200])
                unexpected = vb.boot_count - boots - (1 if kind == "hang" else 0)
                if unexpected > 0 or v is None:
                    if unexpected > 0:
                        resets += unexpected
                        v = None        # a reset nobody asked for spoils the trial
                    try:
                        try:
                            dev.hello(timeout=3)
                        except Exception:  # noqa: BLE001
                            reconnect(dev)
                        _recover(vb, dev)
                    except Exception as e:  # noqa: BLE001
                        failed_trials.setdefault(kind, []).append(f"recovery: {type(e).__name__}: {e}"[:200])
                if v is None:
                    bad += 1
                elif isinstance(v, tuple):          # over-current: (latency, exposure)
                    vals.append(v[0])
                    extra.append(v[1])
                else:
                    vals.append(v)
            out[kind] = {"dist_ms": dist(vals), "not_measured": bad, "values_ms": vals}
            if extra:
                out[kind]["exposure_dist_ms"] = dist(extra)
                out[kind]["exposure_ms"] = extra
    return out, failed_trials, resets, factor, base


def run(quick: bool = False) -> dict:
    prof = board_profile()
    n_model = {"overcurrent": 5, "contact": 5, "fault_n": 5, "hang": 2} if quick else \
        {"overcurrent": 50, "contact": 25, "fault_n": 20, "hang": 5}
    n_cpu = {"overcurrent": 3, "contact": 3, "fault_n": 3, "hang": 1} if quick else \
        {"overcurrent": 8, "contact": 8, "fault_n": 8, "hang": 2}
    rnd = random.Random(7)
    t0 = time.monotonic()
    out, failed_trials, resets, factor, base = campaign(CLOCK, n_model, prof, rnd)
    out_cpu, failed_cpu, resets_cpu, factor_cpu, base_cpu = campaign("cpu", n_cpu, prof, rnd)
    wdt = prof["limits"]["wdt_timeout_ms"]
    goals = {"overcurrent": ("over-current onset -> output off", 1.0),
             "contact": ("contact loss -> pause", 2.0),
             "fault_n": ("FAULT_N -> output off", 1.0),
             "hang": ("hang -> watchdog reset, output off", float(wdt))}
    figs = []
    for kind, (label, goal) in goals.items():
        d = out[kind]["dist_ms"]
        nb = out[kind]["not_measured"]
        note = f"p50 {d['p50']:.3f} ms, max {d['max']:.3f} ms" if d["n"] else "no trial measured"
        if nb:
            note += f"; {nb} trial(s) not measured (counted as failures)"
        figs.append(Figure(f"{label}, p50", "ms", d["p50"] if d["n"] else None, goal=("<=", goal), n=d["n"]))
        figs.append(Figure(f"{label}, p99", "ms", d["p99"] if d["n"] else None,
                           goal=("<=", goal), baseline=base if kind != "hang" else wdt,
                           baseline_label="main-loop period" if kind != "hang" else "WDT timeout",
                           n=d["n"], note=note, passed=None if d["n"] and not nb else False))
        figs.append(Figure(f"{label}, max", "ms", d["max"], goal=("<=", goal), n=d["n"]))
        if kind == "overcurrent" and out[kind].get("exposure_dist_ms"):
            e = out[kind]["exposure_dist_ms"]
            # The S4 goal read physically: a continuous output switched off 1 ms after the onset lets excess
            # current flow for 1 ms; a pulsed one only during the phases. Bounding the time excess current flows
            # by the same 1 ms bounds the excess charge per fault at <= 1 ms x 1.1 mA (the FAULT_N comparator
            # clamps above) = 1.1 uC, the phase charge of one 1 ms phase (the longest the spec allows) at the
            # comparator level; FDA submissions judge exactly that, max phase charge.
            for q in ("p50", "p99", "max"):
                figs.append(Figure(f"over-current excess-current exposure (time above the limit before the trip), "
                                   f"{q}", "ms", e[q], goal=("<=", EXPOSURE_GOAL_MS), n=e["n"],
                                   note="sum of the over-limit parts of the phases from the onset to output off"
                                   if q == "p50" else ""))
    for kind, (label, goal) in goals.items():
        d = out_cpu[kind]["dist_ms"]
        nb = out_cpu[kind]["not_measured"]
        note = f"p50 {d['p50']:.3f} ms" if d["n"] else "no trial measured"
        if nb:
            note += f"; {nb} of {n_cpu[kind]} trial(s) not measurable"
        figs.append(Figure(f"[cpu clock] {label}, max", "ms", d["max"], goal=("<=", goal), n=d["n"], note=note))
    figs.append(Figure("board resets nobody asked for during the trials", "", resets + resets_cpu, goal=("==", 0),
                       n=sum(n_model.values()) + sum(n_cpu.values()),
                       note="watchdog expiries outside the hang trials; such trials are discarded"))
    return {"figures": figs, "clock": f"{CLOCK} (+ a shorter cpu-clock pass)", "cpu_factor": factor_cpu,
            "counts": {**{k: v["dist_ms"]["n"] for k, v in out.items()},
                       **{f"cpu {k}": v["dist_ms"]["n"] for k, v in out_cpu.items()},
                       "unexpected resets": resets + resets_cpu},
            "setup": f"handheld-home, 2 kOhm, level 1, waveform {WAVE}; over-current and contact-loss onsets scheduled by the rig uniformly over one pulse period (seeded); onset = the instant the fault took effect (FAULT_N: the line's falling edge; over-current: the first instant excess current flows; contact loss: the loss inside a phase, else the next phase start); over-current = "
                     "source gain error to 1.15 x the trip point; FAULT_N held 5 ms. Main figures in clock mode "
                     "model (virtual time = the profile's per-call RP2040 costs, no host execution time; "
                     f"factor {factor}); the [cpu clock] rows add host execution time x the calibrated factor "
                     f"({factor_cpu:.1f}). In cpu mode this build often pauses for no_contact on a healthy 2 kOhm "
                     "load on its own, so many cpu trials cannot be measured (counted, not hidden)",
            "notes": [f"main-loop period from telemetry: {base} ms (model), {base_cpu} ms (cpu)"],
            "details": {"trials": out, "trials_cpu": out_cpu, "failed_trials": failed_trials,
                        "failed_trials_cpu": failed_cpu, "loop_period_ms": base, "wall_s": time.monotonic() - t0}}
