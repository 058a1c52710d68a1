"""Virtual rig: capture analysis (pulses, widths to 8 ns, amplitudes, charge, DC), faults, buttons, LEDs."""
import json
import math
import os
import sys
import time

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))
from _analog_timeline_chip import TimelineBoard, TimelineChip  # noqa: E402

from picostim import boards  # noqa: E402
from picostim.sim.rig import Capture, RigError, VirtualRig, analyse  # noqa: E402

HOME = boards.load("handheld-home")
DEVKIT = boards.load("pico-devkit")
PRO = boards.load("handheld-pro")
MS = 1_000_000
US = 1_000


def make_rig(profile=HOME, load="2k", duty=0.4, seed=0):
    chip = TimelineChip(profile)
    pins = profile["pins"]
    chip.set_level(pins["HV_EN"], 0, 1)
    chip.set_duty(pins["ISET"], 0, duty)
    board = TimelineBoard(chip, profile)
    return chip, board, VirtualRig(board, load=load, seed=seed), pins


def test_biphasic_train_into_2k():
    chip, board, rig, pins = make_rig()
    chip.biphasic(pins, 10 * MS, 700, 2 * MS, 200 * US, 100 * US)
    rig.wait(0.1)
    cap = rig.capture(1.0)
    assert cap.t0_ns == 100 * MS and cap.t1_ns == 1100 * MS
    assert cap.n_pulses == 500 and cap.n_active == 500
    assert cap.rate_hz == pytest.approx(500.0, rel=1e-9)
    assert [p.t_ns for p in cap.pulses[:3]] == [100 * MS, 102 * MS, 104 * MS]
    for p in cap.pulses:
        assert p.polarity == "+-" and p.widths_ns == [200_000, 200_000] and p.gap_ns == 100_000
        assert p.amp_ua == pytest.approx([400.0, -400.0], abs=1e-6)
        assert p.q_nc == pytest.approx([80.0, -80.0], abs=1e-6)
        assert abs(p.q_net_nc) < 1e-9 and p.balanced and not p.partial
    assert abs(cap.dc_ua) < 1e-9 and abs(cap.dc_periods_ua) < 1e-9
    assert cap.n_unbalanced == 0 and cap.n_shoot_through == 0
    assert cap.max_abs_ua == pytest.approx(400.0) and cap.max_abs_v == pytest.approx(0.8)
    assert cap.hv_on_ns == 1000 * MS


def test_edges_resolved_to_the_8ns_tick():
    chip, board, rig, pins = make_rig(load="500")
    chip.biphasic(pins, 1 * MS, 5, 2 * MS, 200_008, 96_008, width2_ns=200_016)
    cap = rig.capture(0.012)
    assert [p.widths_ns for p in cap.pulses] == [[200_008, 200_016]] * 5
    assert {p.gap_ns for p in cap.pulses} == {96_008}
    assert cap.pulses[0].q_src_net_nc == pytest.approx(-400e-6 * 8e-9 * 1e9, rel=1e-6)   # 8 ns of 400 uA
    assert cap.n_unbalanced == 0


def test_unbalanced_and_monophasic_pulses_show_up_as_dc():
    chip, board, rig, pins = make_rig(load="500")
    chip.biphasic(pins, 1 * MS, 600, 2 * MS, 200 * US, 100 * US, width2_ns=150 * US)
    cap = rig.capture(1.0)
    assert cap.n_unbalanced == 500
    assert cap.pulses[0].q_src_net_nc == pytest.approx(20.0)
    assert cap.dc_ua == pytest.approx(20e-9 * 500 * 1e6, rel=1e-3)          # 20 nC x 500/s = 10 uA
    assert cap.dc_periods_ua == pytest.approx(10.0, rel=1e-9)

    chip, board, rig, pins = make_rig(load="500")
    for k in range(100):                                                     # + phases only, 100 Hz
        chip.set_level(pins["BRIDGE_A"], 1 * MS + k * 10 * MS, 1)
        chip.set_level(pins["BRIDGE_A"], 1 * MS + k * 10 * MS + 200 * US, 0)
    cap = rig.capture(0.5)
    assert cap.n_pulses == 50 and {p.polarity for p in cap.pulses} == {"+"}
    assert cap.n_unbalanced == 50
    assert cap.dc_ua == pytest.approx(80e-9 * 100 * 1e6, rel=1e-3)          # 8 uA


