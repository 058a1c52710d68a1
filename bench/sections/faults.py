"""Campaign: random fault sequences during stimulation, judged by what the rig measures at the electrodes.

Each trial starts a session (random level and waveform, or a program), lets it ramp for a random time, then
injects 3-6 random faults with random gaps: contact loss/return, ADC stuck, FAULT_N pulses, firmware hang (rare),
and — in half of the trials — over-current faults (source gain error, output short). The whole window is captured.

Invariants:
* trials without an over-current fault: the rig never measures more than the cap;
* trials with one: the current is above the cap for at most 1 ms at a time (S4 trip goal), and never above the
  hardware comparator's trip point for longer than that either;
* every trial: |DC| over the window <= 10 uA (the usual DC limit; S6's 1 uA goal is measured in `amplitude`);
* after a hang the watchdog resets the board into a safe output."""
from __future__ import annotations

import random
import time

import numpy as np

from benchlib import Figure, TrialHung, board_profile, provisioned_board, reconnect, run_with_timeout, wait_virtual

CLOCK = "model"
DT_NS = 5_000                 # trace resolution for time-above-cap
DC_LIMIT_UA = 10.0
EXCURSION_MS = 1.0


def longest_run_above(cap, limit_ua):
    """(longest continuous time above limit in ms, total time above in ms) from the capture's waveform."""
    n = max(2, min(2_000_000, int((cap.t1_ns - cap.t0_ns) / DT_NS)))
    tr = cap.trace(n)
    above = np.abs(tr.i_ua) > limit_ua
    if not above.any():
        return 0.0, 0.0
    dt_ms = (cap.t1_ns - cap.t0_ns) / (n - 1) / 1e6
    d = np.diff(np.concatenate(([0], above.astype(np.int8), [0])))
    starts, ends = np.where(d == 1)[0], np.where(d == -1)[0]
    return float((ends - starts).max() * dt_ms), float(above.sum() * dt_ms)


def start_session(dev, prof, rnd):
    n = len(prof["levels_ua"])
    level = rnd.randint(1, n)
    if rnd.random() < 0.3 and prof.get("programs"):
        return dev.start(level=level, program=rnd.choice(prof["programs"]), duration_s=300)
    return dev.start(level=level, duration_s=300, phase_us=rnd.randint(50, 500), gap_us=rnd.randint(0, 200),
                     rate_hz=rnd.choice([20, 50, 100, 200]))


def trial(vb, dev, prof, rnd, overcurrent: bool):
    start_session(dev, prof, rnd)
    wait_virtual(vb, rnd.uniform(0.2, 1.6))
    t_a = vb.now_ns()
    pool = ["contact_loss", "contact_return", "adc_stuck", "fault_n", "clear"]
    if overcurrent:
        pool += ["overcurrent", "overcurrent", "short", "short_off"]
    seq = []
    hang = rnd.random() < 0.08
    for _ in range(rnd.randint(3, 6)):
        f = rnd.choice(pool)
        if f == "adc_stuck":
            kw = {"channel": "I_SENSE", "raw": rnd.choice([0, 4095])}
        elif f == "fault_n":
            kw = {"ms": round(rnd.uniform(0.5, 20), 2)}
        elif f == "overcurrent":
            kw = {"factor": round(rnd.uniform(1.1, 2.0), 2)}
        elif f == "short":
            kw = {"on": True}
        elif f == "short_off":
            f, kw = "short", {"on": False}
        else:
            kw = {}
        vb.rig.inject(f, **kw)
        seq.append([f, kw])
        wait_virtual(vb, rnd.uniform(0.005, 0.3))
    boots = vb.boot_count
    if hang:
        vb.rig.inject("hang")
        seq.append(["hang", {}])
        wait_virtual(vb, prof["limits"]["wdt_timeout_ms"] / 1000 * 2.5)
    vb.rig.inject("clear")
    wait_virtual(vb, 0.05)
    t_b = vb.now_ns()
    cap = vb.rig.capture((t_b - t_a) / 1e9, start_s=t_a / 1e9, trace_bins=100)
    lim = prof["limits"]["cap_ua"]
    run_ms, total_ms = longest_run_above(cap, lim)
    row = {"overcurrent": overcurrent, "faults": seq, "max_abs_ua": cap.max_abs_ua, "dc_ua": cap.dc_ua,
           "longest_above_cap_ms": run_ms, "total_above_cap_ms": total_ms, "window_s": (t_b - t_a) / 1e9,
           "n_pulses": cap.n_pulses, "hang": hang}
    if hang:
        end = time.monotonic() + 3.0
        while vb.boot_count == boots and time.monotonic() < end:   # the restart runs on another thread
            time.sleep(0.01)
        row["watchdog_reset"] = vb.boot_count > boots and vb.reset_cause == 3
        reconnect(dev)
    else:
        try:
            dev.stop()
        except Exception:  # noqa: BLE001
            pass
    try:
        dev.clear_fault()
    except Exception:  # noqa: BLE001
        pass
    viol = []
    if not overcurrent and cap.max_abs_ua > lim + 0.5:
        viol.append(f"{cap.max_abs_ua:.1f} uA above the cap without an over-current fault")
    if overcurrent and run_ms > EXCURSION_MS:
        viol.append(f"above the cap for {run_ms:.3f} ms at a time")
    if abs(cap.dc_ua) > DC_LIMIT_UA:
        viol.append(f"DC {cap.dc_ua:.2f} uA")
    if hang and not row["watchdog_reset"]:
        viol.append("hang without watchdog reset")
    row["violations"] = viol
    return row


