"""Analog front end: source, compliance, ISET RC filter, ADC inputs, FAULT_N comparator (numbers from the profiles)."""
import math
import os
import statistics
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))
from _analog_timeline_chip import TimelineChip  # noqa: E402

from picostim import boards  # noqa: E402
from picostim.sim.chip.frontend import FrontEnd  # noqa: E402

HOME = boards.load("handheld-home")     # V_COMP 12 V
DEVKIT = boards.load("pico-devkit")     # V_COMP 5 V
MS = 1_000_000
US = 1_000


def make(profile, load, duty=0.4, hv=True, seed=0):
    chip = TimelineChip(profile)
    pins = profile["pins"]
    chip.set_level(pins["HV_EN"], 0, int(hv))
    chip.set_duty(pins["ISET"], 0, duty)
    fe = FrontEnd(profile, chip, load, seed=seed)
    return chip, fe, pins


def phase(chip, pins, t0, t1, sign=1):
    pin = pins["BRIDGE_A"] if sign > 0 else pins["BRIDGE_B"]
    chip.set_level(pin, t0, 1)
    chip.set_level(pin, t1, 0)


def quantise(v, vref=3.3):
    """The Chip's conversion (12 bit) of what adc_volts returns."""
    return max(0, min(4095, round(v / vref * 4096)))


def mean_volts(fe, ch, t, n=400):
    return statistics.fmean(fe.adc_volts(ch, t) for _ in range(n))


@pytest.mark.parametrize("load, volts", [("500", 0.2), ("2k", 0.8), ("10k", 4.0)])
@pytest.mark.parametrize("sign", [1, -1])
def test_resistive_loads_at_400ua(load, volts, sign):
    chip, fe, pins = make(HOME, load)
    phase(chip, pins, 1 * MS, 3 * MS, sign)
    chip.advance_in_steps(4 * MS)
    t = 2 * MS
    assert fe.current_ua(t) == pytest.approx(sign * 400.0, abs=1e-9)
    assert fe.piece_at(t).voltage(t) == pytest.approx(sign * volts, abs=1e-12)
    # what the firmware reads: V_ELECTRODE = |V|/5 on ADC1, I_SENSE = 1 mV/uA on ADC0 (1 LSB noise)
    assert mean_volts(fe, 1, t) == pytest.approx(volts / 5, abs=0.3e-3)
    assert mean_volts(fe, 0, t) == pytest.approx(0.400, abs=0.3e-3)
    assert fe.current_ua(0.5 * MS) == 0.0 and fe.current_ua(3.5 * MS) == 0.0
    assert mean_volts(fe, 0, 3.5 * MS) == pytest.approx(0.0, abs=0.3e-3)


def test_compliance_limits_devkit_at_10k():
    chip, fe, pins = make(DEVKIT, "10k")
    phase(chip, pins, 1 * MS, 2 * MS, 1)
    phase(chip, pins, 3 * MS, 4 * MS, -1)
    chip.advance_in_steps(5 * MS)
    assert fe.current_ua(1.5 * MS) == pytest.approx((5.0 - 1.5) / 10e3 * 1e6)      # 350 uA, not 400
    assert fe.current_ua(3.5 * MS) == pytest.approx(-350.0)
    assert fe.piece_at(1.5 * MS).voltage(1.5 * MS) == pytest.approx(3.5)
    chip2, fe2, pins2 = make(DEVKIT, "2k")                                      # 0.8 V: within compliance
    phase(chip2, pins2, 1 * MS, 2 * MS, 1)
    chip2.advance_in_steps(3 * MS)
    assert fe2.current_ua(1.5 * MS) == pytest.approx(400.0)


def test_open_load_carries_no_current_and_electrode_sits_at_compliance():
    chip, fe, pins = make(DEVKIT, "open")
    phase(chip, pins, 1 * MS, 2 * MS, 1)
    chip.advance_in_steps(3 * MS)
    assert abs(fe.current_ua(1.5 * MS)) < 1e-4
    assert mean_volts(fe, 0, 1.5 * MS) == pytest.approx(0.0, abs=0.3e-3)          # I_SENSE: nothing
    assert mean_volts(fe, 1, 1.5 * MS) == pytest.approx(3.5 / 5, abs=0.3e-3)      # V_ELECTRODE: at the rail


