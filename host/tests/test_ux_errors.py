"""Issue 15: bad input gets one line and a non-zero exit, never a traceback, and is refused before any work is
done (no board started, no test run, the device unchanged and idle). A port with no MicroPython says so fast."""
import os
import time

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from picostim import boards, deploy
from picostim.cli import main as cli
from picostim.device import Device
from picostim.sim import VirtualBoard
from picostim.transport import SerialTransport
from simhelp import vb_ready

BOARD = "handheld-home"
pytestmark = pytest.mark.timeout(600)


def run(args, **kw):
    t0 = time.monotonic()
    r = CliRunner().invoke(cli, [str(a) for a in args], **kw)
    return r, time.monotonic() - t0


def assert_one_line_error(r, args, code=None):
    assert r.exit_code != 0, (args, r.output)
    if code is not None:
        assert r.exit_code == code, (args, r.exit_code, r.output)
    assert r.exception is None or isinstance(r.exception, SystemExit), (args, repr(r.exception))
    assert "Traceback" not in r.output, (args, r.output)
    errors = [ln for ln in r.output.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1, (args, r.output)


@pytest.mark.parametrize("args", [
    ["sim", "--board", "nosuch"],
    ["sim", "--load", "bogus"],
    ["info", "-p", "sim:hil-rig"],
    ["info", "-p", "sim:nosuch"],
    ["info", "-p", "/dev/nonexistent-picostim"],
    ["flash", "-b", "hil-rig", "-p", "sim"],
    ["flash", "-b", "nosuch", "-p", "sim"],
    ["monitor", "--plot", "/nonexistent/x.png", "-p", "sim"],
    ["monitor", "--csv", "/nonexistent/x.csv", "-p", "sim", "--start-level", "2"],
    ["config", "export", "/nonexistent/x.json", "-p", "sim"],
    ["demo", "--levels", "a,b"],
    ["demo", "--levels", "0"],
    ["demo", "--levels", "9"],
    ["demo", "--board", "hil-rig"],
    ["demo", "--load", "bogus"],
    ["demo", "--plot", "/nonexistent/d.png"],
    ["hil", "--dut", "/dev/nonexistent-dut", "--rig", "/dev/nonexistent-rig"],
    ["hil", "--board", "nosuch"],
    ["hil", "--load", "bogus"],
    ["levels", "set", "2", "150", "--operator", "", "-p", "sim"],
    ["run", "-l", "2", "-p", "sim:"],
])
def test_listed_bad_inputs_are_one_line_errors_before_any_work(args):
    r, took = run(args)
    assert_one_line_error(r, args, code=2)
    assert took < 5, (args, took)          # refused up front: no virtual board was started, no test ran


def test_hil_report_on_a_regular_file_is_refused_before_tests_run(tmp_path):
    f = tmp_path / "R"
    f.write_text("x")
    r, took = run(["hil", "--report", str(f), "-k", "nothing_matches_this"])
    assert_one_line_error(r, ["hil", "--report"], code=2)
    assert "not a directory" in r.output and took < 5


def test_a_port_without_micropython_is_named_within_seconds():
    master, slave = os.openpty()       # a serial line with nothing behind it that speaks MicroPython
    try:
        r, took = run(["info", "-p", os.ttyname(slave)])
    finally:
        os.close(master)
        os.close(slave)
    assert_one_line_error(r, ["info"], code=1)
    assert "no MicroPython" in r.output, r.output
    assert took < 8, took


# -- hypothesis over the arguments, against a live board that must stay unchanged and idle ---------------------
@pytest.fixture(scope="module")
def vb():
    with VirtualBoard(board=BOARD, clock="model") as b:
        vb_ready(b)
        with SerialTransport(b.port) as t:
            deploy.deploy(t, BOARD)
        yield b


def _snapshot(port):
    with Device(port) as dev:
        st_ = dev.status()
        return {"levels": dev.levels_get(), "config": dev.config_get(), "audit": len(dev.audit()),
                "state": st_["state"]}


_junk = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1,
                max_size=12)