def test_negative_first_pairs_and_partial_pulses():
    chip, board, rig, pins = make_rig(load="2k")
    chip.biphasic(pins, 1 * MS, 10, 2 * MS, 200 * US, 50 * US, order="-+")
    rig.wait(0.0011)                                  # the window starts inside the first pulse
    cap = rig.capture(0.0082)                         # and ends inside the fifth (9.3 ms)
    assert [p.polarity for p in cap.pulses] == ["-+"] * 5
    assert [p.partial for p in cap.pulses] == [True, False, False, False, True]
    first = cap.pulses[0]                               # in progress at the window start: true start and widths,
    assert first.t_ns == 1 * MS and first.widths_ns == [200 * US, 200 * US]    # charge only from inside
    assert first.q_nc == pytest.approx([-40.0, 80.0]) and first.amp_ua == pytest.approx([-400.0, 400.0])
    assert cap.n_unbalanced == 0
    # the window cuts a pulse: the plain window average sees its first phase, whole periods do not
    # cut at the start: 100 us of the - phase and the whole + phase; at the end: - phase and 50 us of + phase
    assert cap.q_total_nc == pytest.approx(-40 + 80 - 80 + 20)
    assert cap.dc_ua == pytest.approx(-20e-9 / 0.0082 * 1e6, rel=1e-6)
    assert abs(cap.dc_periods_ua) < 1e-9 and cap.summary()["max_abs_q_net_nc"] < 1e-9


def _skin_net_charge(i, r_s, r_p, c, w, g):
    """Independent hand derivation: stored charge returning through R_s in the gap and after the pair."""
    tau_c, tau_d = r_p * c, c * r_s * r_p / (r_s + r_p)
    v_p = i * r_p * (1 - math.exp(-w / tau_c))
    v2 = v_p * math.exp(-g / tau_d)
    q_gap = -(v_p / r_s) * tau_d * (1 - math.exp(-g / tau_d))
    v3 = v2 * math.exp(-w / tau_c) - v_p
    q_tail = -(v3 / r_s) * tau_d
    return (q_gap + q_tail) * 1e9


def test_skin_load_net_charge_includes_the_passive_discharge():
    chip, board, rig, pins = make_rig(load="skin:rs=1k,rp=10k,cp=100n")
    chip.biphasic(pins, 1 * MS, 200, 5 * MS, 200 * US, 100 * US)
    rig.wait(0.0009)
    cap = rig.capture(0.5)
    expect = _skin_net_charge(400e-6, 1e3, 10e3, 100e-9, 200e-6, 100e-6)
    assert cap.n_pulses == 100 and cap.n_unbalanced == 0
    for p in cap.pulses:
        assert p.q_nc == pytest.approx([80.0, -80.0], rel=1e-9)              # the source is balanced
        assert p.q_net_nc == pytest.approx(expect, rel=1e-6)                # the electrodes see the discharge
        assert abs(p.q_net_nc) < 0.06 * 80.0                                # ~5 % of a phase for these values
    assert cap.dc_ua == pytest.approx(expect * 1e-9 * 200 * 1e6, rel=1e-4)
    # the default interface (R_p 100 k, C_p 470 n: tau_c 47 ms) returns all but ~0.3 %
    chip, board, rig, pins = make_rig(load="skin")
    chip.biphasic(pins, 1 * MS, 20, 10 * MS, 200 * US, 100 * US)
    rig.wait(0.0009)
    cap = rig.capture(0.1)
    expect = _skin_net_charge(400e-6, 1e3, 100e3, 470e-9, 200e-6, 100e-6)
    assert 0 < expect < 0.004 * 80
    assert [p.q_net_nc for p in cap.pulses[:-1]] == pytest.approx([expect] * 9, rel=1e-4)
    # a large-R_p (nearly pure capacitive) interface returns almost everything: net -> 0
    chip, board, rig, pins = make_rig(load="skin:rp=10M,cp=100n")
    chip.biphasic(pins, 1 * MS, 20, 5 * MS, 200 * US, 100 * US)
    rig.wait(0.0009)
    assert abs(rig.capture(0.05).pulses[3].q_net_nc) < 0.01


