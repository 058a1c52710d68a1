"""Calibration end to end on virtual units with tolerances (issue 12), judged by the rig at the electrodes:
`picostim calibrate` brings every level within +-1 % + 2 uA and the unit's own reading within +-2 % + 2 uA; the
record survives a power cycle; and on a unit whose current source is at the worst corner of its tolerances, no
record the device accepts lets the output exceed the cap (hypothesis over records)."""
import json

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings, strategies as st

from picostim import deploy
from picostim.calibration import calibrate, measure_levels
from picostim.cli import main as cli
from picostim.device import Device, DeviceError
from picostim.sim import VirtualBoard
from picostim.sim.parts import Parts
from picostim.transport import SerialTransport
from simhelp import vb_ready

BOARD = "handheld-home"
CAP = 400
pytestmark = pytest.mark.timeout(300)


def _board(**kw):
    vb = VirtualBoard(board=BOARD, load="2k", rig_port=None, clock="model", **kw)
    vb.start()
    vb_ready(vb)
    with SerialTransport(vb.port) as t:
        deploy.deploy(t, BOARD)
    return vb


def test_calibrate_cli_json_before_after():
    r = CliRunner().invoke(cli, ["calibrate", "-p", "sim", "--json", "--operator", "erin"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output[r.output.index("{"):])
    assert d["passed"] and d["record"]["operator"] == "erin"
    assert len(d["before"]) == len(d["after"]) == 5
    assert all(p["ok"] and p["device_ok"] for p in d["after"])
    top = d["after"][-1]
    assert top["bounded"] and top["rig_ua"] <= CAP                     # the top level is held at the cap bound
    assert d["after_summary"]["worst_error_pct"] <= 1.0


def test_record_survives_power_cycle_and_refusal_changes_nothing():
    vb = _board(unit_seed=4)
    try:
        with Device(vb.port) as dev:
            dev.ensure_app()
            res = calibrate(dev, vb.rig, operator="t")
            assert res.passed, res.reason
            with pytest.raises(DeviceError) as e:
                dev.request("calib_set", out_gain=70000, out_off=0, sense_gain=100000, sense_off=0)
            assert e.value.code == "out_of_range"
            vb.reset()
            dev.t.reconnect(30)
            dev.hello(timeout=30)
            assert dev.request("calib_get")["calibration"]["out_gain"] == res.record["out_gain"]
            again = measure_levels(dev, vb.rig, [80, 240])
        for p in again:                                                 # measured: still calibrated
            assert abs(p.rig_ua - p.target_ua) <= 0.01 * p.target_ua + 2, p
    finally:
        vb.close()


WORST = Parts(src_gain=1.05, src_offset_a=10e-6, sense_gain=0.97, sense_offset_v=-3e-3, ideal=False)


@pytest.fixture(scope="module")
def worst_unit():
    vb = _board(parts=WORST)
    dev = Device(vb.port)
    dev.ensure_app()
    vb.rig.set_load("500")
    yield vb, dev
    dev.close()
    vb.close()


records = st.fixed_dictionaries({"out_gain": st.integers(80000, 120000), "out_off": st.integers(-500, 500),
                                 "sense_gain": st.integers(80000, 120000), "sense_off": st.integers(-300, 300)})


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rec=records)
@example(rec={"out_gain": 85870, "out_off": 351, "sense_gain": 98983, "sense_off": -41})   # pauses and resumes
def test_worst_case_unit_never_above_cap_with_any_accepted_record(worst_unit, rec):
    vb, dev = worst_unit
    try:
        dev.request("calib_set", operator="hyp", **rec)
    except DeviceError as e:
        assert e.code == "over_cap"          # only a record claiming more output than the parts' worst case
        return
    dev.poll_events(0)                   # (events of earlier examples: not this one's)
    dev.start(level=5, phase_us=300, gap_us=50, rate_hz=100)
    try:
        dev.set_level(5, ua=CAP)
        c = vb.rig.capture(1.5, keep_pieces=False, trace_bins=10)  # the ramp to the top and a second at it
        # a record that overstates the sense reading trips early; one that understates it (or claims a large output
        # offset) can make the ramp look like lost contact: paused and resumed, maybe more than once, so "running"
        # at the end does not mean the window saw the top
        at_top = dev.status()["state"] == "running" and \
            not any(e.get("ev") in ("pause", "resume", "trip") for e in dev.poll_events(0.1))
    finally:
        dev.stop()
        dev.request("clear_fault")
    amps = [abs(a) for p in c.pulses if p.active for a in p.amp_ua]
    assert amps and max(amps) <= CAP, (rec, max(amps))
    if at_top:
        assert max(amps) >= CAP - 2, (rec, max(amps))              # the worst-case unit sits right at the cap
