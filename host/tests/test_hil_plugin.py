"""The HIL pytest plugin, measurements, test record, HTML report and `picostim hil` command (no board needed:
the tests here use only the `measure` fixture and the retry marker in a scratch test file)."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from picostim.hil import measure as M
from picostim.hil import record as R
from picostim.hil import report as H

SCRATCH = textwrap.dedent('''
    import pytest

    def test_in_limits(measure):
        measure("amp", 401.5, "uA", low=380, high=420)
        measure.waveform("i", [0, 100, 200, 300], {"I": [0, 400, 0, -400]})

    def test_out_of_limits(measure):
        measure("amp", 450.0, "uA", low=380, high=420)

    CALLS = {"n": 0}

    @pytest.mark.hil_retry(2)
    def test_flaky_then_ok(measure):
        CALLS["n"] += 1
        measure("attempt_no", CALLS["n"], "", low=2)

    @pytest.mark.hil_retry(1)
    def test_always_fails(measure):
        measure("x", 0, "V", low=1)

    def test_plain():
        assert True
''')


def _run(tmp_path, *extra, report=True):
    (tmp_path / "test_scratch.py").write_text(SCRATCH)
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_scratch.py")]
    if report:
        args += ["--hil-report", str(tmp_path / "rep"), "--junitxml", str(tmp_path / "rep" / "junit.xml")]
    args += list(extra)
    return subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)


def _record(tmp_path):
    return R.load(tmp_path / "rep" / "record.json")


def test_measurement_judging_and_message():
    tm = M.TestMeasurements()
    assert tm("a", 5, "V", 1, 10).outcome == M.PASS
    with pytest.raises(M.MeasurementFailure) as e:
        tm("b", 12.5, "V", 1, 10)
    assert "b = 12.5 V" in str(e.value) and "[1, 10] V" in str(e.value)
    m = tm("c", -1, "mA", low=0, check=False)
    assert m.outcome == M.FAIL and len(tm.failed) == 2
    with pytest.raises(AssertionError):
        tm.assert_all()


@pytest.mark.parametrize("bad", [
    dict(name="", value=1, unit="V"), dict(name="x", value="3", unit="V"), dict(name="x", value=float("nan"), unit="V"),
    dict(name="x", value=1, unit=3), dict(name="x", value=1, unit="V", low=5, high=1),
    dict(name="x", value=None, unit="V"),
])
def test_measurement_bad_input_rejected(bad):
    tm = M.TestMeasurements()
    with pytest.raises((TypeError, ValueError)):
        tm(**bad)
    assert tm.measurements == []


def test_waveform_decimation_keeps_peaks():
    tm = M.TestMeasurements()
    n = 100_000
    ys = [0.0] * n
    ys[54321] = 400.0    # one narrow pulse
    w = tm.waveform("w", list(range(n)), {"I": ys})
    assert len(w.t_us) <= 4000 and max(w.series["I"]) == 400.0
    with pytest.raises(ValueError):
        tm.waveform("bad", [0, 1], {"I": [1.0]})


def test_plugin_record_report_junit(tmp_path):
    proc = _run(tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rec = _record(tmp_path)
    tests = {t["nodeid"].split("::")[1]: t for t in rec["tests"]}
    assert tests["test_in_limits"]["outcome"] == "passed"
    assert tests["test_in_limits"]["measurements"][0]["value"] == 401.5
    assert tests["test_in_limits"]["waveforms"][0]["series"]["I"] == [0.0, 400.0, 0.0, -400.0]
    bad = tests["test_out_of_limits"]
    assert bad["outcome"] == "failed" and bad["measurements"][0]["outcome"] == "FAIL"
    assert "amp = 450" in bad["message"]
    flaky = tests["test_flaky_then_ok"]
    assert flaky["outcome"] == "passed" and flaky["retries"] == 1
    assert [a["outcome"] for a in flaky["attempts"]] == ["failed", "passed"]
    always = tests["test_always_fails"]
    assert always["outcome"] == "failed" and always["retries"] == 1 and len(always["attempts"]) == 2
    assert rec["summary"]["failed"] == 2 and rec["summary"]["retried"] == 2 and rec["outcome"] == "FAIL"
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "data:image/png;base64," in html and "test_out_of_limits" in html
    assert "<script" not in html and "http" not in html.split("</style>")[1][:200]
    junit = (tmp_path / "rep" / "junit.xml").read_text()
    assert "picostim_measurement" in junit


def test_plugin_with_xdist_merges_workers(tmp_path):
    proc = _run(tmp_path, "-n", "2")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rec = _record(tmp_path)
    assert rec["summary"]["total"] == 5
    assert {t["worker"] for t in rec["tests"]} <= {"gw0", "gw1"}
    assert sum(len(t["measurements"]) for t in rec["tests"]) >= 5


def test_plain_run_writes_nothing(tmp_path):
    (tmp_path / "test_plain.py").write_text("def test_x():\n    assert 1\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_plain.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert not (tmp_path / "hil-report").exists()


def test_record_load_rejects_other_files(tmp_path):
    p = tmp_path / "x.json"
    for content in ("not json", "[]", json.dumps({"kind": "other", "schema": 1})):
        p.write_text(content)
        with pytest.raises(ValueError):
            R.load(p)


def test_report_survives_broken_waveform():
    rec = R.RecordBuilder().finish(0)
    rec["tests"] = [{"nodeid": "t::a", "outcome": "passed", "duration_s": 0.1, "retries": 0, "attempts": [],
                     "measurements": [], "waveforms": [{"name": "w", "t_us": [0, 1], "series": {"I": ["x", None]}}],
                     "message": ""}]
    html = H.render(rec)
    assert "plot w failed" in html


def test_cli_hil_help_and_bad_arguments():
    from click.testing import CliRunner
    from picostim.cli import main
    r = CliRunner().invoke(main, ["hil", "--help"])
    assert r.exit_code == 0 and "--dut" in r.output and "--rigs-file" in r.output
    r = CliRunner().invoke(main, ["hil", "--dut", "/dev/ttyACM9"])
    assert r.exit_code != 0 and "--rig" in r.output
    r = CliRunner().invoke(main, ["hil", "--dut", "sim", "--rig", "/dev/ttyACM1"])
    assert r.exit_code != 0 and "virtual rig" in r.output


def test_cli_builds_pytest_args():
    from picostim.cli.hil import build_pytest_args
    args = build_pytest_args("sim", "sim", "out", True, "s2", 2, "10k", None, ("--maxfail", "3"))
    assert args[args.index("--dut") + 1] == "sim" and args[args.index("-n") + 1] == "2"
    assert args[args.index("--junitxml") + 1] == os.path.join("out", "junit.xml")
    assert args[-2:] == ["--maxfail", "3"] and "-k" in args and "--load" in args


# -- issue 15: an interrupted run is INCOMPLETE; JUnit is named and JSON; console keeps test parameters --------
INTERRUPTED_SCRATCH = textwrap.dedent('''
    import pathlib, time

    def test_done(measure):
        measure("x", 1, "V", low=0)

    def test_cut_a(measure):
        measure("y", 1, "V", low=0)
        pathlib.Path("started_a").touch()
        time.sleep(60)

    def test_cut_b(measure):
        pathlib.Path("started_b").touch()
        time.sleep(60)

    def test_never_started(measure):
        time.sleep(60)
''')


def test_interrupted_run_is_recorded_incomplete(tmp_path):
    import signal
    import time
    import xml.etree.ElementTree as ET
    (tmp_path / "test_cut.py").write_text(INTERRUPTED_SCRATCH)
    rep = tmp_path / "rep"
    p = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_cut.py", "-n", "2",
                          "--hil-report", str(rep), "--junitxml", str(rep / "junit.xml")], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + 60
        while not ((tmp_path / "started_a").exists() and (tmp_path / "started_b").exists()):
            assert time.monotonic() < end and p.poll() is None, "tests did not start"
            time.sleep(0.1)
        # (test_done's report travels from its xdist worker to the controller after test_cut_b has started there;
        # on a loaded host it could still be in flight at the Ctrl-C and be recorded incomplete)
        time.sleep(1.0)
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    rec = _record(tmp_path)
    assert rec["outcome"] == "INCOMPLETE", out
    tests = {t["nodeid"].split("::")[1]: t for t in rec["tests"]}
    assert tests["test_done"]["outcome"] == "passed"
    for name in ("test_cut_a", "test_cut_b"):
        assert tests[name]["outcome"] == "incomplete", tests[name]
    assert rec["summary"]["passed"] == 1 and rec["summary"]["incomplete"] == 2
    html = (rep / "report.html").read_text()
    assert "INCOMPLETE" in html and "2 did not finish" in html
    root = ET.parse(rep / "junit.xml").getroot()
    cases = root.iter("testcase")
    names = {}
    for c in cases:
        assert c.get("name"), ET.tostring(c)
        names[c.get("name")] = c
    junit = (rep / "junit.xml").read_text()
    for name in ("test_cut_a", "test_cut_b"):
        assert name in names, junit
        assert names[name].find("error") is not None, ET.tostring(names[name])


def test_junit_properties_are_json(tmp_path):
    import xml.etree.ElementTree as ET
    _run(tmp_path)
    props = [p for p in ET.parse(tmp_path / "rep" / "junit.xml").getroot().iter("property")
             if p.get("name") == "picostim_measurement"]
    assert props
    for p in props:
        doc = json.loads(p.get("value"))
        assert {"name", "value", "unit", "low", "high", "outcome"} <= set(doc)


def test_summary_failure_lines_keep_test_parameters():
    import io
    from rich.console import Console
    from picostim.cli.hil import _summary_table
    rec = R.RecordBuilder()
    rec.tests["hil_tests/test_waveform.py::test_amplitude[highest-2k]"] = {
        "nodeid": "hil_tests/test_waveform.py::test_amplitude[highest-2k]", "outcome": "failed", "duration_s": 1.0,
        "retries": 0, "attempts": [], "waveforms": [], "message": "AssertionError: [bold] 5 != 6",
        "measurements": [{"name": "amp[pos]", "value": 1, "unit": "uA", "low": 2, "high": 3, "outcome": "FAIL"}]}
    buf = io.StringIO()
    _summary_table(rec.finish(1), Console(file=buf, width=200, color_system=None))
    text = buf.getvalue()
    assert "test_amplitude[highest-2k]" in text and "[bold] 5 != 6" in text and "amp[pos] = 1 uA" in text


OPENHTF_SCRATCH = textwrap.dedent('''
    def test_three_measurements(measure):
        measure("first", 5, "V", high=1)          # fails, the test goes on (OpenHTF style)
        measure("second", 0.5, "V", high=1)
        measure("width", 10_000_000, "ns", low=1_000, high=2_000)   # fails too; recorded in us

    def test_fails_then_raises(measure):
        measure("pulses", 0, "", low=1)
        [][0]
''')


def test_failed_test_records_every_measurement_in_us(tmp_path):
    (tmp_path / "test_htf.py").write_text(OPENHTF_SCRATCH)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_htf.py",
                           "--hil-report", "rep"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout
    rec = R.load(tmp_path / "rep" / "record.json")
    t = {x["nodeid"].split("::")[1]: x for x in rec["tests"]}
    ms = t["test_three_measurements"]["measurements"]
    assert [m["name"] for m in ms] == ["first", "second", "width"]
    assert [m["outcome"] for m in ms] == ["FAIL", "PASS", "FAIL"]
    assert ms[2]["unit"] == "us" and ms[2]["value"] == 10000.0 and ms[2]["low"] == 1.0
    assert t["test_three_measurements"]["outcome"] == "failed"
    msg = t["test_three_measurements"]["message"]
    assert "first" in msg and "width = 10000.000 us" in msg and "e+" not in msg
    bad = t["test_fails_then_raises"]
    assert bad["outcome"] == "failed" and "pulses = 0" in bad["message"] and "IndexError" in bad["message"]
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "10000.000" in html and "1e+07" not in html


def test_waveform_plot_has_limit_band_and_requested_value():
    import matplotlib
    matplotlib.use("Agg", force=True)
    from unittest import mock
    w = {"name": "i", "t_us": [0, 100, 200, 300], "series": {"I": [0, 400, 0, -400]}, "unit": "uA",
         "requested": 400.0, "limits": [380.0, 420.0]}
    from matplotlib.axes import Axes
    with mock.patch.object(Axes, "axhspan", wraps=None, autospec=True) as span, \
            mock.patch.object(Axes, "axhline", autospec=True) as line:
        H.plot_png(w)
    assert span.call_args.args[1:3] == (380.0, 420.0)
    assert 400.0 in [c.args[1] for c in line.call_args_list]
    tm = M.TestMeasurements()
    wf = tm.waveform("i", [0, 1], {"I": [0, 1]}, requested=400, limits=(380, 420))
    assert wf.to_dict()["requested"] == 400.0 and wf.to_dict()["limits"] == [380.0, 420.0]


def test_report_names_the_dut_of_each_test_and_the_firmware_hash():
    rec = R.RecordBuilder()
    rep = type("Rep", (), {})()
    rep.nodeid, rep.when, rep.duration, rep.failed, rep.skipped, rep.passed = "t.py::test_a", "call", 0.1, False, \
        False, True
    rep.longrepr = None
    rep.user_properties = [(M.PROP_DUT, M.prop({"uid": "0123456789abcdef", "fw": "0.1.0", "fw_hash": "ab" * 32,
                                                 "board": "handheld-home", "port": "sim"}))]
    rec.add_report(rep)
    data = rec.finish(0)
    assert data["tests"][0]["dut"] == "0123456789abcdef"
    html = H.render(data)
    assert "0123456789abcdef" in html.split("<h2>Tests</h2>")[1] and "ab" * 32 in html


def test_quiet_hil_shows_no_full_tracebacks():
    from picostim.cli.hil import build_pytest_args
    args = build_pytest_args("sim", "sim", "out", True, None, 1, None, None, ())
    assert "--tb=line" in args