def test_hv_off_and_shoot_through_give_no_current():
    chip, fe, pins = make(HOME, "2k", hv=False)
    phase(chip, pins, 1 * MS, 2 * MS, 1)
    chip.set_level(pins["HV_EN"], 3 * MS, 1)
    phase(chip, pins, 4 * MS, 5 * MS, 1)
    phase(chip, pins, 4 * MS, 5 * MS, -1)            # both legs high: shoot-through
    phase(chip, pins, 6 * MS, 7 * MS, 1)
    chip.advance_in_steps(8 * MS)
    assert fe.current_ua(1.5 * MS) == 0.0
    assert fe.current_ua(4.5 * MS) == 0.0
    assert fe.shoot_through == [4 * MS]
    assert fe.current_ua(6.5 * MS) == pytest.approx(400.0)


def test_iset_rc_step_response():
    chip, fe, pins = make(HOME, "500", duty=0.0)
    chip.set_duty(pins["ISET"], 1 * MS, 0.4)
    phase(chip, pins, 0.5 * MS, 6 * MS, 1)
    chip.advance_in_steps(7 * MS)
    tau = HOME["analog"]["iset_rc_tau_us"] * US
    assert fe.current_ua(0.9 * MS) == 0.0
    for k in (0.2, 1.0, 2.0, 5.0):
        t = 1 * MS + int(k * tau)
        assert fe.current_ua(t) == pytest.approx(400 * (1 - math.exp(-k)), rel=1e-6)
        assert mean_volts(fe, 0, t) == pytest.approx(0.4 * (1 - math.exp(-k)), abs=0.3e-3)
    # the filter keeps running while the bridge is idle: a phase 2 ms after a step starts at the filtered value
    chip2, fe2, pins2 = make(HOME, "500", duty=0.0)
    chip2.set_duty(pins2["ISET"], 1 * MS, 0.4)
    phase(chip2, pins2, 3 * MS, 3.2 * MS, 1)
    chip2.advance_in_steps(4 * MS)
    assert fe2.current_ua(3 * MS) == pytest.approx(400 * (1 - math.exp(-4)), rel=1e-6)


def test_compliance_entered_at_the_right_instant_during_the_iset_rise():
    chip, fe, pins = make(DEVKIT, "10k", duty=0.0)
    chip.set_duty(pins["ISET"], 1 * MS, 0.4)
    chip.set_duty(pins["ISET"], 3 * MS, 0.2)
    phase(chip, pins, 0.5 * MS, 5 * MS, 1)
    chip.advance_in_steps(6 * MS)
    tau = 500 * US
    t_cross = 1 * MS + tau * math.log(400 / (400 - 350))     # 400(1-e^-t/tau) reaches 350 uA
    p = fe.piece_at(int(t_cross) + 2)
    assert p.mode == "limit" and abs(p.t0 - t_cross) <= 1.5
    assert fe.current_ua(t_cross - 10 * US) < 349.9
    assert fe.current_ua(t_cross + 10 * US) == pytest.approx(350.0)
    # and left again when the setpoint falls below what compliance allows (ISET 0.4 -> 0.2 at 3 ms)
    i3 = 400 * (1 - math.exp(-2 * MS / tau))
    t_exit = 3 * MS + tau * math.log((i3 - 200) / (350 - 200))
    p = fe.piece_at(int(t_exit) + 2)
    assert p.mode == "drive" and abs(p.t0 - t_exit) <= 1.5
    assert fe.current_ua(t_exit - 10 * US) == pytest.approx(350.0)
    assert fe.current_ua(t_exit + 100 * US) == pytest.approx(200 + 150 * math.exp(-100 / 500), rel=1e-6)


def _fault_log(chip, pins):
    """FAULT_N drives in time order, repeats of the same level at the same instant collapsed."""
    out = []
    for g, lvl, t in sorted((d for d in chip.driven if d[0] == pins["FAULT_N"]), key=lambda d: d[2]):
        if not out or out[-1] != (lvl, t):
            out.append((lvl, t))
    return out


def test_fault_n_edges_at_the_exact_crossing_times():
    chip, fe, pins = make(HOME, "500", duty=0.0)
    fe.set_gain_error(1.3)                           # source 30 % high: 1300 uA at full scale
    chip.set_duty(pins["ISET"], 1 * MS, 1.0)
    chip.set_duty(pins["ISET"], 3 * MS, 0.0)
    phase(chip, pins, 0.5 * MS, 6 * MS, 1)
    chip.advance_in_steps(7 * MS)
    tau = 500 * US
    t_up = 1 * MS + tau * math.log(1300 / 200)                   # 1300(1-e^-t/tau) = 1100
    i_at_3ms = 1300 * (1 - math.exp(-2 * MS / tau))
    t_down = 3 * MS + tau * math.log(i_at_3ms / 1100)            # decays back through 1100
    log = _fault_log(chip, pins)
    assert log[0] == (1, 0)                                      # released at attach
    assert [lvl for lvl, _ in log[1:]] == [0, 1]
    assert abs(log[1][1] - t_up) <= 1.0 and abs(log[2][1] - t_down) <= 1.0


