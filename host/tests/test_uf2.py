"""UF2 path: image checks, BOOTSEL drive discovery by INFO_UF2.TXT, copy + waiting for the port to come back.

The board side is a stand-in for the BOOTSEL ROM: a drive directory that appears when the board enters
BOOTSEL and, once a UF2 lands in it, disappears while the serial port (a real MicroPython REPL on a pty, behind a
symlink like /dev/ttyACM0) comes back.
"""
import os
import threading
import time
from pathlib import Path

import pytest

from picostim import uf2
from _bootsel import copy_complete
from upyport import UpyPort

INFO = "UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\nBoard-ID: RPI-RP2\n"


def fake_drive(path: Path, info: str = INFO) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "INFO_UF2.TXT").write_text(info)
    (path / "INDEX.HTM").write_text("<html>")
    return path


def test_check_uf2_accepts_rp2040_image(tmp_path):
    f = tmp_path / "fw.uf2"
    f.write_bytes(uf2.make_uf2(bytes(range(256)) * 10))
    assert uf2.check_uf2(f) == 10


@pytest.mark.parametrize("mangle,reason", [
    (lambda b: b[:-100], "multiple of 512"),
    (lambda b: b"X" + b[1:], "magic"),
    (lambda b: b[:512 * 2], "truncated"),
    (lambda b: b"", "multiple of 512"),
])
def test_check_uf2_refuses_corrupt_files(tmp_path, mangle, reason):
    f = tmp_path / "bad.uf2"
    f.write_bytes(mangle(uf2.make_uf2(bytes(2000))))
    with pytest.raises(uf2.Uf2Error, match=reason):
        uf2.check_uf2(f)


def test_check_uf2_refuses_other_family(tmp_path):
    f = tmp_path / "esp.uf2"
    f.write_bytes(uf2.make_uf2(bytes(600), family=0x1C5F21B0))
    with pytest.raises(uf2.Uf2Error, match="not RP2040"):
        uf2.check_uf2(f)


def test_find_drives_by_info_file(tmp_path):
    media = tmp_path / "media"
    fake_drive(media / "RPI-RP2")
    fake_drive(media / "OTHER", info="UF2 Bootloader\nBoard-ID: SAMD21-xyz\n")
    (media / "USBSTICK").mkdir(parents=True)
    found = uf2.find_drives([media])
    assert [d.path.name for d in found] == ["RPI-RP2"]
    assert found[0].board_id == "RPI-RP2" and found[0].info["Model"] == "Raspberry Pi RP2"


def test_find_drives_env_roots(tmp_path, monkeypatch):
    d = fake_drive(tmp_path / "RPI-RP2")
    monkeypatch.setenv("PICOSTIM_BOOTSEL_DIRS", str(tmp_path))
    assert any(x.path == d for x in uf2.find_drives())


class BootselStandIn:
    """Watches a fake drive; when a .uf2 lands the drive goes away and the port symlink comes back."""

    def __init__(self, drive: Path, link: Path, target_port: str, delay_s: float = 0.5):
        self.drive, self.link, self.target, self.delay = drive, link, target_port, delay_s
        self.flashed = None
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()

    def _run(self):
        end = time.monotonic() + 20
        while time.monotonic() < end:
            files = list(self.drive.glob("*.uf2")) if self.drive.exists() else []
            if files and copy_complete(files[0]):
                self.flashed = files[0].read_bytes()
                for p in self.drive.iterdir():
                    p.unlink()
                self.drive.rmdir()                     # drive unmounts while the chip reboots
                time.sleep(self.delay)
                os.symlink(self.target, self.link)     # the CDC port re-enumerates under its old name
                return
            time.sleep(0.05)


def test_install_copies_and_waits_for_the_port(tmp_path):
    img = tmp_path / "micropython.uf2"
    img.write_bytes(uf2.make_uf2(b"firmware" * 500))
    media = tmp_path / "media"
    drive = fake_drive(media / "RPI-RP2")
    link = tmp_path / "ttyACM0"
    with UpyPort() as u:
        stand_in = BootselStandIn(drive, link, u.port)
        t0 = time.monotonic()
        port = uf2.install(img, port=str(link), drive=uf2.find_drives([media])[0], port_timeout=10)
        took = time.monotonic() - t0
        assert port == str(link)
        assert took >= 0.4                            # waited for the re-enumeration
        assert stand_in.flashed == img.read_bytes()
        from picostim.rawrepl import RawRepl
        from picostim.transport import SerialTransport
        with SerialTransport(port) as t:              # and the board answers on the port that came back
            r = RawRepl(t)
            r.enter()
            assert r.eval("1+1") == 2


def test_no_drive_is_a_clear_error(tmp_path):
    img = tmp_path / "micropython.uf2"
    img.write_bytes(uf2.make_uf2(b"x" * 300))
    with pytest.raises(uf2.Uf2Error, match="BOOTSEL drive"):
        uf2.install(img, port=None, drive_timeout=0.3, roots=[tmp_path])


def test_port_not_coming_back_is_a_clear_error(tmp_path):
    with pytest.raises(uf2.Uf2Error, match="did not come back"):
        uf2.wait_for_port(str(tmp_path / "ttyACM7"), timeout=0.3)