def test_compliance_and_open_load_in_a_capture():
    chip, board, rig, pins = make_rig(profile=DEVKIT, load="10k")
    chip.biphasic(pins, 1 * MS, 100, 2 * MS, 200 * US, 100 * US)
    cap = rig.capture(0.1)
    assert {round(a, 6) for p in cap.pulses for a in p.amp_ua} == {350.0, -350.0}
    rig.set_load("open")
    cap = rig.capture(0.05)
    assert cap.n_pulses == 25 and cap.n_active == 0 and cap.max_abs_ua < 1e-3
    assert cap.max_abs_v == pytest.approx(3.5)


def test_faults_through_the_rig():
    chip, board, rig, pins = make_rig(load="500")
    chip.biphasic(pins, 1 * MS, 1000, 2 * MS, 200 * US, 100 * US)
    rig.wait(0.01)
    rig.inject("contact_loss")
    assert rig.capture(0.02).n_active == 0
    rig.inject("contact_return")
    assert rig.capture(0.02).n_active == 10
    state = rig.inject("overcurrent", factor=1.3)
    assert state["gain_error"] == 1.3
    assert rig.capture(0.02).pulses[0].amp_ua[0] == pytest.approx(520.0)
    rig.inject("clear")
    rig.inject("short")
    t = board.now_ns()
    cap = rig.capture(0.01)
    assert cap.max_abs_ua == pytest.approx(12.0 / 600 * 1e6)                # V_COMP/(R_load + 100 Ohm)
    fault_edges = [(lvl, tt) for g, lvl, tt in chip.driven if g == pins["FAULT_N"] and tt >= t]
    assert [lvl for lvl, _ in fault_edges] == [0, 1] * 10                    # each of the 10 phases trips it
    assert fault_edges[0][1] == cap.pulses[0].t_ns                          # trips at the phase edge
    rig.inject("clear")
    assert rig.faults()["short"] is False and rig.capture(0.01).max_abs_ua == pytest.approx(400.0)
    rig.inject("adc_stuck", channel="I_SENSE", raw=4095)
    assert rig.faults()["adc_stuck"] == {"0": 4095}        # JSON-safe keys: the same over the protocol
    rig.inject("fault_n", ms=2)
    assert rig.faults()["fault_n"] == 0
    rig.wait(0.003)
    assert rig.faults()["fault_n"] == 1
    rig.inject("charging", on=True)
    assert chip.input_level[pins["CHARGING"]] == 1
    rig.inject("hang")
    rig.inject("power_loss", during_write=True, seed=5)
    rig.inject("power_restore")
    assert board.calls == [("hang",), ("power_cut", True, 5), ("power_restore",)]
    rig.inject("clear")
    assert rig.faults()["adc_stuck"] == {} and rig.faults()["charging"] is True   # charging is not a fault


