"""Amplitude per level at the FDA characterisation loads (500 Ohm, 2 kOhm, 10 kOhm) and the DC component, measured
by the rig on the virtual board. Amplitude = mean current of a phase (phase charge / width) of complete pulses.

Baseline (same run): the amplitude the level table asks for, quantised by the ISET DAC (CC/(TOP+1) x I_FS, the
device's own stated setpoint from `status`): the error the firmware adds on top of the DAC's resolution."""
from __future__ import annotations

import time

from benchlib import Figure, board_profile, provisioned_board, wait_virtual

CLOCK = "model"
LOADS = ("500", "2k", "10k")
WAVE = {"phase_us": 200, "gap_us": 50, "rate_hz": 100}


def wait_settled(dev, target_ua, timeout=60.0) -> dict:
    """Until the device says it runs at the level's setpoint (the ramp is over)."""
    end = time.monotonic() + timeout
    st = dev.status()
    while not (st.get("state") == "running" and st.get("target_ua") == target_ua
               and abs((st.get("setpoint_ua") or 0) - target_ua) <= 1) and time.monotonic() < end:
        time.sleep(0.05)
        st = dev.status()
    return st


def run(quick: bool = False) -> dict:
    prof = board_profile()
    levels = prof["levels_ua"]
    loads = ("2k",) if quick else LOADS
    lv_idx = [len(levels)] if quick else list(range(1, len(levels) + 1))
    rows = []
    dc = {}
    t0 = time.monotonic()
    with provisioned_board(clock=CLOCK) as (vb, dev):
        factor = vb.cpu_factor
        for load in loads:
            vb.rig.set_load(load)
            # one session per load, stepping the level up (each step ramps over 300 ms, S8)
            dev.start(level=lv_idx[0], duration_s=600, **WAVE)
            for lv in lv_idx:
                if lv != lv_idx[0]:
                    dev.set_level(lv)
                st = wait_settled(dev, levels[lv - 1])
                wait_virtual(vb, 0.01)
                cap = vb.rig.capture(0.2, keep_pieces=False, trace_bins=10)
                amps = [abs(a) for p in cap.active_pulses() if not p.partial for a in p.amp_ua]
                st2 = dev.status()
                m = sum(amps) / len(amps) if amps else None
                rows.append({"load": load, "level": lv, "want_ua": levels[lv - 1], "state": st.get("state"),
                             "setpoint_ua": st2.get("setpoint_ua"), "measured_ua": m, "n_phases": len(amps),
                             "spread_ua": (max(amps) - min(amps)) if amps else None})
                if lv == lv_idx[-1]:
                    c1 = vb.rig.capture(1.0, keep_pieces=False, trace_bins=10)
                    dc[load] = {"dc_ua": c1.dc_ua, "n_pulses": c1.n_pulses, "n_unbalanced": c1.n_unbalanced}
            dev.stop()
    ok = [r for r in rows if r["measured_ua"] is not None]
    err = [abs(r["measured_ua"] - r["want_ua"]) for r in ok]
    err_pct = [abs(r["measured_ua"] - r["want_ua"]) / r["want_ua"] * 100 for r in ok if r["want_ua"]]
    dac = [abs(r["setpoint_ua"] - r["want_ua"]) for r in ok if isinstance(r.get("setpoint_ua"), (int, float))]
    figs = [Figure("amplitude error per level, worst over loads", "uA", max(err) if err else None,
                   baseline=max(dac) if dac else None, baseline_label="DAC quantisation (stated setpoint)",
                   n=sum(r["n_phases"] for r in ok),
                   note=f"worst {max(err_pct):.2f} % of the level" if err_pct else ""),
            Figure("levels x loads measured", "", len(ok), goal=(">=", len(rows)), n=len(rows))]
    for load in loads:
        e = [abs(r["measured_ua"] - r["want_ua"]) for r in ok if r["load"] == load]
        figs.append(Figure(f"amplitude error at {load} Ohm, worst level", "uA", max(e) if e else None,
                           goal=("<=", max(levels) * 0.03 + 2), n=len(e), note="goal: 3 % of the top level + 2 uA"))
    for load, d in dc.items():
        figs.append(Figure(f"DC component over 1 s at {load} Ohm, top level", "uA", abs(d["dc_ua"]), goal=("<=", 1.0),
                           baseline=10.0, baseline_label="usual DC limit", n=d["n_pulses"],
                           note=f"{d['n_unbalanced']} unbalanced pulses"))
    return {"figures": figs, "clock": CLOCK, "cpu_factor": factor,
            "counts": {"points": len(rows), "measured": len(ok)},
            "setup": f"handheld-home levels {levels} uA, waveform {WAVE}, 0.2 s capture per point after the ramp",
            "details": {"rows": rows, "dc": dc, "wall_s": time.monotonic() - t0}}
