"""The calibration record and the cap (issue 12), CPython + hypothesis over records and units: the real amplitude
choke point (firmware/lib/amplitude.py on the MicroPython fakes' PWM) with whatever record calset.check accepts,
on units whose current source lies anywhere in the board's tolerance range; the physical output of the ISET level
actually written never exceeds the cap."""
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

FW = Path(__file__).resolve().parent.parent
REPO = FW.parent
sys.path[:0] = [str(FW / "tests" / "mpy" / "fakes"), str(FW / "lib")]
import amplitude  # noqa: E402  (the fakes' machine/rp2 stand in for the RP2040's)
import calib  # noqa: E402
import calset  # noqa: E402

# CPython's own time module was imported first: the firmware's ramps use MicroPython's ticks arithmetic
amplitude.time = type("ticks", (), {"ticks_diff": staticmethod(lambda a, b: a - b)})

BOARDS = {n: json.loads((REPO / "boards" / f"{n}.json").read_text())
          for n in ("handheld-home", "handheld-pro", "pico-devkit")}


def output_ua(amp, gain, offset_ua):
    """What a unit with this current-source gain/offset delivers for the ISET duty the firmware wrote: the compare
    level rp2's PWM latches (round(d * (TOP+1) / 65535)), times I_FS, through the unit's source."""
    cc = (amp.pwm.d * (amp.top + 1) + 32767) // 65535
    return gain * cc * amp.i_fs / (amp.top + 1) + offset_ua if cc > 0 else 0.0


def fresh(board):
    calib.apply(calib.IDENTITY)
    calib.rec = None
    return amplitude.Amplitude(board)


def install(amp, rec):
    """calib_set's path after its checks (calset.cmd_set): the record in force, the amplitude model from it."""
    v = calset.check(rec, amp.lvl_max, amp.cap_ua, amp.i_fs, amp.top)
    calib.rec = dict(rec)
    calib.apply(v)
    amp.apply_cal()
    return v


def tolerance(board):
    t = board["tolerances"]["current_source"]
    return t["gain_pct"] / 100, t["offset_ua"]


records = st.fixed_dictionaries({"out_gain": st.integers(60000, 140000), "out_off": st.integers(-800, 800),
                                 "sense_gain": st.integers(60000, 140000), "sense_off": st.integers(-500, 500)},
                                optional={"v_gain": st.integers(60000, 140000), "v_off": st.integers(-800, 800)})


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(BOARDS)), records, st.floats(-1, 1), st.floats(-1, 1),
       st.lists(st.integers(-50, 1100), min_size=1, max_size=12))
def test_no_unit_above_its_cap_with_any_accepted_record(name, rec, gu, ou, requests):
    board = BOARDS[name]
    amp = fresh(board)
    gt, ot = tolerance(board)
    gain, offset = 1 + gu * gt, ou * ot             # one unit anywhere in the tolerance range
    try:
        install(amp, rec)
        accepted = True
    except calset.CalError as e:
        accepted = False
        assert e.code in ("bad_type", "out_of_range", "over_cap")
    worst = 0.0
    for k, ua in enumerate(requests):
        try:
            if k % 3 == 2:
                amp.ramp_to_ua(ua, 300, 0)
                amp.tick(150)
                worst = max(worst, output_ua(amp, gain, offset))
                amp.tick(300)
            else:
                amp.set_ua(ua)
        except amplitude.AmplitudeError:
            assert ua > amp.cap_ua                  # only requests above the cap are refused
        worst = max(worst, output_ua(amp, gain, offset))
    amp.set_probe()
    worst = max(worst, output_ua(amp, gain, offset))
    assert worst <= amp.cap_ua + 1e-9, (name, rec, accepted, gain, offset, worst)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(BOARDS)), st.floats(-1, 1), st.floats(-1, 1), st.floats(-1, 1), st.floats(-1, 1))
def test_the_true_record_of_any_unit_in_tolerance_is_accepted_and_accurate(name, gu, ou, su, so):
    """A correct record for any unit within its tolerances is accepted, and then every level below the cap bound
    is commanded within the ISET resolution (0.8 uA at 1000 uA full scale) of the level on that unit."""
    board = BOARDS[name]
    amp = fresh(board)
    gt, ot = tolerance(board)
    gain, offset = 1 + gu * gt, ou * ot
    rec = {"out_gain": round(gain * 1e5), "out_off": round(offset * 10), "sense_gain": round((1 + 0.03 * su) * 1e5),
           "sense_off": round(30 * so)}
    install(amp, rec)
    bound = amp.set_ua(amp.cap_ua)
    assert output_ua(amp, gain, offset) <= amp.cap_ua
    for ua in board["levels_ua"]:
        amp.set_ua(ua)
        if ua <= bound:
            assert abs(output_ua(amp, gain, offset) - ua) <= 0.6 + ua * 1e-4, (ua, output_ua(amp, gain, offset))


@pytest.mark.parametrize("field, value, code", [
    ("out_gain", 79999, "out_of_range"), ("out_gain", 120001, "out_of_range"), ("sense_gain", 79999, "out_of_range"),
    ("sense_gain", 120001, "out_of_range"), ("out_off", 501, "out_of_range"), ("sense_off", -301, "out_of_range"),
    ("out_gain", 1.0, "bad_type"), ("out_off", True, "bad_type"), ("sense_gain", None, "bad_type"),
    ("out_gain", 120000, "over_cap"), ("out_off", 400, "over_cap"),
])
def test_implausible_or_cap_breaking_records_refused(field, value, code):
    amp = fresh(BOARDS["handheld-home"])
    rec = {"out_gain": 100000, "out_off": 0, "sense_gain": 100000, "sense_off": 0, field: value}
    with pytest.raises(calset.CalError) as e:
        calset.check(rec, amp.lvl_max, amp.cap_ua, amp.i_fs, amp.top)
    assert e.value.code == code


def test_cap_bound_is_the_worst_case_unit_at_the_cap():
    for name, board in BOARDS.items():
        amp = fresh(board)
        gt, ot = tolerance(board)
        amp.set_ua(amp.cap_ua)
        worst = output_ua(amp, 1 + gt, ot)
        # at the cap, and within one ISET count (0.8 uA x 1.05) of it: the bound costs nothing more than needed
        assert amp.cap_ua - 0.85 <= worst <= amp.cap_ua, (name, worst)