@pytest.mark.parametrize("call", [
    lambda r: r.inject("nonsense"), lambda r: r.inject("overcurrent", factor="x"),
    lambda r: r.inject("short", bogus=1), lambda r: r.inject("adc_stuck", channel=9, raw=1),
    lambda r: r.inject("adc_stuck", channel="NOPE", raw=1), lambda r: r.inject("adc_stuck", channel=0, raw=5000),
    lambda r: r.inject("fault_n", ms=-1), lambda r: r.inject("charging", on="yes"),
    lambda r: r.inject("power_loss", seed="s"), lambda r: r.set_load("zzz"), lambda r: r.set_load(-3),
    lambda r: r.capture(-1), lambda r: r.capture("1"), lambda r: r.capture(1e9), lambda r: r.capture(float("nan")),
    lambda r: r.press("left"), lambda r: r.press("up", ms=0), lambda r: r.wait(-2), lambda r: r.iset_log("x"),
])
def test_bad_requests_are_refused_and_change_nothing(call):
    chip, board, rig, pins = make_rig(load="2k")
    before = (rig.load(), rig.faults(), list(chip.driven), list(board.calls))
    with pytest.raises(RigError):
        call(rig)
    assert (rig.load(), rig.faults(), list(chip.driven), list(board.calls)) == before


def test_capture_windows_past_future_and_not_retained():
    chip, board, rig, pins = make_rig(load="2k")
    chip.biphasic(pins, 1 * MS, 100, 2 * MS, 200 * US, 100 * US)
    rig.wait(0.1)
    past = rig.capture(0.02, start_s=0.05)
    assert past.t0_ns == 50 * MS and past.n_pulses == 10 and board.now_ns() == 100 * MS
    future = rig.capture(0.01, start_s=0.15)
    assert future.t0_ns == 150 * MS and future.n_pulses == 5
    rig.frontend.retention_ns = 1 * MS
    rig.frontend._prune()
    with pytest.raises(RigError, match="retained"):
        rig.capture(0.01, start_s=0.001)


def test_capture_survives_json_and_trace_matches_the_waveform():
    chip, board, rig, pins = make_rig(load="skin:rs=1k,rp=10k,cp=100n")
    chip.biphasic(pins, 1 * MS, 100, 2 * MS, 200 * US, 100 * US)
    cap = rig.capture(0.05)
    back = Capture.from_dict(json.loads(json.dumps(cap.to_dict())))
    assert back.summary() == cap.summary() and back.pulses == cap.pulses
    tr = back.trace(5001)
    for t, i in list(zip(tr.t_ns, tr.i_ua))[::50]:
        assert i == pytest.approx(rig.frontend.current_ua(int(t)), rel=1e-9, abs=1e-9)
    env = back.envelope
    # extremes are the discharge spikes through R_s: -v1/R_s after the + phase, -v3/R_s after the - phase
    v1 = 400e-6 * 10e3 * (1 - math.exp(-0.2))
    v3 = v1 * math.exp(-100 / (100e-9 * 1e3 * 10e3 / 11e3) * 1e-6) * math.exp(-0.2) - v1
    assert min(env["min_ua"]) == pytest.approx(-v1 / 1e3 * 1e6, rel=1e-6)
    assert max(env["max_ua"]) == pytest.approx(-v3 / 1e3 * 1e6, rel=1e-6)
    assert cap.max_abs_ua == pytest.approx(v1 / 1e3 * 1e6, rel=1e-9)
    assert sum(env["mean_ua"]) / len(env["mean_ua"]) == pytest.approx(cap.dc_ua, rel=1e-6)
    zoom = back.trace(101, cap.pulses[0].t_ns, cap.pulses[0].t_ns + 500 * US)
    assert zoom.i_ua[10] == pytest.approx(rig.frontend.current_ua(int(zoom.t_ns[10])))
    with pytest.raises(RigError):
        back.trace(10, cap.t1_ns - 5, cap.t1_ns + 5)
    bare = dict(cap.to_dict(), pieces=None)                                 # what a real rig would send
    assert Capture.from_dict(bare).trace(100).v_v is None
    minimal = Capture.from_dict({"t0_ns": 0, "t1_ns": 10, "pulses": [{"t_ns": 1, "polarity": "+-",
                                                                      "widths_ns": [2, 2], "extra": 1}]})
    assert minimal.pulses[0].balanced and minimal.n_pulses == 1
    for bad in ([], {"t0_ns": 0}, {"t0_ns": 0, "t1_ns": 1, "pulses": [7]}):
        with pytest.raises(RigError):
            Capture.from_dict(bad)


