"""Bundles on the virtual board: `flash --bundle` provisions exactly the bundle, `hello`/`info` report its hash, a
reflash of the same bundle is decided by one hello (nothing else sent), `--verify` still hashes every file and
repairs what the manifest cannot see; guardrails: another board's profile is refused unless --reprovision (saying
what would change), and `-p sim:<board>` with another --board is refused."""
import hashlib
import json
import time

import pytest
from click.testing import CliRunner

from picostim import bundle, deploy
from picostim.cli import main as cli
from picostim.device import Device
from picostim.sim import VirtualBoard
from picostim.target import BoardMismatch, open_target
from picostim.transport import SerialTransport
from simhelp import app_files, vb_ready

BOARD = "handheld-home"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def vb():
    with VirtualBoard(board=BOARD, rig_port=None, clock="model") as b:
        yield vb_ready(b)


def _bundle_files(b):
    image = dict(b.image)
    image[deploy.MANIFEST] = b.manifest
    return {p: hashlib.sha256(d).hexdigest() for p, d in image.items()}


def _hello(port):
    # the refused flash soft-resets the unit into its application: while the virtual board re-enumerates its USB
    # port after that, the port can be briefly busy (seen on loaded hosts, with or without this change): retry
    from picostim.transport import PortBusyError
    end = time.monotonic() + 10
    while True:
        try:
            with Device(port, timeout=10) as dev:
                return dev.hello(timeout=10)
        except PortBusyError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def test_flash_bundle_then_one_round_trip_recheck_then_verify(vb, tmp_path):
    b = bundle.build(BOARD)
    path = bundle.write(b, tmp_path)
    runner = CliRunner()
    r = runner.invoke(cli, ["flash", "--bundle", str(path), "-p", vb.port])
    assert r.exit_code == 0, r.output
    assert app_files(vb.flash_dir) == _bundle_files(b)
    assert "all verified" in r.output
    r = runner.invoke(cli, ["info", "-p", vb.port, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["hello"]["bundle"] == b.hash

    boots = vb.boot_count
    with SerialTransport(vb.port) as t:
        res = deploy.deploy(t, bundle=bundle.read(path), verify=False)
    assert res.quick and not res.changed and res.bytes_sent == 0 and res.bundle == b.hash
    assert res.hello["bundle"] == b.hash and vb.boot_count == boots      # no REPL entry, no reset
    r = runner.invoke(cli, ["flash", "--bundle", str(path), "-p", vb.port])
    assert r.exit_code == 0 and "bundle reported" in r.output, r.output

    # a file damaged behind the manifest's back: the one-round-trip check cannot see it, --verify repairs it
    victim = vb.flash_dir / "lib" / "ui.mpy"
    victim.write_bytes(victim.read_bytes() + b"\0")
    r = runner.invoke(cli, ["flash", "--bundle", str(path), "-p", vb.port])
    assert r.exit_code == 0 and "bundle reported" in r.output
    assert app_files(vb.flash_dir) != _bundle_files(b)
    r = runner.invoke(cli, ["flash", "--bundle", str(path), "-p", vb.port, "--verify"])
    assert r.exit_code == 0 and "1 written" in r.output, r.output
    assert app_files(vb.flash_dir) == _bundle_files(b)
    assert _hello(vb.port)["bundle"] == b.hash


def test_source_flash_reports_the_same_bundle_hash(vb):
    with SerialTransport(vb.port) as t:
        res = deploy.deploy(t, BOARD)
    assert res.hello["bundle"] == bundle.build(BOARD).hash == res.bundle


def test_other_board_profile_refused_unless_reprovision(vb):
    runner = CliRunner()
    assert runner.invoke(cli, ["flash", "--board", BOARD, "-p", vb.port]).exit_code == 0
    before = app_files(vb.flash_dir)
    r = runner.invoke(cli, ["flash", "--board", "handheld-pro", "-p", vb.port])
    assert r.exit_code == 1, r.output
    text = " ".join(r.output.split())
    for part in ("carries board profile 'handheld-home'", "for 'handheld-pro'", "cap 400 -> 800 uA",
                 "levels [80, 160, 240, 320, 400] -> [80, 160", "session default 900 -> 1200 s",
                 "session max 1200 -> 1800 s", "--reprovision"):
        assert part in text, (part, text)
    assert app_files(vb.flash_dir) == before                 # nothing written
    h = _hello(vb.port)                                       # and the unit runs its own application again
    assert h["board"] == BOARD and h["cap_ua"] == 400
    # the fast path does not bypass the guard: asking verify=False with another board's bundle still refuses
    with SerialTransport(vb.port) as t, pytest.raises(deploy.ReprovisionRefused):
        deploy.deploy(t, bundle=bundle.build("handheld-pro"), verify=False)

    r = runner.invoke(cli, ["flash", "--board", "handheld-pro", "-p", vb.port, "--reprovision"])
    assert r.exit_code == 0, r.output
    h = _hello(vb.port)
    assert h["board"] == "handheld-pro" and h["cap_ua"] == 800


def test_sim_port_of_another_board_refused():
    r = CliRunner().invoke(cli, ["flash", "--board", "handheld-pro", "-p", "sim:handheld-home"])
    assert r.exit_code == 2 and "is a handheld-home unit but --board is handheld-pro" in " ".join(r.output.split())
    r = CliRunner().invoke(cli, ["flash", "--bundle", "/nonexistent", "-p", "sim"])
    assert r.exit_code == 2
    with pytest.raises(BoardMismatch):
        with open_target("sim:handheld-pro", board="handheld-home"):
            pass