def test_fault_n_follows_short_circuit_pulses():
    chip, fe, pins = make(HOME, "500")
    fe.set_short(True)
    for k in range(3):
        phase(chip, pins, (1 + k) * MS, (1 + k) * MS + 200 * US, 1)
    chip.advance_in_steps(5 * MS)
    assert fe.current_ua(1.1 * MS) == pytest.approx(12.0 / 600 * 1e6)     # V_COMP / (R_load + 100 Ohm)
    log = _fault_log(chip, pins)[1:]
    expect = []
    for k in range(3):
        expect += [(0, (1 + k) * MS), (1, (1 + k) * MS + 200 * US)]
    assert log == expect
    assert mean_volts(fe, 0, 1.1 * MS, 20) > 3.2                          # the sense amp saturates (>= vref)


def test_forced_fault_n_and_inputs_from_the_rig():
    chip, fe, pins = make(HOME, "2k")
    chip.advance_in_steps(1 * MS)
    fe.force_fault_n(5)
    assert fe.next_event_ns() == 6 * MS
    fe.set_charging(True)
    fe.press(pins["BTN_UP"], 100)
    chip.advance_in_steps(200 * MS)
    assert _fault_log(chip, pins)[1:] == [(0, 1 * MS), (1, 6 * MS)]
    assert (pins["CHARGING"], 1, 1 * MS) in chip.driven
    assert [(lvl, t) for g, lvl, t in chip.driven if g == pins["BTN_UP"]] == [(0, 1 * MS), (None, 101 * MS)]
    assert fe.next_event_ns() is None


def test_sense_sees_only_the_source_while_electrodes_see_the_discharge():
    chip, fe, pins = make(HOME, "skin")
    phase(chip, pins, 1 * MS, 1.2 * MS, 1)
    chip.advance_in_steps(2 * MS)
    t = 1.2 * MS + 20 * US                        # bridge grounded: the R-(R||C) load discharges through R_s
    assert fe.current_ua(t) < -100
    assert mean_volts(fe, 0, t) == pytest.approx(0.0, abs=0.3e-3)
    assert mean_volts(fe, 1, t) == pytest.approx(0.0, abs=0.3e-3)


def test_battery_temperature_and_unmapped_channels():
    chip, fe, pins = make(HOME, "2k")
    assert mean_volts(fe, 2, 0) == pytest.approx(3.9 / 2, abs=0.3e-3)
    assert mean_volts(fe, 4, 0) == pytest.approx(0.706, abs=0.3e-3)
    fe.temperature_c = 47.0
    assert mean_volts(fe, 4, 0) == pytest.approx(0.706 - 20 * 0.001721, abs=0.3e-3)
    assert mean_volts(fe, 3, 0) == pytest.approx(0.0, abs=0.3e-3)


def test_adc_noise_is_seeded_gaussian_one_lsb():
    def reads(seed):
        chip, fe, pins = make(HOME, "2k", seed=seed)
        return [fe.adc_volts(2, 0) for _ in range(3000)]
    a, b, c = reads(7), reads(7), reads(8)
    assert a == b and a != c
    lsb = 3.3 / 4096
    assert statistics.pstdev(a) == pytest.approx(lsb, rel=0.06)
    assert statistics.fmean(a) == pytest.approx(1.95, abs=0.1 * lsb)
    raws = {quantise(v) for v in a}
    assert 2 <= len(raws) <= 9                     # spread over a few codes around 2420


def test_adc_stuck_returns_the_raw_value_exactly():
    chip, fe, pins = make(HOME, "2k")
    for raw in (0, 1, 512, 2047, 4095):
        fe.set_adc_stuck(0, raw)
        assert {quantise(fe.adc_volts(0, 0)) for _ in range(50)} == {raw}
    fe.set_adc_stuck(0, None)
    assert quantise(mean_volts(fe, 2, 0)) == 2420
    for bad in (-1, 4096, 1.5, "7", True):
        with pytest.raises(ValueError):
            fe.set_adc_stuck(0, bad)
    with pytest.raises(ValueError):
        fe.set_adc_stuck(5, 0)


