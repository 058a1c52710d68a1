"""Issue 15: `picostim sim` gives a board that answers (flashed, model clock) and says what to run next; every
virtual board has its own uid unless one is given; a change made on a `-p sim` board says the board is gone."""
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from picostim.cli import main as cli
from picostim.device import Device
from picostim.sim import VirtualBoard
from simhelp import vb_ready

pytestmark = pytest.mark.timeout(300)
PICOSTIM = os.path.join(os.path.dirname(sys.executable), "picostim")


def test_sim_command_flashes_by_default_and_runs_the_model_clock():
    p = subprocess.Popen([PICOSTIM, "sim", "-b", "handheld-pro", "--load", "2k"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        info = {}
        end = time.monotonic() + 120
        while "uid" not in info and time.monotonic() < end:
            line = p.stdout.readline()
            if not line:
                break
            if "=" in line:
                k, v = line.strip().split("=", 1)
                info[k] = v
        assert {"port", "rig", "flash", "uid"} <= set(info), (info, p.stderr.read() if p.poll() else "")
        t0 = time.monotonic()
        r = CliRunner().invoke(cli, ["info", "--json", "-p", info["port"]])
        took = time.monotonic() - t0
        assert r.exit_code == 0, r.output
        assert '"board": "handheld-pro"' in r.output and info["uid"] in r.output
        assert took < 5, took                 # the application answers at once (no 12 s wait, no 'no reply')
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert "next: picostim info -p" in err and "Traceback" not in err, err
    assert p.returncode == 130


def test_sim_clock_default_is_model():
    opt = {o.name: o for o in cli.commands["sim"].params}
    assert opt["clock"].default == "model"


def test_every_virtual_board_has_its_own_uid_unless_given():
    uids = set()
    for _ in range(2):
        with VirtualBoard(board="handheld-home", rig_port=None, clock="model") as vb:
            vb_ready(vb)
            from picostim.rawrepl import RawRepl
            from picostim.transport import SerialTransport
            with SerialTransport(vb.port) as t:
                repl = RawRepl(t)
                repl.enter()
                uids.add(repl.eval("__import__('machine').unique_id().hex()"))
                assert repl.eval("__import__('machine').unique_id().hex()") == vb.uid
    assert len(uids) == 2, uids
    with VirtualBoard(board="handheld-home", rig_port=None, clock="model", uid="0123456789abcdef") as vb:
        assert vb.uid == "0123456789abcdef"
    with pytest.raises(Exception):
        VirtualBoard(board="handheld-home", rig_port=None, uid="xyz")


def test_a_change_on_a_sim_port_says_the_board_is_gone():
    r = CliRunner().invoke(cli, ["levels", "set", "3", "220", "--operator", "alice", "-p", "sim"])
    assert r.exit_code == 0, r.output
    assert "gone" in r.output and "picostim sim" in r.output
    r = CliRunner().invoke(cli, ["info", "-p", "sim"])
    assert r.exit_code == 0 and "gone" not in r.output        # nothing changed: nothing to warn about
