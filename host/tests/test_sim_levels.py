"""Field tuning end to end on the virtual board: `levels set` and `levels tune` (through a pseudo-terminal)
change a level that survives a reset, shows in the audit log and is measured at the electrodes; over-cap values
are refused by the host, and by the device when the host check is bypassed."""
import os
import re
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from picostim import deploy
from picostim.cli import main as cli
from picostim.device import Device, DeviceError
from picostim.calibration import calibrate
from picostim.sim import VirtualBoard
from picostim.transport import SerialTransport
from simhelp import measured_amp_ua, vb_ready, wait_settled

BOARD = "handheld-home"
PICOSTIM = str(Path(sys.executable).with_name("picostim"))
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def vb():
    # a unit with real parts (seeded), calibrated against the rig: these tests judge delivered amplitudes
    with VirtualBoard(board=BOARD, load="2k", rig_port=None, clock="model", unit_seed=21) as b:
        vb_ready(b)
        with SerialTransport(b.port) as t:
            deploy.deploy(t, BOARD)
        with Device(b.port) as dev:
            dev.ensure_app()
            assert calibrate(dev, b.rig, operator="test").passed
        yield b


def measure_level(vb, dev, level):
    dev.start(level=level, phase_us=200, gap_us=100, rate_hz=50, duration_s=60)
    wait_settled(dev)
    cap = vb.rig.capture(0.3)
    dev.stop()
    return measured_amp_ua(cap)


def test_levels_set_persists_audits_and_is_measured(vb):
    r = CliRunner().invoke(cli, ["levels", "set", "3", "250", "--operator", "tech-bob", "--port", vb.port])
    assert r.exit_code == 0, r.output
    with Device(vb.port) as dev:
        hello = dev.reset()                               # hard reset: the table must come back from flash
        assert hello["levels_ua"][2] == 250
        entries = dev.audit()
        assert any(e["operator"] == "tech-bob" and e["level"] == 3 and e["before_ua"] == 240
                   and e["after_ua"] == 250 for e in entries), entries
        amp = measure_level(vb, dev, 3)
    assert abs(amp - 250) <= 250 * 0.03 + 2, amp


def test_over_cap_refused_by_host_then_by_device(vb):
    runner = CliRunner()
    r = runner.invoke(cli, ["levels", "set", "5", "401", "--port", vb.port])
    assert r.exit_code != 0
    assert "cap" in r.output and "400" in r.output and "host check" in r.output
    r = runner.invoke(cli, ["levels", "set", "5", "401", "--no-host-check", "--port", vb.port])
    assert r.exit_code != 0
    assert "over_cap" in r.output
    with Device(vb.port) as dev:
        assert dev.levels_get() == [80, 160, 240, 320, 400]
        assert [e for e in dev.audit() if e["level"] != "calibration"] == []   # (the fixture calibrated it)
        with pytest.raises(DeviceError) as ei:
            dev.set_level(2, ua=5000)
        assert ei.value.code == "over_cap"


def _pty_run(args, keys_plan, timeout=90):
    """Run the CLI with a pseudo-terminal as its terminal; send each key once its trigger (a regex) has appeared
    in the output that followed the previous key."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    mark = 0
    plan = list(keys_plan)
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    data = os.read(master, 4096)
                except OSError:
                    break
                if not data:
                    break
                out += data
            while plan:
                m = re.search(plan[0][0].encode(), out[mark:])
                if not m:
                    break
                os.write(master, plan.pop(0)[1])
                mark += m.end()
            if proc.poll() is not None and not r:
                break
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return proc.returncode, out.decode(errors="replace")


def test_levels_tune_through_a_pty(vb):
    # Up, Up (2 x 10 uA) on level 2 while stimulating, then save, then quit.
    args = [PICOSTIM, "levels", "tune", "--port", vb.port, "--level", "2", "--step", "10", "--operator", "alice"]
    rc, out = _pty_run(args, [("s = save, q = quit", b"\x1b[A"), ("set 170", b"\x1b[A"),
                              (r"set 180 .*measured 1[5-9][0-9] ", b"s"),      # live current has followed
                              ("saved:", b"q")])
    assert rc == 0, out
    assert "level 2 160 -> 180 µA (audit entry written)" in out, out
    assert re.search(r"set 180 µA \(saved 160 µA\) measured 1[5-9][0-9] µA", out), out   # live measured current
    assert "measured" in out
    with Device(vb.port) as dev:
        dev.reset()
        assert dev.levels_get()[1] == 180
        e = [x for x in dev.audit() if x["operator"] == "alice"]
        assert e and e[-1]["before_ua"] == 160 and e[-1]["after_ua"] == 180
        amp = measure_level(vb, dev, 2)
    assert abs(amp - 180) <= 180 * 0.03 + 2, amp


def test_levels_tune_over_cap_key_is_refused_and_quit_discards(vb):
    args = [PICOSTIM, "levels", "tune", "--port", vb.port, "--level", "5", "--step", "10"]
    rc, out = _pty_run(args, [("s = save, q = quit", b"+"), ("refused", b"q")])
    assert rc == 0, out
    assert "above the cap" in out
    with Device(vb.port) as dev:
        assert dev.levels_get()[4] == 400
        assert [e for e in dev.audit() if e["level"] != "calibration"] == []   # (the fixture calibrated it)