def test_isense_code_for_400ua():
    chip, fe, pins = make(HOME, "2k", seed=3)
    phase(chip, pins, 1 * MS, 2 * MS, 1)
    chip.advance_in_steps(3 * MS)
    codes = [quantise(fe.adc_volts(0, 1.5 * MS)) for _ in range(500)]
    assert statistics.median(codes) == 496            # 0.400 V / 3.3 V * 4096 = 496.5 -> 496 +- noise


@given(st.lists(st.integers(1, 300_000), min_size=1, max_size=60), st.sampled_from(["skin", "10k", "open"]))
@settings(max_examples=30, deadline=None)
def test_result_does_not_depend_on_how_time_is_advanced(steps, load):
    def run(step_list):
        chip, fe, pins = make(DEVKIT, load, duty=0.0)
        chip.set_duty(pins["ISET"], 0.2 * MS, 0.45)
        chip.biphasic(pins, 0.5 * MS, 4, 1 * MS, 200 * US, 50 * US)
        for s in step_list:
            chip.advance_to(chip.now_ns + s)
        chip.advance_to(5 * MS)
        return fe
    one, many = run([]), run(steps)
    for t in range(0, 5 * MS, 37 * US):
        assert many.current_ua(t) == pytest.approx(one.current_ua(t), rel=1e-9, abs=1e-9)


def test_adc_read_costs_microseconds():
    chip, fe, pins = make(HOME, "skin")
    chip.biphasic(pins, 1 * MS, 2000, 2 * MS, 200 * US, 100 * US)
    chip.advance_in_steps(4000 * MS, 50_000)
    t = time.thread_time()                  # CPU time of this thread: other processes on the box do not count
    for k in range(20000):
        fe.adc_volts(k % 3, 3999 * MS)
    per_read = (time.thread_time() - t) / 20000
    assert per_read < 20e-6


@given(st.lists(st.tuples(st.integers(0, 4_000_000), st.sampled_from(["a", "b", "hv", "duty"]),
                          st.floats(0, 1)), max_size=40),
       st.sampled_from(["500", "2k", "10k", "47k", "skin", "skin:rs=200,rp=50k,cp=1u", "open", "short"]),
       st.sampled_from([HOME, DEVKIT]))
@settings(max_examples=60, deadline=None)
def test_source_never_exceeds_setpoint_or_compliance(events, load, profile):
    chip, fe, pins = make(profile, load, duty=0.0, hv=False)
    names = {"a": pins["BRIDGE_A"], "b": pins["BRIDGE_B"], "hv": pins["HV_EN"]}
    for t, what, x in events:
        if what == "duty":
            chip.set_duty(pins["ISET"], t, round(x, 3))
        else:
            chip.set_level(names[what], t, int(x > 0.5))
    chip.advance_in_steps(5 * MS, 30_000)
    v_max = profile["analog"]["v_comp_v"] - profile["analog"]["compliance_headroom_v"]
    i_fs = profile["analog"]["i_fs_ua"] * 1e-6
    for p in fe.pieces(0, 5 * MS):
        for t in (p.t0, (p.t0 + p.t1) // 2, max(p.t0, p.t1 - 1)):
            x = (t - p.t0) * 1e-9
            i, v = p.current(t), p.voltage(t)
            assert math.isfinite(i) and math.isfinite(v)
            if p.src:
                iset = p.iset[0] + p.iset[1] * math.exp(-x / p.iset[2])
                assert p.pol * i >= -1e-12                            # never against the phase
                assert abs(i) <= iset + 1e-9 and iset <= i_fs + 1e-12
                assert abs(v) <= v_max + 1e-6
            else:
                assert p.source_current(t) == 0.0
            if p.pol in (0, 2) or not p.hv:
                assert abs(v) <= 1e-12 or p.mode == "float"


def test_attach_follows_a_new_chip_and_keeps_the_physics():
    chip, fe, pins = make(HOME, "skin:rs=1k,rp=10k,cp=100n")
    phase(chip, pins, 1 * MS, 1.2 * MS, 1)
    chip.advance_in_steps(1.2 * MS)
    v_before = fe.piece_at(1.2 * MS - 1).voltage(1.2 * MS - 1)
    fe.set_charging(True)
    new = TimelineChip(HOME)                   # a rebuilt Chip: every pin low, HV off
    new.now_ns = chip.now_ns
    fe.attach(new)
    assert new.analog is fe and new.input_level[pins["CHARGING"]] == 1 and new.input_level[pins["FAULT_N"]] == 1
    new.advance_in_steps(3 * MS)
    # the load's capacitor still discharges through the (now idle) bridge after the swap
    assert v_before > 0.4 and fe.current_ua(1.2 * MS + 10 * US) < -100
    assert fe.current_ua(2.9 * MS) == pytest.approx(0.0, abs=1e-3)      # 18 tau_d later


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(50 * US, 3 * MS), st.integers(20 * US, 1 * MS), st.sampled_from([1, -1]),
                          st.floats(0.05, 0.9)), min_size=1, max_size=8),
       st.sampled_from(["500", "2k", "10k", "skin"]), st.sampled_from([1 * US, 37 * US, 1 * MS]))
