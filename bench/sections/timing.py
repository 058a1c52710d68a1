"""Pulse timing measured by the rig on the virtual board: phase widths, interphase gap and repetition period
against the request, in 8 ns PWM ticks, over a parameter grid; phase equality within a pair; repetition jitter.

Baseline (same run): what stock `machine.PWM(freq=rate, duty_ns=phase)` gives for the same request on one slice,
from the virtual board's model of rp2's machine_pwm.c arithmetic (the register values a Pico would get), so the
same tick error is computed for both: the stock API has no pair/gap, and cannot go below ~7.5 Hz."""
from __future__ import annotations

import itertools
import time

from benchlib import TICK_NS, Figure, board_profile, provisioned_board, reconnect, wait_virtual
from picostim.transport import TransportError

CLOCK = "model"
PHASES_US = (20, 100, 250, 1000)
GAPS_US = (0, 50, 500)
RATES_HZ = (2.0, 50.0, 130.7, 500.0)
QUICK = ((20, 0, 50.0), (250, 50, 130.7), (1000, 500, 2.0))


def stock_pwm_baseline(phase_us, rate_hz, sys_hz):
    """(width error ticks, period error ticks) of stock machine.PWM for this request, or None if it refuses."""
    from picostim.sim.chip import mp_pwm
    try:
        div16, top = mp_pwm.freq_to_div_top(int(rate_hz), sys_hz)  # the stock API takes an int
    except (ValueError, OverflowError):
        return None
    cc = mp_pwm.duty_ns_to_cc(int(phase_us * 1000), div16, top, sys_hz)
    tick_sys = div16 / 16                      # PWM counter period in system clocks
    period_ticks = (top + 1) * tick_sys
    width_ticks = cc * tick_sys
    return (abs(width_ticks - phase_us * sys_hz / 1e6), abs(period_ticks - sys_hz / rate_hz))


def measure_one(vb, dev, phase_us, gap_us, rate_hz, sys_hz):
    row = {"phase_us": phase_us, "gap_us": gap_us, "rate_hz": rate_hz}
    try:
        rep = dev.start(level=1, phase_us=phase_us, gap_us=gap_us, rate_hz=rate_hz, duration_s=60)
    except Exception as e:     # noqa: BLE001 — a refused request is a result (pair longer than the period)
        row["refused"] = getattr(e, "code", str(e))
        return row
    row["applied"] = {k: rep.get(k) for k in ("phase_us", "gap_us", "rate_hz", "div", "period_ticks")}
    wait_virtual(vb, 0.05)
    n_periods = 6
    cap = vb.rig.capture(max(0.02, n_periods / rate_hz), keep_pieces=False, trace_bins=50)
    dev.stop()
    pulses = [p for p in cap.pulses if not p.partial and len(p.widths_ns) == 2]
    want_w = phase_us * 1000 / TICK_NS
    want_g = gap_us * 1000 / TICK_NS
    want_p = 1e9 / rate_hz / TICK_NS
    row["n_pulses"] = len(pulses)
    if not pulses:
        return row
    row["width_err_ticks"] = max(abs(w / TICK_NS - want_w) for p in pulses for w in p.widths_ns)
    row["pair_diff_ticks"] = max(abs(p.widths_ns[0] - p.widths_ns[1]) / TICK_NS for p in pulses)
    row["gap_err_ticks"] = max(abs(p.gap_ns / TICK_NS - want_g) for p in pulses)
    starts = [p.t_ns for p in cap.pulses if len(p.widths_ns) >= 1]
    iv = [(b - a) / TICK_NS for a, b in zip(starts, starts[1:])]
    if iv:
        row["period_err_ticks"] = max(abs(x - want_p) for x in iv)
        row["jitter_ticks"] = max(iv) - min(iv)
        pt = rep.get("period_ticks")
        if isinstance(pt, int):
            stated = pt * 1e9 / sys_hz / TICK_NS          # period_ticks are system clocks
            row["period_vs_stated_ticks"] = max(abs(x - stated) for x in iv)
        row["n_intervals"] = len(iv)
    base = stock_pwm_baseline(phase_us, rate_hz, sys_hz)
    row["stock_pwm"] = None if base is None else {"width_err_ticks": base[0], "period_err_ticks": base[1]}
    return row


def _period_note(row, sys_hz):
    if not row or row.get("period_err_ticks") is None:
        return ""
    return (f"worst at {row['phase_us']}/{row['gap_us']} us, {row['rate_hz']} Hz: applied "
            f"{row['applied'].get('period_ticks')} ticks vs {sys_hz / row['rate_hz']:.2f} requested "
            f"(DIV {row['applied'].get('div')})")


