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
loop-polled (no IRQ, no hardware gating) safety check could at best achieve.

Other waveforms (WAVES: the longest phases with the longest gap, the shortest phases at the highest rate), on a
board of their own with their own seed: uniform over-current and contact-loss onsets, the CPU load of the
supervisor's looks (the virtual CPU's own busy account while stimulating minus idle), and, for every waveform, the
residual window: onsets after the pair's last I conversion are seen only at the next pair, a period later; its width
is found by bisection on onsets the rig schedules before a -phase end, and reported with its share of the period."""
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
# the S4 goal for every waveform the spec allows: the bench waveform plus the longest phases with the longest gap and
# the shortest phases with no gap at the highest rate
WAVES = {"200/50 us @ 200 Hz": WAVE,
         "1000/500 us @ 50 Hz": {"phase_us": 1000, "gap_us": 500, "rate_hz": 50},
         "20/0 us @ 500 Hz": {"phase_us": 20, "gap_us": 0, "rate_hz": 500}}
RESIDUAL_PROBE_US = 64   # the residual window is searched for in the last this-many us of the -phase
LOAD_WINDOW_S = 1.0      # CPU load: the board's own per-call account over this much steady virtual time


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


def _start(vb, dev, level, wave=WAVE):
    dev.start(level=level, duration_s=600, **wave)
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


def uniform_onset_ns(vb, rnd, wave=WAVE):
    """An instant drawn uniformly over one pulse period, LEAD_NS ahead of the board's present."""
    period_ns = int(round(1e9 / wave["rate_hz"]))
    return vb.now_ns() + LEAD_NS + int(rnd.uniform(0.0, period_ns))


def phase_peaks(cap):
    """(start, end, peak uA) of every phase the capture saw, in order."""
    out = []
    for p in cap.pulses:
        for k, (w, pk) in enumerate(zip(p.widths_ns, p.peak_ua)):
            start = p.t_ns if k == 0 else p.t_ns + p.widths_ns[0] + (p.gap_ns or 0)
            out.append((start, start + w, abs(pk)))
    return sorted(out)


def _recover_after_trial(vb, dev):
    """After a trial that failed or reset the board: reach the application again and bring it back to the start
    state. Returns a note when even that fails (the campaign goes on and counts it)."""
    try:
        try:
            dev.hello(timeout=3)
        except Exception:  # noqa: BLE001
            reconnect(dev)
        _recover(vb, dev)
    except Exception as e:  # noqa: BLE001
        return f"recovery: {type(e).__name__}: {e}"[:200]
    return None


def trial_overcurrent(vb, dev, prof, rnd, wave=WAVE):
    """(onset -> output off, excess-current exposure), ms, for an onset drawn uniformly over a period."""
    _start(vb, dev, 1, wave)
    return overcurrent_at(vb, dev, prof, uniform_onset_ns(vb, rnd, wave))


def overcurrent_at(vb, dev, prof, t_at):
    """(onset -> output off, excess-current exposure), ms, for an over-current scheduled at t_at (board ns) while
    stimulating; recovers the board after."""
    i_fs = prof["analog"]["i_fs_ua"]
    limit = trip_limit_ua(prof)
    # source gain error large enough to take level 1 past the trip point (a short ramp keeps trials quick)
    factor = round(limit * 1.15 / prof["levels_ua"][0], 2)
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


def trial_contact(vb, dev, prof, rnd, wave=WAVE):
    i_fs = prof["analog"]["i_fs_ua"]
    probe = min(_ps().CONTACT_PROBE_UA, prof["limits"]["cap_ua"])
    _start(vb, dev, 1, wave)
    t_inj = uniform_onset_ns(vb, rnd, wave)
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


def neg_phase_end(vb, wave):
    """(end of a -phase, repetition period), board ns, from the rig's capture of the pulses (the pulse train is
    exact to the 8 ns PWM tick, so later -phase ends are that one plus whole periods)."""
    period_s = 1.0 / wave["rate_hz"]
    cap = vb.rig.capture(2.5 * period_s, start_s=vb.now_ns() / 1e9, keep_pieces=False, trace_bins=10)
    full = [p for p in cap.pulses if not p.partial and len(p.widths_ns) == 2]
    if len(full) < 2:
        return None
    a, b = full[-2], full[-1]
    return b.t_ns + b.widths_ns[0] + (b.gap_ns or 0) + b.widths_ns[1], b.t_ns - a.t_ns