def test_deferred_integration_gives_the_same_waveform_as_following_every_step(pulses, load, step):
    # The front end may skip following the Chip on an advance when it has nothing to drive (quiet physics) and
    # integrate the stretch when asked: the waveform, charge and ADC readings must be those of the eager way.
    def run(eager):
        chip, fe, pins = make(HOME, load, duty=0.1)
        if eager:
            fe._may_defer = lambda: False
        t = 100 * US
        for gap, width, sign, duty in pulses:
            t += gap
            chip.set_duty(pins["ISET"], t - 20 * US, duty)
            phase(chip, pins, t, t + width, sign)
            t += width
        end = t + 1 * MS
        chip.advance_in_steps(end, step)
        reads = [fe.adc_volts(0, end) for _ in range(3)]
        return [(p.t0, p.pol, p.mode, round(p.current(p.t0), 15)) for p in fe.pieces(0, end)], reads, fe.t
    assert run(eager=True) == run(eager=False)


# ---- rig changes scheduled at a virtual instant (at) ----------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(frac=st.floats(0.0, 1.0), step=st.sampled_from([1_000, 7_000, 30_000, 400_000]),
       what=st.sampled_from([("contact", False), ("gain_error", 1.5), ("load", "10k")]))
def test_scheduled_change_lands_at_its_instant_however_time_advances(frac, step, what):
    # A pulse at 1 ms..1.2 ms; the change is scheduled anywhere in [0.9, 1.3] ms: the waveform must split exactly at
    # the instant (the current changes there), as if the rig had been called at that very instant.
    t_at = int(0.9 * MS + frac * 0.4 * MS)

    def run(scheduled):
        chip, fe, pins = make(HOME, "2k", duty=0.4)
        phase(chip, pins, 1 * MS, 1 * MS + 200 * US)
        if scheduled:
            fe.at(t_at, *what)
            assert fe.next_event_ns() == t_at
            chip.advance_in_steps(2 * MS, step)
            assert fe.next_event_ns() is None
        else:
            chip.advance_in_steps(t_at, 1_000)
            {"contact": fe.set_contact, "gain_error": fe.set_gain_error, "load": fe.set_load}[what[0]](what[1])
            chip.advance_in_steps(2 * MS, 1_000)
        return [(p.t0, p.pol, p.mode, round(p.current(p.t0), 12), round(p.current(p.t1), 12))
                for p in fe.pieces(0, 2 * MS) if p.t1 > p.t0]

    assert run(scheduled=True) == run(scheduled=False)


def test_scheduled_change_keeps_the_front_end_eager_and_bounds_time_jumps():
    chip, fe, pins = make(HOME, "2k")
    chip.advance_in_steps(1 * MS)
    assert fe._may_defer()
    fe.at(3 * MS + 123, "contact", False)
    assert not fe._may_defer() and fe.next_event_ns() == 3 * MS + 123
    with pytest.raises(ValueError):
        fe.at(0, "contact", True)                   # in the past
    with pytest.raises(ValueError):
        fe.at(4 * MS, "gain_error", 11)             # checked when scheduled, not when applied
    chip.advance_to(5 * MS)
    assert fe.next_event_ns() is None and fe._may_defer() and not fe.contact
    assert any(p.t0 == 3 * MS + 123 for p in fe.pieces(0, 5 * MS))


def test_scheduled_fault_n_asserts_and_releases_at_its_instants():
    chip, fe, pins = make(HOME, "2k")
    chip.advance_in_steps(1 * MS)
    fe.at(2 * MS + 7, "fault_n", 0.5)
    chip.advance_in_steps(4 * MS)
    assert _fault_log(chip, pins)[1:] == [(0, 2 * MS + 7), (1, 2 * MS + 500_007)]