_bad_level = st.one_of(st.integers(-5, 0).map(str), st.integers(6, 10**6).map(str),
                       _junk.filter(lambda s: not s.strip().lstrip("+-").isdigit()))
_bad_ua = st.one_of(st.integers(401, 10**7).map(str), st.integers(-1000, 0).map(str),
                    _junk.filter(lambda s: not s.strip().lstrip("+-").isdigit()))
_bad_program = _junk.filter(lambda s: s not in boards.load(BOARD)["programs"])
_bad_dir = st.sampled_from(["/nonexistent", "/proc/1/none", "/dev/null/x"])
_bad_board = _junk.filter(lambda s: s not in boards.names() or s == "hil-rig") | st.just("hil-rig")


def _cases(port):
    return st.one_of(
        st.tuples(_bad_level, st.integers(1, 400).map(str)).map(lambda a: ["levels", "set", *a, "-p", port]),
        st.tuples(st.integers(1, 5).map(str), _bad_ua).map(lambda a: ["levels", "set", *a, "-p", port]),
        st.sampled_from(["", " ", "\t"]).map(lambda o: ["levels", "set", "2", "150", "--operator", o, "-p", port]),
        _bad_level.map(lambda lv: ["run", "-l", lv, "-p", port]),
        _bad_program.map(lambda p: ["run", "-l", "1", "--program", p, "-p", port]),
        st.floats(-1e6, 0.4).map(lambda r: ["run", "-l", "1", "--phase-us", "200", "--rate-hz", repr(r), "-p", port]),
        st.integers(501, 10**6).map(lambda g: ["run", "-l", "1", "--gap-us", str(g), "-p", port]),
        _bad_dir.map(lambda d: ["monitor", "-p", port, "--start-level", "2", "--csv", f"{d}/m.csv"]),
        _bad_dir.map(lambda d: ["monitor", "-p", port, "--start-level", "2", "--plot", f"{d}/m.png"]),
        _bad_program.map(lambda p: ["monitor", "-p", port, "--start-level", "1", "--program", p, "--duration", "1"]),
        _bad_level.map(lambda lv: ["monitor", "-p", port, "--start-level", lv, "--duration", "1"]),
        _bad_dir.map(lambda d: ["config", "export", f"{d}/c.json", "-p", port]),
        _junk.filter(lambda s: "=" not in s).map(lambda a: ["config", "set", a, "-p", port]),
        st.tuples(st.sampled_from(["session_s", "default_level", "default_program", "volume"]),
                  st.sampled_from(["-1", "0", "99999", "\"nope\"", "[]", "{}", "1.5x"])).map(
            lambda kv: ["config", "set", f"{kv[0]}={kv[1]}", "-p", port]),
        _bad_board.map(lambda b: ["info", "-p", f"sim:{b}"]),
        _junk.map(lambda p: ["info", "-p", "/dev/nonexistent-" + p.replace("/", "_")]),
        _bad_level.map(lambda lv: ["levels", "tune", "-l", lv, "-p", port]),
        st.sampled_from(["", "  "]).map(lambda o: ["levels", "tune", "-l", "1", "--operator", o, "-p", port]),
        _bad_ua.map(lambda t: ["levels", "set", "--table", f"80,160,{t}", "-p", port]),
        st.sampled_from(["-1", "0", "abc", "1001"]).map(lambda r: ["monitor", "-p", port, "--rate", r,
                                                                   "--duration", "0.5"]),
    )


def test_bad_arguments_are_one_line_errors_and_change_nothing(vb):
    before = _snapshot(vb.port)
    seen = []

    @hsettings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(args=_cases(vb.port))
    def check(args):
        seen.append(args[:2])
        r, _ = run(args, input="q")
        assert_one_line_error(r, args)
        after = _snapshot(vb.port)
        assert after == before, (args, before, after)

    check()
    assert len({tuple(a) for a in seen}) >= 5
    assert vb.rig.capture(2.2).n_active == 0          # idle at the electrodes after all of it