def test_press_leds_iset_log_and_clock():
    chip, board, rig, pins = make_rig(profile=PRO, load="2k")
    chip.set_duty(pins["LED_STATUS"], 0, 0.25)
    chip.set_level(pins["VIBRATION"], 0, 1)
    chip.set_duty(pins["ISET"], 30 * MS, 0.5)
    rig.wait(0.01)
    out = rig.press("power", 50)
    assert out["t_ns"] == 10 * MS
    rig.wait(0.1)
    assert [(lvl, t) for g, lvl, t in chip.driven if g == pins["BTN_POWER"]] == [(0, 10 * MS), (None, 60 * MS)]
    assert rig.leds() == {"status": 0.25, "red": 0.0, "vibration": 1.0}
    assert [e["duty"] for e in rig.iset_log(since_ns=20 * MS)] == [0.5]
    assert rig.now_s() == pytest.approx(0.11)
    assert make_rig(profile=HOME)[2].leds()["red"] is None


def test_analysis_of_one_second_at_500_pulses_is_fast():
    chip, board, rig, pins = make_rig(load="skin")
    chip.biphasic(pins, 1 * MS, 520, 2 * MS, 200 * US, 100 * US)
    rig.wait(1.02)
    pieces = rig.frontend.pieces(10 * MS, 1010 * MS)
    t = time.thread_time()                  # CPU time of this thread: other processes on the box do not count
    cap = analyse(pieces, 10 * MS, 1010 * MS)
    elapsed = time.thread_time() - t
    assert cap.n_pulses == 500
    assert elapsed < 0.25


# ---- with the real Chip model: register timeline -> front end -> electrodes ------------------------------------------

class ChipBoard:
    """The BoardProcess subset the rig uses, around the real Chip (no firmware process)."""

    def __init__(self, profile, load="2k", seed=0):
        from picostim.sim.chip import Chip
        from picostim.sim.chip.frontend import FrontEnd
        self.profile = profile
        self.chip = Chip(profile, seed=seed)
        FrontEnd(profile, self.chip, load, seed=seed)

    def now_ns(self):
        return self.chip.now_ns

    def wait_until(self, t_ns):
        while self.chip.now_ns < t_ns:                     # RPC-sized steps, as a running firmware advances it
            self.chip.advance_to(min(t_ns, self.chip.now_ns + 20 * US))


def _pulse_setup(chip, pins, iset_u16):
    chip.rpc_pin_init(pins["HV_EN"], 1, None, 1, None)                         # Pin.OUT, value 1
    chip.rpc_pwm_new(pins["ISET"], {"freq": 100_000, "duty_u16": iset_u16})
    chip.rpc_pwm_new(pins["BRIDGE_A"], {"freq": 2000, "duty_u16": 0})
    chip.rpc_pwm_new(pins["BRIDGE_B"], {"freq": 2000, "duty_u16": 65535, "invert": True})