def run(quick: bool = False) -> dict:
    prof = board_profile()
    sys_hz = prof["mcu"]["sys_clk_hz"]
    grid = QUICK if quick else list(itertools.product(PHASES_US, GAPS_US, RATES_HZ))
    rows = []
    t0 = time.monotonic()
    with provisioned_board(clock=CLOCK) as (vb, dev):
        factor = vb.cpu_factor
        boots = vb.boot_count
        for ph, gap, rate in grid:
            for attempt in range(2):
                b0 = vb.boot_count
                try:
                    row = measure_one(vb, dev, ph, gap, rate, sys_hz)
                    if vb.boot_count == b0:
                        break
                    row = {"phase_us": ph, "gap_us": gap, "rate_hz": rate, "error": "board reset during the point"}
                except TransportError as e:
                    row = {"phase_us": ph, "gap_us": gap, "rate_hz": rate, "error": str(e)[:160]}
                reconnect(dev)          # a reset spoils the point: measure it again on the restarted board
            rows.append(row)
        resets = vb.boot_count - boots
    done = [r for r in rows if r.get("n_pulses")]
    refused = [r for r in rows if "refused" in r]
    missing = [r for r in rows if "refused" not in r and not r.get("n_pulses")]
    errs = [r for r in rows if r.get("error")]

    def worst(key, rs=done):
        vals = [r[key] for r in rs if r.get(key) is not None]
        return max(vals) if vals else None

    def worst_row(rs):
        return max(rs, key=lambda r: r.get("period_err_ticks") or 0, default=None)

    worst_p = worst_row(done)
    div1 = [r for r in done if r.get("applied", {}).get("div") == 1]
    divn = [r for r in done if (r.get("applied", {}).get("div") or 1) > 1]
    for r in divn:
        if r.get("period_err_ticks") is not None:
            r["period_err_vs_bound"] = r["period_err_ticks"] / (r["applied"]["div"] / 2)
    base_rows = [r for r in done if r.get("stock_pwm")]
    b_w = max((r["stock_pwm"]["width_err_ticks"] for r in base_rows), default=None)
    b_p = max((r["stock_pwm"]["period_err_ticks"] for r in base_rows), default=None)
    n_pulses = sum(r["n_pulses"] for r in done)
    figs = [
        Figure("phase width error vs request, worst over grid", "ticks", worst("width_err_ticks"), goal=("<=", 1),
               baseline=b_w, baseline_label="stock machine.PWM duty_ns", n=n_pulses),
        Figure("phase A vs phase B width within a pair, worst", "ticks", worst("pair_diff_ticks"), goal=("==", 0),
               baseline_label="n/a: stock API makes no pair", n=n_pulses),
        Figure("interphase gap error vs request, worst", "ticks", worst("gap_err_ticks"), goal=("<=", 1),
               baseline_label="n/a: stock API makes no gap", n=n_pulses),
        Figure("repetition period error vs request, worst at DIV 1", "ticks", worst("period_err_ticks", div1),
               goal=("<=", 1), baseline=b_p, baseline_label="stock machine.PWM freq",
               n=sum(r.get("n_intervals", 0) for r in div1), note=_period_note(worst_row(div1), sys_hz)),
        Figure("repetition period error vs the DIV grid bound (DIV/2 ticks) at DIV > 1, worst", "x bound",
               worst("period_err_vs_bound", divn), goal=("<=", 1), n=sum(r.get("n_intervals", 0) for r in divn),
               note=_period_note(worst_row(divn), sys_hz) + "; with DIV > 1 (pairs over 524 us) every period is a "
                    "multiple of DIV ticks: the planner takes, of the dividers that keep phase and gap exact, the one "
                    "whose grid is nearest the request"),
        Figure("repetition period error vs request, worst over grid (any DIV)", "ticks", worst("period_err_ticks"),
               n=sum(r.get("n_intervals", 0) for r in done), note=_period_note(worst_p, sys_hz)),
        Figure("repetition period vs the period the device stated it applied, worst", "ticks",
               worst("period_vs_stated_ticks"), goal=("<=", 1), n=sum(r.get("n_intervals", 0) for r in done),
               note="request quantised to the slice's DIV/TOP grid; the reply states the applied period"),
        Figure("repetition-rate jitter (max-min interval), worst", "ticks", worst("jitter_ticks"), goal=("==", 0),
               n=sum(r.get("n_intervals", 0) for r in done),
               baseline_label="stock PWM is hardware-periodic too (0 by construction)"),
        Figure("grid points measured", "", len(done), goal=(">=", len(grid) - len(refused)), n=len(grid),
               note=f"{len(refused)} refused by the planner (pair longer than the period or similar), "
                    f"{len(missing)} gave no pulses" + (f" ({len(errs)} after a board reset)" if errs else "")),
        Figure("board resets nobody asked for during the grid", "", resets, goal=("==", 0), n=len(grid),
               note="a point spoilt by a reset is measured again once"),
    ]
    return {"figures": figs, "clock": CLOCK, "cpu_factor": factor,
            "counts": {"grid points": len(grid), "measured": len(done), "refused": len(refused),
                       "pulses measured": n_pulses},
            "setup": f"handheld-home, 2 kOhm, level 1, grid phase {PHASES_US} us x gap {GAPS_US} us x rate "
                     f"{RATES_HZ} Hz, 6 periods captured per point; 1 tick = {TICK_NS} ns",
            "details": {"rows": rows, "wall_s": time.monotonic() - t0},
            "notes": [f"refused: {[(r['phase_us'], r['gap_us'], r['rate_hz'], r['refused']) for r in refused]}"]
            if refused else []}
