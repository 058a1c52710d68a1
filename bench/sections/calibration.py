"""Virtual-clock calibration: the published RP2040 MicroPython workloads (GPIO toggle loop, button -> LED polling
reaction) run on the virtual board, in the deterministic model clock and in the cpu clock (booted several times,
so the CPU factor's spread across boots shows). The same workload strings run on a real Pico recalibrate the profile
(see picostim.sim.calibrate and the README)."""
from __future__ import annotations

import statistics

from benchlib import Figure, board_profile



def _measure(clock, seed, toggles, presses):
    from picostim.sim import VirtualBoard, calibrate
    with VirtualBoard(board="handheld-home", load="2k", clock=clock, seed=seed, rig_port=None) as vb:
        vb.wait_enumerated()
        return calibrate.measure(vb, toggles=toggles, presses=presses)


def run(quick: bool = False) -> dict:
    from picostim.sim import calibrate
    prof = board_profile()
    toggles, presses, boots = (500, 6, 2) if quick else (2000, 20, 4)
    model = _measure("model", 0, toggles, presses)
    cpu = [_measure("cpu", k, toggles, presses) for k in range(boots)]
    figs = []
    lo, hi = calibrate.TOLERANCE
    for key, published in calibrate.RP2040_FIGURES.items():
        r = model[key] / published
        figs.append(Figure(f"{key.replace('_us', '')} (model clock)", "us", round(model[key], 2), goal=(">=", lo * published),
                           baseline=published, baseline_label="published RP2040 figure", n=toggles if "toggle" in key else presses,
                           passed=lo <= r <= hi, note=f"ratio {r:.2f} (tolerance {lo}-{hi}x)"))
    for key, published in calibrate.RP2040_FIGURES.items():
        vals = [c[key] for c in cpu]
        med = statistics.median(vals)
        figs.append(Figure(f"{key.replace('_us', '')} (cpu clock, median of {boots} boots)", "us", round(med, 2),
                           goal=(">=", lo * published), baseline=published, baseline_label="published RP2040 figure",
                           n=boots, note=f"ratio {med / published:.2f}; boots {', '.join(f'{v:.1f}' for v in vals)}"))
    factors = [c["cpu_factor"] for c in cpu]
    mean = statistics.fmean(factors)
    spread = (max(factors) - min(factors)) / mean * 100
    figs.append(Figure("cpu factor (RP2040 ns per host ns), mean of boots", "x", round(mean, 1), n=boots,
                       note=f"min {min(factors):.1f}, max {max(factors):.1f}"))
    figs.append(Figure("cpu factor spread across boots", "% of mean", round(spread, 1), n=boots,
                       note="the factor is set at boot from the fastest of 9 reference runs; host noise left in it "
                            "makes the host look slower, the factor smaller and virtual time shorter"))
    ref_ns = prof["mcu"]["vclock"]["ref_loop_ns"]
    refs = [c["ref_loop_us"] * 1000 for c in cpu]
    figs.append(Figure("reference loop iteration (cpu clock), median", "ns", round(statistics.median(refs)),
                       goal=(">=", lo * ref_ns), baseline=ref_ns, baseline_label="profile ref_loop_ns (RP2040)",
                       n=boots, note=f"boots {', '.join(f'{v:.0f}' for v in refs)}"))
    return {"figures": figs, "clock": "model and cpu", "cpu_factor": round(mean, 1),
            "setup": f"handheld-home; {toggles} toggles, {presses} button presses per board; cpu clock booted "
                     f"{boots} times; published figures: {calibrate.RP2040_FIGURES}",
            "details": {"model": {k: v for k, v in model.items() if not k.endswith("_all")},
                        "cpu": [{k: v for k, v in c.items() if not k.endswith("_all")} for c in cpu]}}