def test_real_chip_pwm_pair_measured_at_the_electrodes():
    board = ChipBoard(HOME, "2k")
    chip, pins = board.chip, HOME["pins"]
    rig = VirtualRig(board)
    _pulse_setup(chip, pins, 26214)                            # 0.4 x 1000 uA, CC 500 of TOP 1249
    board.wait_until(5 * MS)
    assert rig.capture(0.002).n_pulses == 0                    # idle word: both bridge inputs low
    chip.rpc_mem_w(0x4005000C, 32, 0x927C61A8)                 # +200 us, gap 100 us, -200 us in a 500 us period
    cap = rig.capture(0.01)
    assert cap.n_pulses == 19 and cap.n_unbalanced == 0 and cap.n_shoot_through == 0
    assert cap.rate_hz == pytest.approx(2000.0)
    for p in cap.pulses:
        assert p.widths_ns == [200_000, 200_000] and p.gap_ns == 100_000 and p.polarity == "+-"
        assert p.amp_ua == pytest.approx([400.0, -400.0], rel=1e-4)
    # the ADC reads the sense amplifier at the instant of the read: inside a + phase, then in the gap
    ch = chip.rpc_adc_new(["pin", pins["I_SENSE"]])
    t_phase = cap.pulses[-1].t_ns + 2 * 500 * US + 100 * US
    board.wait_until(t_phase)
    u16 = chip.rpc_adc_r(ch)
    raw = u16 >> 4
    assert u16 == (raw << 4) | (raw >> 8) and abs(raw - 496) <= 4
    board.wait_until(t_phase + 150 * US)
    assert chip.rpc_adc_r(ch) >> 4 <= 4


def test_real_chip_fault_n_irq_from_a_short():
    from picostim.sim.chip.gpio import FALL
    board = ChipBoard(HOME, "500")
    chip, pins = board.chip, HOME["pins"]
    rig = VirtualRig(board)
    chip.rpc_pin_init(pins["FAULT_N"], 0, 1, None, None)       # input, pull-up
    chip.rpc_pin_irq(pins["FAULT_N"], FALL, True)
    _pulse_setup(chip, pins, 26214)
    chip.rpc_mem_w(0x4005000C, 32, 0x927C61A8)
    board.wait_until(3 * MS)
    chip.pop_events()
    assert chip.rpc_pin_v(pins["FAULT_N"]) == 1
    rig.inject("short")
    cap = rig.capture(0.001)
    first = next(p.t_ns for p in cap.pulses if p.t_ns > cap.t0_ns)
    assert cap.max_abs_ua == pytest.approx(12.0 / 600 * 1e6)
    assert ["irq", pins["FAULT_N"], FALL] in chip.pop_events()
    assert chip.pin_level(pins["FAULT_N"], first) == 0 and chip.pin_level(pins["FAULT_N"], first - 1) == 1


def test_real_chip_button_press_is_seen_by_the_firmware_side():
    from picostim.sim.chip.gpio import FALL, RISE
    board = ChipBoard(HOME, "2k")
    chip, pins = board.chip, HOME["pins"]
    rig = VirtualRig(board)
    btn = pins["BTN_UP"]
    chip.rpc_pin_init(btn, 0, 1, None, None)                   # input with pull-up, as the firmware sets it
    chip.rpc_pin_irq(btn, FALL | RISE, True)
    board.wait_until(1 * MS)
    rig.press("up", 30)
    assert chip.next_event_ns() == 31 * MS                     # the release is on the Chip's schedule
    board.wait_until(10 * MS)
    assert chip.rpc_pin_v(btn) == 0 and chip.pop_events() == [["irq", btn, FALL]]
    board.wait_until(40 * MS)
    assert chip.rpc_pin_v(btn) == 1 and chip.pop_events() == [["irq", btn, RISE]]
    assert chip.pin_level(btn, 31 * MS - 1) == 0 and chip.pin_level(btn, 31 * MS) == 1


def test_rig_side_chip_changes_happen_under_the_boards_chip_lock():
    chip = TimelineChip(HOME)
    board = TimelineBoard(chip, HOME)

    class Lock:
        held = 0

        def __enter__(self):
            self.held += 1

        def __exit__(self, *exc):
            self.held -= 1
    board.chip_lock = lock = Lock()
    rig = VirtualRig(board)
    seen = []
    real = chip.drive_input
    chip.drive_input = lambda *a: (seen.append(lock.held), real(*a))
    rig.press("up", 10)
    rig.inject("charging", on=True)
    rig.inject("fault_n", ms=1)
    rig.set_load("500")
    assert len(seen) == 5 and all(seen)           # press: 2, charging: 1, fault_n: 2 (assert + release)
    rig.inject("hang")                                  # board-level faults use the board's own locking
    assert board.calls == [("hang",)] and lock.held == 0