def overcurrent_before_neg_end(vb, dev, prof, wave, before_ns):
    """onset -> output off (ms) for an over-current scheduled before_ns before the end of a -phase."""
    _start(vb, dev, 1, wave)
    grid = neg_phase_end(vb, wave)
    if grid is None:
        return None
    end, period = grid
    t = end - before_ns
    floor = vb.now_ns() + LEAD_NS
    if t < floor:
        t += ((floor - t) // period + 1) * period
    r = overcurrent_at(vb, dev, prof, t)
    return None if r is None else r[0]


def residual_window(vb, dev, prof, wave, goal_ms=1.0):
    """The onsets a look-based supervisor cannot catch within the goal: those after the -phase's last I conversion,
    seen only at the next pair. Bisection on onsets scheduled before the end of a -phase, to 0.5 us: returns
    (width us or None, {before_ns: onset -> off ms})."""
    seen = {}

    def late(before_ns):
        if before_ns not in seen:
            seen[before_ns] = run_with_timeout(overcurrent_before_neg_end, 40, vb, dev, prof, wave, before_ns)
        v = seen[before_ns]
        if v is None:
            raise RuntimeError(f"residual trial at {before_ns} ns before the -phase end not measured")
        return v > goal_ms

    lo, hi = 250, RESIDUAL_PROBE_US * 1000
    if late(hi):
        return None, seen                 # wider than the probed span: reported as not measured
    if not late(lo):
        return 0.0, seen
    while hi - lo > 500:
        mid = (lo + hi) // 2
        if late(mid):
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2000, seen


class CpuAccount:
    """Busy time of the virtual CPU from its own account: every RPC carries the virtual time the firmware spent
    since its previous call (model clock: the profile's per-call RP2040 costs and charged busy-waits; sleeping is
    not in it). Summed here, read over a window of virtual time."""

    def __init__(self, vb):
        self.busy_ns = 0
        handle = vb._handle

        def counted(req, gen):
            try:
                self.busy_ns += int(req[2])
            except (IndexError, TypeError, ValueError):
                pass
            return handle(req, gen)

        vb._handle = counted

    def busy_fraction(self, vb, seconds):
        b0, t0 = self.busy_ns, vb.now_ns()
        wait_virtual(vb, seconds)
        return (self.busy_ns - b0) / max(1, vb.now_ns() - t0)


def _trials(fn, count, vb, dev, prof, rnd, wave, failed):
    vals = []
    for _ in range(count):
        boots = vb.boot_count
        try:
            v = run_with_timeout(fn, 40, vb, dev, prof, rnd, wave)
        except TrialHung as e:
            failed.append(f"{e}; trials stopped")
            break
        except Exception as e:  # noqa: BLE001 — a trial that breaks is counted, the campaign goes on
            v = None
            failed.append(f"{type(e).__name__}: {e}"[:200])
        if vb.boot_count != boots or v is None:
            v = None
            err = _recover_after_trial(vb, dev)
            if err:
                failed.append(err)
        vals.append(v)
    return vals


def wave_campaign(prof, n_oc, n_contact, rnd):
    """Per waveform of WAVES: CPU load of the looks, uniform over-current / contact-loss onsets (not for the bench
    waveform: the main campaign has those), the residual window at the end of the -phase."""
    out = {}
    with provisioned_board(clock=CLOCK) as (vb, dev):
        acct = CpuAccount(vb)
        wait_virtual(vb, 0.2)
        idle = acct.busy_fraction(vb, LOAD_WINDOW_S)
        for name, wave in WAVES.items():
            r = {"wave": wave, "failed": [], "cpu_idle": idle}
            _start(vb, dev, 1, wave)
            s0, t0 = dev.status(), vb.now_ns()
            r["cpu_stim"] = acct.busy_fraction(vb, LOAD_WINDOW_S)
            s1, t1 = dev.status(), vb.now_ns()
            r["looks_per_s"] = sum(s1[k] - s0[k] for k in ("samples", "missed", "late")) / ((t1 - t0) / 1e9)
            r["missed_late"] = sum(s1[k] - s0[k] for k in ("missed", "late"))
            _recover(vb, dev)
            if wave is not WAVE:
                oc = _trials(trial_overcurrent, n_oc, vb, dev, prof, rnd, wave, r["failed"])
                r["overcurrent_ms"] = [v[0] for v in oc if v is not None]
                r["exposure_ms"] = [v[1] for v in oc if v is not None]
                r["overcurrent_not_measured"] = sum(1 for v in oc if v is None)
                ct = _trials(trial_contact, n_contact, vb, dev, prof, rnd, wave, r["failed"])
                r["contact_ms"] = [v for v in ct if v is not None]
                r["contact_not_measured"] = sum(1 for v in ct if v is None)
            try:
                width, seen = residual_window(vb, dev, prof, wave)
            except Exception as e:  # noqa: BLE001
                width, seen = None, {}
                r["failed"].append(f"residual: {type(e).__name__}: {e}"[:200])
                try:
                    reconnect(dev)
                    _recover(vb, dev)
                except Exception:  # noqa: BLE001
                    pass
            r["residual_us"] = width
            r["residual_trials"] = {str(k): v for k, v in sorted(seen.items())}
            r["period_us"] = 1e6 / wave["rate_hz"]
            out[name] = r
    return out


def wave_figures(waves):
    figs = []
    for name, r in waves.items():
        tag = f"[{name}]"
        if "overcurrent_ms" in r:
            d = dist(r["overcurrent_ms"])
            nb = r["overcurrent_not_measured"]
            for q in ("p50", "p99", "max"):
                figs.append(Figure(f"{tag} over-current onset -> output off, {q}", "ms", d[q] if d["n"] else None,
                                   goal=("<=", 1.0), n=d["n"],
                                   note=(f"{nb} trial(s) not measured (counted as failures)" if nb else "")
                                   if q == "p99" else "", passed=False if nb and q == "p99" else None))
            e = dist(r["exposure_ms"])
            figs.append(Figure(f"{tag} over-current excess-current exposure, max", "ms", e["max"],
                               goal=("<=", EXPOSURE_GOAL_MS), n=e["n"]))
            c = dist(r["contact_ms"])
            cb = r["contact_not_measured"]
            figs.append(Figure(f"{tag} contact loss -> pause, max", "ms", c["max"], goal=("<=", 2.0), n=c["n"],
                               note=(f"p50 {c['p50']:.3f} ms" if c["n"] else "") +
                               (f"; {cb} trial(s) not measured" if cb else ""),
                               passed=False if cb else None))
        w = r["residual_us"]
        share = None if w is None else 100.0 * w / r["period_us"]
        figs.append(Figure(f"{tag} residual window: over-current onsets at the end of the -phase seen only at the "
                           "next pair", "us", w, n=len(r["residual_trials"]),
                           note=("not measured" if w is None else
                                 f"{share:.2f} % of the {r['period_us']:.0f} us period; bisection on onsets "
                                 "scheduled before the -phase end, to 0.5 us")))
        figs.append(Figure(f"{tag} share of the period in the residual window", "%", share))
        load = 100.0 * (r["cpu_stim"] - r["cpu_idle"])
        figs.append(Figure(f"{tag} CPU load of the supervisor's looks (busy stimulating - busy idle)", "%",
                           round(load, 2),
                           note=f"{r['looks_per_s']:.0f} looks/s ({r['missed_late']} missed or late); virtual CPU "
                                f"busy {100 * r['cpu_stim']:.2f} % stimulating, {100 * r['cpu_idle']:.2f} % idle "
                                f"(model clock: per-call RP2040 costs)"))
    return figs


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
                    err = _recover_after_trial(vb, dev)
                    if err:
                        failed_trials.setdefault(kind, []).append(err)
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
    # other waveforms: their own seed, so the draws above stay those of earlier runs
    waves = wave_campaign(prof, 3 if quick else 30, 2 if quick else 10, random.Random(11))
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
    figs += wave_figures(waves)
    figs.append(Figure("board resets nobody asked for during the trials", "", resets + resets_cpu, goal=("==", 0),
                       n=sum(n_model.values()) + sum(n_cpu.values()),
                       note="watchdog expiries outside the hang trials; such trials are discarded"))
    return {"figures": figs, "clock": f"{CLOCK} (+ a shorter cpu-clock pass)", "cpu_factor": factor_cpu,
            "counts": {**{k: v["dist_ms"]["n"] for k, v in out.items()},
                       **{f"cpu {k}": v["dist_ms"]["n"] for k, v in out_cpu.items()},
                       "unexpected resets": resets + resets_cpu},
            "setup": f"handheld-home, 2 kOhm, level 1, waveform {WAVE} (rows tagged [..] : that waveform, own board, "
                     "seed 11); over-current and contact-loss onsets scheduled by the rig uniformly over one pulse period (seeded); onset = the instant the fault took effect (FAULT_N: the line's falling edge; over-current: the first instant excess current flows; contact loss: the loss inside a phase, else the next phase start); over-current = "
                     "source gain error to 1.15 x the trip point; FAULT_N held 5 ms. Main figures in clock mode "
                     "model (virtual time = the profile's per-call RP2040 costs, no host execution time; "
                     f"factor {factor}); the [cpu clock] rows add host execution time x the calibrated factor "
                     f"({factor_cpu:.1f}). In cpu mode this build often pauses for no_contact on a healthy 2 kOhm "
                     "load on its own, so many cpu trials cannot be measured (counted, not hidden)",
            "notes": [f"main-loop period from telemetry: {base} ms (model), {base_cpu} ms (cpu)"],
            "details": {"trials": out, "trials_cpu": out_cpu, "waves": waves, "failed_trials": failed_trials,
                        "failed_trials_cpu": failed_cpu, "loop_period_ms": base, "wall_s": time.monotonic() - t0}}
