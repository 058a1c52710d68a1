"""`picostim flash --uf2` against a virtual board that goes to BOOTSEL (machine.bootloader() via the protocol),
a fake RPI-RP2 drive that appears, takes the UF2 and goes away, and the board's port coming back."""
import os
import threading
import time

import pytest
from click.testing import CliRunner

from picostim import deploy, uf2
from picostim.cli import main as cli
from picostim.sim import VirtualBoard
from _bootsel import copy_complete
from picostim.transport import SerialTransport
from simhelp import app_files, expected_files, vb_ready

BOARD = "handheld-home"
INFO = "UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\nBoard-ID: RPI-RP2\n"
pytestmark = pytest.mark.timeout(300)


class BootselRom:
    """Stand-in for the RP2040 boot ROM around a VirtualBoard: on bootloader() the CDC port (a symlink, like
    /dev/ttyACM0) disappears and a drive appears; a .uf2 copied there reboots the board and the port returns."""

    def __init__(self, vb, link, media):
        self.vb, self.link, self.media = vb, link, media
        self.drive = media / "RPI-RP2"
        self.flashed = []
        self.bootsel_entries = 0
        self._stop = False
        os.symlink(vb.port, link)
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()

    def _run(self):
        while not self._stop:
            if getattr(self.vb, "in_bootloader", False) and not self.drive.exists():
                self.bootsel_entries += 1
                os.unlink(self.link)
                self.drive.mkdir(parents=True)
                (self.drive / "INFO_UF2.TXT").write_text(INFO)
            if self.drive.exists():
                got = list(self.drive.glob("*.uf2"))
                if got and copy_complete(got[0]):
                    self.flashed.append(got[0].read_bytes())
                    for p in self.drive.iterdir():
                        p.unlink()
                    self.drive.rmdir()
                    self.vb.in_bootloader = False
                    self.vb.reset()                       # MicroPython boots from the new image
                    time.sleep(0.3)
                    os.symlink(self.vb.port, self.link)
            time.sleep(0.05)

    def close(self):
        self._stop = True
        self._th.join(2)


def test_flash_uf2_then_application(tmp_path, monkeypatch):
    media = tmp_path / "media"
    media.mkdir()
    monkeypatch.setenv("PICOSTIM_BOOTSEL_DIRS", str(media))
    img = tmp_path / "micropython-rp2.uf2"
    img.write_bytes(uf2.make_uf2(b"MicroPython image stand-in" * 200))
    link = tmp_path / "ttyACM0"
    with VirtualBoard(board=BOARD, rig_port=None, clock="model") as vb:
        vb_ready(vb)
        with SerialTransport(vb.port) as t:
            deploy.deploy(t, BOARD)               # a board already running the application
        rom = BootselRom(vb, link, media)
        try:
            r = CliRunner().invoke(cli, ["flash", "--board", BOARD, "--port", str(link), "--uf2", str(img)])
        finally:
            rom.close()
        assert r.exit_code == 0, r.output
        assert rom.bootsel_entries == 1
        assert rom.flashed == [img.read_bytes()]
        assert app_files(vb.flash_dir) == expected_files(BOARD)
        assert "nothing sent" in r.output or "up to date" in r.output   # the app was already there


def test_flash_refuses_corrupt_uf2_before_touching_the_board(tmp_path):
    bad = tmp_path / "bad.uf2"
    bad.write_bytes(b"\0" * 1000)
    r = CliRunner().invoke(cli, ["flash", "--board", BOARD, "--port", str(tmp_path / "nope"), "--uf2", str(bad)])
    assert r.exit_code != 0 and "not a UF2 file" in r.output
