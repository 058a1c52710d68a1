"""CLI commands against a virtual board: info, config get/set/export/diff/import (host check, device check),
run/stop, monitor (CSV + PNG)."""
import csv
import json

import pytest
from click.testing import CliRunner

from picostim import deploy
from picostim.cli import main as cli
from picostim.device import Device
from picostim.sim import VirtualBoard
from picostim.transport import SerialTransport
from simhelp import vb_ready

BOARD = "handheld-home"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def vb():
    with VirtualBoard(board=BOARD, rig_port=None, clock="model") as b:
        vb_ready(b)
        with SerialTransport(b.port) as t:
            deploy.deploy(t, BOARD)
        yield b


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_info_json(vb):
    r = run("info", "--port", vb.port, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["hello"]["board"] == BOARD and doc["hello"]["fw"] == deploy.firmware_version()
    assert doc["status"]["state"] == "idle"


def test_info_on_a_sim_port_starts_and_flashes_a_board():
    r = run("info", "--port", "sim:handheld-pro", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["hello"]["board"] == "handheld-pro" and doc["hello"]["cap_ua"] == 800


def test_config_set_get_export_diff_import(vb, tmp_path):
    r = run("config", "set", "session_s=600", "default_level=2", "--port", vb.port)
    assert r.exit_code == 0, r.output
    r = run("config", "get", "--json", "--port", vb.port)
    cfg = json.loads(r.output)
    assert cfg["session_s"] == 600 and cfg["default_level"] == 2
    exp = tmp_path / "dev.json"
    r = run("config", "export", str(exp), "--port", vb.port)
    assert r.exit_code == 0, r.output
    doc = json.loads(exp.read_text())
    assert doc["config"]["session_s"] == 600 and doc["board"] == BOARD
    r = run("config", "diff", str(exp), "--port", vb.port)
    assert "identical" in r.output
    doc["config"]["session_s"] = 300
    doc["levels_ua"] = [70, 150, 240, 320, 400]
    exp.write_text(json.dumps(doc))
    r = run("config", "diff", str(exp), "--port", vb.port)
    assert "session_s" in r.output and "levels_ua" in r.output
    r = run("config", "import", str(exp), "--operator", "clinic-a", "--port", vb.port)
    assert r.exit_code == 0, r.output
    with Device(vb.port) as dev:
        assert dev.config_get()["session_s"] == 300
        assert dev.levels_get() == [70, 150, 240, 320, 400]
        assert any(e["operator"] == "clinic-a" and e["level"] == 1 for e in dev.audit())
        dev.levels_set([80, 160, 240, 320, 400], operator="test-restore")


@pytest.mark.parametrize("assignment,host_msg,device_code", [
    ("session_s=99999", "session_s must be 1..1200", "out_of_range"),
    ("default_program=\"nope\"", "not allowed", "unknown_program"),
    ("volume=3", "unknown config key", "bad_request"),
    ("session_s=\"long\"", "whole number", "bad_type"),
])
def test_bad_config_refused_by_host_and_device(vb, assignment, host_msg, device_code):
    before = run("config", "get", "--json", "--port", vb.port).output
    r = run("config", "set", assignment, "--port", vb.port)
    assert r.exit_code != 0 and host_msg in r.output and "host check" in r.output
    r = run("config", "set", assignment, "--no-host-check", "--port", vb.port)
    assert r.exit_code != 0 and device_code in r.output
    assert run("config", "get", "--json", "--port", vb.port).output == before     # nothing changed


def test_import_refuses_corrupt_and_over_cap_files(vb, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = run("config", "import", str(bad), "--port", vb.port)
    assert r.exit_code != 0 and "not a picostim config export" in r.output
    bad.write_text(json.dumps({"picostim_export": 1, "board": BOARD, "config": {},
                               "levels_ua": [80, 160, 240, 320, 900]}))
    r = run("config", "import", str(bad), "--port", vb.port)
    assert r.exit_code != 0 and "cap" in r.output
    with Device(vb.port) as dev:
        assert dev.levels_get()[4] == 400


def test_run_stop_and_monitor_csv_plot(vb, tmp_path):
    # a 50 Hz waveform: every 20 ms telemetry sample then carries a fresh measurement (the board's default
    # program, microcurrent, pulses at 0.5 Hz)
    r = run("run", "--level", "2", "--duration", "30", "--phase-us", "200", "--gap-us", "50", "--rate-hz", "50",
            "--port", vb.port)
    assert r.exit_code == 0, r.output
    assert '"phase_us"' in r.output
    out_csv, out_png = tmp_path / "t.csv", tmp_path / "t.png"
    r = run("monitor", "--port", vb.port, "--duration", "1.5", "--rate", "50", "--quiet",
            "--csv", str(out_csv), "--plot", str(out_png))
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) >= 5
    seqs = [int(x["seq"]) for x in rows]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))          # no sample lost on the virtual board
    span_s = (float(rows[-1]["t_ms"]) - float(rows[0]["t_ms"])) / 1000     # device time (may run slower than wall)
    assert abs(len(rows) - 1 - 50 * span_s) <= 2                        # the requested 50 Hz, by device time
    assert "lost" in r.output
    assert out_png.read_bytes()[:4] == b"\x89PNG"
    assert max(float(x["i_ua"]) for x in rows) > 50          # measured current while stimulating at level 2
    r = run("stop", "--port", vb.port)
    assert r.exit_code == 0 and "idle" in r.output


