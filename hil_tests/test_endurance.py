"""A short endurance run: a real program for a while, every pulse checked in consecutive capture windows."""
import pytest

import support
from picostim.shared import codes
from support import full_pulses

WINDOWS = 6
WINDOW_S = 2.0


@pytest.mark.hil_slow
def test_ems_program_endurance(dut, rig, measure, levels_ua):
    """`ems` (50 Hz bursts 2 s on / 2 s off) for 12 s: balanced pulses, no shoot-through, DC <= 1 uA per window,
    amplitude never above the level, the DUT answers throughout."""
    dut.start(level=2, program="ems")
    rig.wait(1.0)
    worst_dc = worst_amp = 0.0
    unbalanced = shoot = pulses = 0
    worst_pct, worst_note = 0.0, ""
    for k in range(WINDOWS):
        cap = rig.capture(WINDOW_S, keep_pieces=(k == 0))
        if k == 0:
            support.attach_trace(measure, cap, "ems burst", t_span_s=WINDOW_S)
        worst_dc = max(worst_dc, abs(cap.dc_ua))
        unbalanced += cap.n_unbalanced
        shoot += cap.n_shoot_through
        ps = full_pulses(cap)
        pulses += len(ps)
        for p in ps:
            pct = 100 * abs(p.q_src_net_nc) / max(abs(q) for q in p.q_nc)
            if pct > worst_pct:
                worst_pct = pct
                worst_note = f"window {k} at {(p.t_ns - cap.t0_ns) / 1e6:.3f} ms: amp {p.amp_ua}, q {p.q_nc} nC"
        worst_amp = max([worst_amp] + [abs(a) for p in ps for a in p.amp_ua])
        st = dut.status()
        assert st["state"] in (codes.ST_RUNNING, codes.ST_RAMPING), f"window {k}: state {st['state']}"
    measure("pulses", pulses, "", low=WINDOWS * WINDOW_S * 50 * 0.35)
    measure("dc_worst_window", worst_dc, "uA", high=1.0)
    measure("worst_pulse_imbalance", worst_pct, "%", high=1.0, check=False, note=worst_note)
    measure("unbalanced_pulses", unbalanced, "", high=0, note=worst_note)
    measure("shoot_through", shoot, "", high=0)
    measure("amp_max", worst_amp, "uA", high=levels_ua[1] + support.amp_tolerance(levels_ua[1]))


@pytest.mark.hil_slow
def test_telemetry_stream_no_loss(dut, rig, measure):
    support.start_running(dut, rig, 1, phase_us=200, gap_us=100, rate_hz=50)
    samples = list(dut.telemetry(rate_hz=20, duration_s=2.0))
    measure("telemetry_samples", len(samples), "", low=5)
    measure("telemetry_lost", dut.telemetry_stats.lost, "", high=0)
    cap = rig.capture(0.2)
    measure("still_stimulating", cap.n_active, "", low=5)
