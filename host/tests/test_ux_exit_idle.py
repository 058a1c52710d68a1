"""Issue 15: every way a command ends (normal, error, Ctrl-C) leaves the output idle, checked at the electrodes
with the virtual rig, and the HIL bench stops the DUT after each test and at the end of the session."""
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from picostim import deploy
from picostim.cli import main as cli
from picostim.device import Device
from picostim.sim import VirtualBoard
from picostim.transport import SerialTransport
from simhelp import vb_ready, wait_state

BOARD = "handheld-home"
pytestmark = pytest.mark.timeout(300)
FAST = ["--phase-us", "200", "--gap-us", "50", "--rate-hz", "50"]   # a waveform a short capture sees


@pytest.fixture(scope="module")
def vb():
    with VirtualBoard(board=BOARD, clock="model") as b:
        vb_ready(b)
        with SerialTransport(b.port) as t:
            deploy.deploy(t, BOARD)
        yield b


def run(*args, **kw):
    return CliRunner().invoke(cli, list(args), **kw)


def assert_idle_at_electrodes(vb, seconds=2.2):
    """No pulse pair at the electrodes for longer than the slowest program's period (0.5 Hz)."""
    cap = vb.rig.capture(seconds)
    assert cap.n_active == 0, f"{cap.n_active} pulses at the electrodes after the command ended: {cap.summary()}"
    with Device(vb.port) as dev:
        assert dev.status()["state"] == "idle"


def start_stimulating(vb, **kw):
    with Device(vb.port) as dev:
        dev.start(level=2, duration_s=600, **({"phase_us": 200, "gap_us": 50, "rate_hz": 50} | kw))
        wait_state(dev, ("running",))
    assert vb.rig.capture(0.2).n_active > 0


# -- HIL bench --------------------------------------------------------------------------------------------------
def test_hil_bench_stops_the_dut_after_each_test_and_at_session_end(vb):
    from picostim.hil.bench import Bench, BenchSettings
    # The virtual board stands in for real hardware here: the bench reaches it by port and rig protocol address,
    # so closing the bench does not power the board off (as with a real DUT).
    b = Bench.open(BenchSettings(dut=vb.port, rig=vb.rig_address, board=BOARD))
    try:
        b.device.start(level=5, phase_us=200, gap_us=50, rate_hz=50, duration_s=600)
        wait_state(b.device, ("running",))
        assert vb.rig.capture(0.2).n_active > 0
        b.after_test()
        assert vb.rig.capture(0.5).n_active == 0, "the DUT still stimulates after a test ended"
        b.device.start(level=5, phase_us=200, gap_us=50, rate_hz=50, duration_s=600)
        wait_state(b.device, ("running",))
    finally:
        b.close()
    assert_idle_at_electrodes(vb, 0.5)


# -- run --wait -------------------------------------------------------------------------------------------------
def _cli_proc(*args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    exe = os.path.join(os.path.dirname(sys.executable), "picostim")
    return subprocess.Popen([exe, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)


def _wait_for(proc, text, timeout=60):
    end = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
        if text in line:
            return seen
    raise AssertionError(f"{text!r} not printed; got {seen!r} / {proc.stderr.read() if proc.poll() is not None else ''}")


def test_run_wait_ctrl_c_stops_the_session(vb):
    p = _cli_proc("run", "-l", "2", *FAST, "--duration", "600", "--wait", "-p", vb.port)
    try:
        _wait_for(p, "started")
        time.sleep(1.0)
        assert vb.rig.capture(0.2).n_active > 0
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, (out, err)
    assert "Traceback" not in err, err
    assert_idle_at_electrodes(vb)


# -- monitor ----------------------------------------------------------------------------------------------------
def test_monitor_bad_csv_path_refused_before_starting(vb):
    r = run("monitor", "-p", vb.port, "--start-level", "2", "--csv", "/nonexistent/x.csv", "--duration", "1")
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert "/nonexistent" in r.output and "Traceback" not in r.output
    assert_idle_at_electrodes(vb)


def test_monitor_ctrl_c_stops_what_it_started(vb):
    p = _cli_proc("monitor", "-p", vb.port, "--start-level", "2", "--quiet")
    try:
        time.sleep(0.5)
        end = time.monotonic() + 60
        while time.monotonic() < end and vb.rig.capture(2.2).n_active == 0:   # (the port is monitor's)
            time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, (out, err)
    assert "Traceback" not in err, err
    assert_idle_at_electrodes(vb)


# -- normal ends ------------------------------------------------------------------------------------------------
def test_run_wait_normal_end_and_selftest_leave_the_output_idle(vb):
    r = run("run", "-l", "2", *FAST, "--duration", "2", "--wait", "-p", vb.port)
    assert r.exit_code == 0, r.output
    assert_idle_at_electrodes(vb)
    r = run("selftest", "--expect-ohm", "2000", "-p", vb.port)
    assert r.exit_code == 0, r.output
    assert_idle_at_electrodes(vb)


def test_monitor_normal_end_leaves_what_it_started_idle(vb):
    r = run("monitor", "-p", vb.port, "--start-level", "2", "--program", "lift", "--duration", "1", "--quiet")
    assert r.exit_code == 0, r.output
    assert_idle_at_electrodes(vb)


def test_monitor_error_after_start_stops_the_output(vb, tmp_path, monkeypatch):
    # the plot is written after the capture: make it fail there, as a full disk would
    import picostim.cli.monitor as mon

    def broken(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(mon, "plot_samples", broken)
    r = run("monitor", "-p", vb.port, "--start-level", "2", "--duration", "1", "--quiet",
            "--plot", str(tmp_path / "m.png"))
    assert r.exit_code == 1 and "No space left" in r.output and "Traceback" not in r.output
    assert_idle_at_electrodes(vb)


def test_tune_ctrl_c_stops_the_output(vb):
    import pty
    import select
    from test_sim_levels import PICOSTIM
    master, slave = pty.openpty()
    p = subprocess.Popen([PICOSTIM, "levels", "tune", "-p", vb.port, "-l", "2"], stdin=slave, stdout=slave,
                         stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    try:
        end = time.monotonic() + 60
        while b"measured" not in out and time.monotonic() < end:
            if select.select([master], [], [], 0.2)[0]:
                out += os.read(master, 4096)
        assert b"measured" in out, out
        assert vb.rig.capture(2.2).n_active > 0
        p.send_signal(signal.SIGINT)        # what Ctrl-C on the controlling terminal does
        end = time.monotonic() + 30
        while p.poll() is None and time.monotonic() < end:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    out += os.read(master, 4096)
                except OSError:
                    break
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
        os.close(master)
    assert p.returncode == 130, out
    assert b"Traceback" not in out
    assert_idle_at_electrodes(vb)


def test_hil_ctrl_c_leaves_a_real_dut_idle(vb, tmp_path):
    """`picostim hil` against the virtual board reached as real hardware (port + rig protocol), interrupted while
    a test stimulates: the session ends with the DUT idle and the run recorded INCOMPLETE."""
    rep = tmp_path / "R"
    p = _cli_proc("hil", "--dut", vb.port, "--rig", vb.rig_address, "-n", "1", "--quiet", "--report", str(rep),
                  "-k", "endurance")
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and vb.rig.capture(0.3).n_active == 0:
            assert p.poll() is None, p.communicate()
            time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, (out, err)
    assert_idle_at_electrodes(vb)
    import json
    assert json.loads((rep / "record.json").read_text())["outcome"] == "INCOMPLETE"