# -- the host check and the device agree (hypothesis, against the real firmware) -------------------------------
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st  # noqa: E402

from picostim import boards, settings  # noqa: E402
from picostim.device import DeviceError  # noqa: E402

_values = st.one_of(st.integers(-5, 2000), st.none(), st.booleans(), st.text(max_size=6),
                    st.sampled_from(["ems", "lift", "microcurrent"]), st.floats(0, 100))


@hsettings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(partial=st.dictionaries(st.sampled_from(["session_s", "default_level", "default_program", "extra"]),
                               _values, min_size=1, max_size=3))
def test_host_config_check_agrees_with_device(vb, partial):
    profile = boards.load(BOARD)
    with Device(vb.port) as dev:
        before = dev.config_get()
        try:
            settings.check_config(profile, {**before, **partial})
            host_ok = True
        except settings.SettingsError:
            host_ok = False
        try:
            applied = dev.config_set(partial)
            dev_ok = True
        except DeviceError as e:
            dev_ok = False
            assert e.code in ("bad_type", "out_of_range", "bad_request", "unknown_program"), e
        assert host_ok == dev_ok, (partial, before)
        if dev_ok:
            assert applied == {**before, **partial}
            dev.config_set(before)
        else:
            assert dev.config_get() == before                 # refused: nothing changed


@hsettings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(levels=st.one_of(
    st.lists(st.one_of(st.integers(-10, 1200), st.floats(1, 500), st.none()), min_size=4, max_size=6),
    st.lists(st.integers(1, 450), min_size=5, max_size=5, unique=True).map(sorted)))   # often valid, sometimes over cap
def test_host_levels_check_agrees_with_device(vb, levels):
    profile = boards.load(BOARD)
    with Device(vb.port) as dev:
        before = dev.levels_get()
        try:
            settings.check_levels(profile, levels)
            host_ok = True
        except settings.SettingsError as e:
            host_ok, host_code = False, e.code
        try:
            dev.levels_set(levels, operator="hyp")
            dev_ok = True
        except DeviceError as e:
            dev_ok, dev_code = False, e.code
        assert host_ok == dev_ok, levels
        if not dev_ok:
            assert dev.levels_get() == before
            if host_code == "over_cap":
                assert dev_code == "over_cap"
        else:
            dev.levels_set(before, operator="hyp")


def test_ensure_app_restarts_an_interrupted_application(vb):
    from picostim.rawrepl import RawRepl
    with SerialTransport(vb.port) as t:
        RawRepl(t).enter()                                    # Ctrl-C: the app stops, the board sits at the REPL
        dev = Device(t, owns_transport=False)
        info = dev.ensure_app()
        assert info["board"] == BOARD and dev.status()["state"] == "idle"


def test_selftest_against_a_known_resistor(vb):
    # the board's load is the 2 kOhm default: the right expectation passes, a wrong one fails with exit status 1
    r = run("selftest", "--port", vb.port, "--expect-ohm", "2000")
    assert r.exit_code == 0, r.output
    assert "output_path" in r.output
    r = run("selftest", "--port", vb.port, "--expect-ohm", "10000")
    assert r.exit_code == 1, r.output
    assert "output_path" in r.output
