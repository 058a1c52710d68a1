"""The handheld's own interface: three buttons pressed by the rig, LEDs read by the rig, and what the electrodes do."""
import pytest

import support
from picostim.shared import codes
from support import amp_tolerance, full_pulses


def _amp_now(rig, window_s=None):
    cap = rig.capture(window_s or 0.6, keep_pieces=False)
    ps = full_pulses(cap)
    return (sum(abs(p.amp_ua[0]) for p in ps[-5:]) / len(ps[-5:])) if ps else 0.0, cap


@pytest.mark.production
def test_power_button_starts_and_stops(dut, rig, measure):
    rig.press("power", ms=150)
    rig.wait(0.2)
    support.wait_state(dut, rig, (codes.ST_RUNNING, codes.ST_RAMPING), 3.0)
    # the board's default program (microcurrent) starts at 0.5 Hz: a window longer than its period
    cap = rig.capture(2.5, keep_pieces=False)
    measure("pulses_after_power_press", cap.n_active, "", low=1)
    leds = rig.leds()
    measure("status_led_on_while_stimulating", leds["status"] or 0.0, "", low=0.05)
    rig.press("power", ms=150)
    rig.wait(0.3)
    tail = rig.capture(0.5)
    measure("idle_after_second_press", tail.max_abs_ua, "uA", high=1.0)
    support.measure_hv_on(measure, "hv_after_second_press", tail, 0.0)


def test_up_button_raises_one_level_with_ramp(dut, rig, measure, prof, levels_ua):
    support.start_running(dut, rig, 1, phase_us=200, gap_us=100, rate_hz=100)
    rig.press("up", ms=120)
    rig.wait(prof["limits"]["ramp_ms_per_level_step"] / 1000 + 0.6)
    amp, cap = _amp_now(rig, 0.1)
    want = levels_ua[1]
    measure("amp_after_up", amp, "uA", low=want - amp_tolerance(want), high=want + amp_tolerance(want))


def test_down_button_lowers_one_level(dut, rig, measure, levels_ua):
    support.start_running(dut, rig, 3, phase_us=200, gap_us=100, rate_hz=100)
    rig.press("down", ms=120)
    rig.wait(0.3)
    amp, cap = _amp_now(rig, 0.1)
    want = levels_ua[1]
    measure("amp_after_down", amp, "uA", low=want - amp_tolerance(want), high=want + amp_tolerance(want))


def test_up_at_top_level_stays_at_top(dut, rig, measure, levels_ua, prof):
    support.start_running(dut, rig, len(levels_ua), phase_us=200, gap_us=100, rate_hz=100)
    rig.press("up", ms=120)
    rig.wait(0.5)
    amp, cap = _amp_now(rig, 0.1)
    measure("max_current", cap.max_abs_ua, "uA", high=prof["limits"]["cap_ua"] + amp_tolerance(prof["limits"]["cap_ua"]))
    lo, hi = support.level_window(prof, levels_ua[-1])     # (the top level may be held at the unit's cap bound)
    measure("amp_at_top", amp, "uA", low=lo, high=hi)


def test_bounce_shorter_than_debounce_ignored(dut, rig, measure):
    rig.press("power", ms=max(1, codes.DEBOUNCE_MS // 4))
    rig.wait(0.5)
    cap = rig.capture(0.3)
    measure("no_output_after_glitch", cap.max_abs_ua, "uA", high=1.0)


def test_buttons_do_nothing_while_charging(dut, rig, measure):
    support.inject(rig, "charging", on=True)
    rig.wait(0.05)
    rig.press("power", ms=150)
    rig.wait(0.3)
    cap = rig.capture(0.3)
    measure("no_output_while_charging", cap.max_abs_ua, "uA", high=1.0)


@pytest.mark.parametrize("offset_ms", [0, 13, 27, 38])
def test_firm_press_counts_at_any_phase_of_the_loop(dut, rig, measure, offset_ms):
    # The loop sleeps up to tens of ms while steady; a press twice the debounce time long must still count wherever
    # it falls in that sleep (the pin IRQ notes the edge; the debounce is timed from it).
    support.start_running(dut, rig, 1, phase_us=200, gap_us=100, rate_hz=100)
    rig.wait(0.2 + offset_ms / 1000)
    rig.press("power", ms=2 * codes.DEBOUNCE_MS)
    rig.wait(0.3)
    cap = rig.capture(0.3)
    measure("output_after_firm_press", cap.max_abs_ua, "uA", high=1.0)