@given(st.integers(2500, 125_000).map(lambda k: k * 8), st.integers(0, 62_500).map(lambda k: k * 8),
       st.sampled_from([2 * MS, 5 * MS, 10 * MS]), st.sampled_from(["500", "2k", "10k", "skin"]),
       st.integers(0, 3 * MS), st.floats(0.01, 0.04), st.sampled_from(["+-", "-+"]))
@settings(max_examples=40, deadline=None)
@example(width=20_000, gap=0, period=2 * MS, load="500", start=1_020_000, duration=0.02, order="+-")
def test_random_trains_are_measured_exactly(width, gap, period, load, start, duration, order):
    assume(2 * width + gap < period)
    chip, board, rig, pins = make_rig(load=load)
    chip.biphasic(pins, 1 * MS, 12, period, width, gap, order=order)
    rig.wait(start * 1e-9)
    cap = rig.capture(duration)
    t0, t1 = cap.t0_ns, cap.t1_ns
    starts = [1 * MS + k * period for k in range(12)]
    inside = [t for t in starts if t0 <= t < t1 or t < t0 < t + 2 * width + gap]
    assert [p.t_ns for p in cap.pulses] == inside
    for p in cap.pulses:
        if not p.partial:
            assert p.polarity == order and p.widths_ns == [width, width] and p.gap_ns == gap
            assert abs(p.q_src_net_nc) < 1e-9 and p.balanced
    # charge bookkeeping: what the pulses carry plus what flowed before the first one is everything
    if cap.pulses:
        t_first = max(t0, cap.pulses[0].t_ns)
        before = sum(pc.charge(t0, t_first) for pc in rig.frontend.pieces(t0, t_first))
        total = before * 1e9 + sum(p.q_net_nc for p in cap.pulses)
        assert total == pytest.approx(cap.q_total_nc, abs=1e-6)


@pytest.mark.parametrize("start_us", [0, 500, 1000, 1500, 2999])
def test_window_inside_a_continuous_chain_pairs_phases_as_the_chain_began(start_us):
    """1000 us phases, no gap, 500 Hz: + - + - ... without a pause; a window starting anywhere in it still sees
    "+-" pulses (pairing follows the chain from its start, as a real rig's trigger would)."""
    chip, board, rig, pins = make_rig(load="500")
    chip.biphasic(pins, 1 * MS, 400, 2 * MS, 1000 * US, 0)
    rig.wait(0.5 + start_us * 1e-6)
    cap = rig.capture(0.02)
    full = [p for p in cap.pulses if not p.partial]
    assert {p.polarity for p in full} == {"+-"} and len(full) >= 9
    assert all(p.t_ns % (2 * MS) == 1 * MS for p in cap.pulses)
    assert abs(cap.dc_periods_ua) < 1e-9


def test_real_chip_injected_fault_n_pulse():
    from picostim.sim.chip.gpio import FALL, RISE
    board = ChipBoard(HOME, "2k")
    chip, pins = board.chip, HOME["pins"]
    rig = VirtualRig(board)
    chip.rpc_pin_init(pins["FAULT_N"], 0, 1, None, None)
    chip.rpc_pin_irq(pins["FAULT_N"], FALL | RISE, True)
    board.wait_until(2 * MS)
    chip.pop_events()
    rig.inject("fault_n", ms=3)
    assert chip.next_event_ns() == 5 * MS                 # a sleeping board wakes for the release
    assert chip.rpc_pin_v(pins["FAULT_N"]) == 0
    board.wait_until(10 * MS)
    assert chip.pop_events() == [["irq", pins["FAULT_N"], FALL], ["irq", pins["FAULT_N"], RISE]]
    assert chip.pin_level(pins["FAULT_N"], 5 * MS - 1) == 0 and chip.pin_level(pins["FAULT_N"], 5 * MS) == 1