def run(quick: bool = False) -> dict:
    prof = board_profile()
    n = 6 if quick else 32
    rnd = random.Random(555)
    rows, errors = [], []
    t0 = time.monotonic()
    with provisioned_board(clock=CLOCK) as (vb, dev):
        factor = vb.cpu_factor
        for k in range(n):
            try:
                rows.append(run_with_timeout(trial, 60, vb, dev, prof, rnd, k % 2 == 1))
            except TrialHung as e:
                errors.append(f"trial {k}: {e}; campaign stopped")
                break
            except Exception as e:  # noqa: BLE001
                errors.append(f"trial {k}: {type(e).__name__}: {e}"[:240])
                try:
                    vb.rig.inject("clear")
                    reconnect(dev)
                    dev.stop()
                    dev.clear_fault()
                except Exception:  # noqa: BLE001
                    pass
    no_oc = [r for r in rows if not r["overcurrent"]]
    oc = [r for r in rows if r["overcurrent"]]
    viol = [v for r in rows for v in r["violations"]]
    n_faults = sum(len(r["faults"]) for r in rows)
    figs = [
        Figure("trials completed", "", len(rows), goal=(">=", n), n=n,
               note=f"{n_faults} faults injected; {len(errors)} trial(s) broke the bench" if errors else
               f"{n_faults} faults injected"),
        Figure("violations", "", len(viol), goal=("==", 0), n=len(rows)),
        Figure("max current, trials without over-current faults", "uA",
               max((r["max_abs_ua"] for r in no_oc), default=None), goal=("<=", prof["limits"]["cap_ua"]),
               n=len(no_oc)),
        Figure("longest excursion above the cap, trials with over-current faults", "ms",
               max((r["longest_above_cap_ms"] for r in oc), default=None), goal=("<=", EXCURSION_MS), n=len(oc),
               note=f"max current {max((r['max_abs_ua'] for r in oc), default=0):.0f} uA"),
        Figure("max |DC| over a trial window", "uA", max((abs(r["dc_ua"]) for r in rows), default=None),
               goal=("<=", DC_LIMIT_UA), n=len(rows)),
        Figure("hangs reset by the watchdog", "", sum(1 for r in rows if r.get("watchdog_reset")),
               goal=(">=", sum(1 for r in rows if r["hang"])), n=sum(1 for r in rows if r["hang"])),
    ]
    return {"figures": figs, "clock": CLOCK, "cpu_factor": factor,
            "counts": {"trials": len(rows), "faults injected": n_faults, "violations": len(viol)},
            "setup": "handheld-home, 2 kOhm, random level/waveform/program, seed 555; time above the cap from the "
                     f"rig waveform at {DT_NS // 1000} us resolution",
            "details": {"rows": rows, "errors": errors, "violations": viol[:30], "wall_s": time.monotonic() - t0}}
