"""Issue 15: without a program, run / monitor --start-level / levels tune start the board's declared default
program (boards/*.json), name it on screen, and monitor / tune take --program."""
import json
import re

import pytest
from click.testing import CliRunner

from picostim import boards, deploy
from picostim.cli import main as cli
from picostim.device import Device
from picostim.sim import VirtualBoard
from picostim.transport import SerialTransport
from simhelp import vb_ready, wait_state

BOARD = "handheld-home"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def vb():
    with VirtualBoard(board=BOARD, clock="model") as b:
        vb_ready(b)
        with SerialTransport(b.port) as t:
            deploy.deploy(t, BOARD)
        yield b


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_every_board_declares_a_default_program_it_allows():
    for name in boards.names():
        b = boards.load(name)
        if b.get("kind") == "rig":
            continue
        assert b.get("default_program") in b["programs"], name
    bad = dict(boards.load(BOARD), default_program="nope")
    with pytest.raises(boards.BoardError):
        boards.validate(bad)


def test_run_without_program_starts_the_board_default_and_says_so(vb):
    want = boards.load(BOARD)["default_program"]
    r = run("run", "-l", "1", "--duration", "60", "-p", vb.port)
    assert r.exit_code == 0, r.output
    applied = json.loads(r.output.split("started: ", 1)[1].splitlines()[0])
    assert applied["program"] == want == "microcurrent"
    assert f"program {want}" in r.output
    with Device(vb.port) as dev:
        st = wait_state(dev, ("running",))
        assert st["program"] == want and st["burst"] is None     # microcurrent has no bursts
        dev.stop()
    # at the electrodes: microcurrent's first step is 0.5 Hz, never EMS's 50 Hz bursts
    with Device(vb.port) as dev:
        dev.start(level=1, duration_s=60)
        wait_state(dev, ("running",))
        cap = vb.rig.capture(4.5)
        dev.stop()
    assert 1 <= cap.n_active <= 3, cap.n_active


def test_monitor_program_option(vb):
    r = run("monitor", "-p", vb.port, "--start-level", "1", "--program", "lift", "--duration", "1", "--quiet")
    assert r.exit_code == 0, r.output
    assert "program lift" in r.output
    r = run("monitor", "-p", vb.port, "--program", "lift", "--duration", "1")
    assert r.exit_code == 2 and "--start-level" in r.output
    r = run("monitor", "-p", vb.port, "--start-level", "1", "--program", "nosuch", "--duration", "1")
    assert r.exit_code == 1 and "unknown_program" in r.output and "Traceback" not in r.output
    with Device(vb.port) as dev:
        assert dev.status()["state"] == "idle"


def test_tune_names_the_program_and_redraws_one_status_line(vb):
    from test_sim_levels import PICOSTIM, _pty_run
    args = [PICOSTIM, "levels", "tune", "-p", vb.port, "-l", "1", "--program", "ems", "--step", "5"]
    # stay ~6 s (bursts on and off at 50 Hz), then quit
    rc, out = _pty_run(args, [("s = save, q = quit", b""), (r"burst off", b""), (r"measured \d+ µA", b"q")],
                       timeout=90)
    assert rc == 0, out
    assert "program ems" in out
    status = out.split("q = quit", 1)[1].split("done:", 1)[0]
    assert status.count("\r\x1b[2K") >= 3, status           # redrawn in place ...
    assert status.count("\n") <= 2, status                   # ... not a new line per update
    assert "no fresh sample: burst off" in status             # burst-off: no stale current shown
    with Device(vb.port) as dev:
        assert dev.status()["state"] == "idle"
    assert vb.rig.capture(0.5).n_active == 0
