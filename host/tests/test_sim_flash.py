"""Flash Done-means on the virtual board: full deploy verified, no-change sends nothing, one change sends one
file, stale files removed, interrupted (killed / power loss mid-write) flashes recover to a clean result."""
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

from picostim import deploy, paths
from picostim.cli import main as cli
from picostim.sim import VirtualBoard
from picostim.transport import SerialTransport, TransportError
from simhelp import app_files, expected_files, vb_ready

BOARD = "handheld-home"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def vb():
    with VirtualBoard(board=BOARD, rig_port=None, clock="model") as b:
        yield vb_ready(b)


def test_flash_sequence_full_nochange_onefile_stale(vb, tmp_path):
    runner = CliRunner()
    r = runner.invoke(cli, ["flash", "--board", BOARD, "--port", vb.port])
    assert r.exit_code == 0, r.output
    assert app_files(vb.flash_dir) == expected_files(BOARD)
    assert "written, 0 removed" in r.output and "all verified" in r.output

    r = runner.invoke(cli, ["flash", "--board", BOARD, "--port", vb.port])
    assert r.exit_code == 0, r.output
    assert "nothing sent" in r.output

    fw = tmp_path / "fw"
    shutil.copytree(paths.FIRMWARE_DIR, fw)
    ui = fw / "lib" / "ui.py"
    ui.write_text(ui.read_text() + "\n_FIELD_BUILD = 2\n")  # comments alone do not change the .mpy
    with SerialTransport(vb.port) as t:
        res = deploy.deploy(t, BOARD, firmware_dir=fw)
    assert res.written == ["/lib/ui.mpy", "/manifest.json"] and res.removed == []
    assert res.hello["fw"] == deploy.firmware_version()
    assert app_files(vb.flash_dir) == expected_files(BOARD, fw)

    (vb.flash_dir / "lib" / "stale_module.mpy").write_bytes(b"M\x06old")
    (vb.flash_dir / "old_helper.py").write_text("print('x')\n")
    with SerialTransport(vb.port) as t:
        res = deploy.deploy(t, BOARD)
    assert sorted(res.removed) == ["/lib/stale_module.mpy", "/old_helper.py"]
    assert app_files(vb.flash_dir) == expected_files(BOARD)


def test_flash_while_app_runs_and_stimulating(vb):
    from picostim.device import Device
    with SerialTransport(vb.port) as t:
        deploy.deploy(t, BOARD)
        dev = Device(t, owns_transport=False)
        dev.start(level=2, duration_s=60)
        assert dev.status()["state"] in ("ramping", "running")
        res = deploy.deploy(t, BOARD)          # Ctrl-C into the running app, verify, handshake
        assert not res.changed and res.hello["board"] == BOARD
        assert dev.status()["state"] == "idle"


def _deploy_in_subprocess(port):
    code = ("from picostim import deploy; from picostim.transport import SerialTransport\n"
            f"t = SerialTransport({port!r}); deploy.deploy(t, {BOARD!r}, chunk=1024)\n")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("kill_at_file", [1, 6, 12])
def test_killed_flash_then_reflash_equals_clean(vb, kill_at_file):
    """SIGKILL the flashing host while its n-th temp file is on the board (mid-transfer), then flash again."""
    p = _deploy_in_subprocess(vb.port)
    seen = set()
    end = time.monotonic() + 60
    while len(seen) < kill_at_file and time.monotonic() < end and p.poll() is None:
        seen |= {str(x) for x in vb.flash_dir.rglob("*" + deploy.TMP_SUFFIX)}
        time.sleep(0.002)
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    assert len(seen) >= kill_at_file, "the transfer finished before it could be interrupted"
    assert app_files(vb.flash_dir) != expected_files(BOARD)          # it really was cut short
    with SerialTransport(vb.port) as t:
        res = deploy.deploy(t, BOARD)
    assert res.verified and res.hello["board"] == BOARD
    assert app_files(vb.flash_dir) == expected_files(BOARD)


@pytest.mark.parametrize("seed", [1, 2])
def test_power_loss_during_write_then_reflash_equals_clean(vb, seed):
    with SerialTransport(vb.port) as t:
        deploy.deploy(t, BOARD)                       # an older application is on the board
    fw_files = app_files(vb.flash_dir)
    img = deploy.build_image(BOARD)
    victim = "/lib/ui.mpy"
    img[victim] = img[victim] + b"\0" * 5000          # a new build whose ui.mpy differs
    vb.rig.inject("power_loss", during_write=True, seed=seed)   # power dies at a random byte of the next write
    with pytest.raises(Exception):
        with SerialTransport(vb.port) as t:
            deploy.deploy(t, BOARD, image=img, chunk=1024)
    # The real name still holds the complete old file: only a temp file can be partial.
    after_cut = app_files(vb.flash_dir)
    assert after_cut.get(victim) == fw_files[victim]
    vb.rig.inject("power_restore")
    vb_ready(vb)
    with SerialTransport(vb.port, open_timeout=5) as t:
        res = deploy.deploy(t, BOARD, image=img)
    assert res.verified and victim in res.written
    want = {p: deploy.sha256(d) for p, d in img.items()}
    got = app_files(vb.flash_dir)
    assert {p: got.get(p) for p in want} == want
    assert not [p for p in got if p.endswith(deploy.TMP_SUFFIX)]


def test_flash_two_virtual_boards_at_once_summary_table():
    r = CliRunner().invoke(cli, ["flash", "--board", BOARD, "--port", "sim", "--port", "sim"])
    assert r.exit_code == 0, r.output
    for col in ("port", "unique_id", "board", "version", "result", "seconds"):
        assert col in r.output
    assert r.output.count(BOARD) >= 2
