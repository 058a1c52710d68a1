"""MicroPython UF2 install on RP2040 boards.

- `find_drives()`: BOOTSEL mass-storage drives, recognised by INFO_UF2.TXT with an RP2040 `Board-ID`
  (volume label RPI-RP2), searched in the usual mount roots plus $PICOSTIM_BOOTSEL_DIRS (os.pathsep list).
- `check_uf2()`: the file is whole UF2 blocks for the RP2040 family before anything is copied.
- `enter_bootsel()`: a running board is sent to BOOTSEL with `machine.bootloader()` (stock MicroPython has no
  1200-baud touch).
- `install()`: copy to the drive (fsync), then wait for the serial port to come back.
"""
from __future__ import annotations

import os
import shutil
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

INFO_FILE = "INFO_UF2.TXT"
UF2_MAGIC0, UF2_MAGIC1, UF2_MAGIC_END = 0x0A324655, 0x9E5D5157, 0x0AB16F30
UF2_FLAG_FAMILY = 0x00002000
RP2040_FAMILY = 0xE48BFF56
BLOCK = 512


class Uf2Error(Exception):
    pass


@dataclass
class Drive:
    path: Path
    info: dict

    @property
    def board_id(self) -> str:
        return self.info.get("Board-ID", "")


def read_info(drive: Path) -> dict:
    """INFO_UF2.TXT as a dict (`Key: value` lines; the first line is the bootloader banner)."""
    text = (Path(drive) / INFO_FILE).read_text(errors="replace")
    info = {}
    for i, line in enumerate(text.splitlines()):
        if ":" in line:
            k, v = line.split(":", 1)
            info[k.strip()] = v.strip()
        elif i == 0 and line.strip():
            info["banner"] = line.strip()
    return info


def _candidate_roots() -> list[Path]:
    roots = [Path(p) for p in os.environ.get("PICOSTIM_BOOTSEL_DIRS", "").split(os.pathsep) if p]
    user = os.environ.get("USER", "")
    if sys.platform == "darwin":
        roots.append(Path("/Volumes"))
    elif sys.platform == "win32":
        roots += [Path(f"{c}:/") for c in "DEFGHIJKLMNOPQRSTUVWXYZ"]
    else:
        roots += [Path("/media") / user, Path("/run/media") / user, Path("/media"), Path("/mnt")]
    return roots


def find_drives(roots: list[Path] | None = None) -> list[Drive]:
    """RP2040 BOOTSEL drives currently mounted (a root may itself be a drive or hold drives)."""
    found: dict[Path, Drive] = {}
    for root in roots if roots is not None else _candidate_roots():
        try:
            candidates = [root] + ([p for p in root.iterdir() if p.is_dir()] if root.is_dir() else [])
        except OSError:
            continue
        for c in candidates:
            try:
                if not (c / INFO_FILE).is_file():
                    continue
                info = read_info(c)
            except OSError:
                continue
            if info.get("Board-ID", "").startswith("RPI-RP2"):
                found[c.resolve()] = Drive(c, info)
    return list(found.values())


def check_uf2(path: Path) -> int:
    """Validate a UF2 image for RP2040; return the number of blocks. Raises Uf2Error with the reason."""
    data = Path(path).read_bytes()
    if not data or len(data) % BLOCK:
        raise Uf2Error(f"{path}: not a UF2 file (size {len(data)} is not a multiple of 512)")
    n = len(data) // BLOCK
    for i in range(n):
        blk = data[i * BLOCK:(i + 1) * BLOCK]
        m0, m1, flags, _addr, _size, blockno, numblocks, family = struct.unpack_from("<8I", blk)
        (end,) = struct.unpack_from("<I", blk, BLOCK - 4)
        if (m0, m1, end) != (UF2_MAGIC0, UF2_MAGIC1, UF2_MAGIC_END):
            raise Uf2Error(f"{path}: block {i} has bad UF2 magic: corrupt or not a UF2 file")
        if flags & UF2_FLAG_FAMILY and family != RP2040_FAMILY:
            raise Uf2Error(f"{path}: block {i} is for family 0x{family:08x}, not RP2040 (0x{RP2040_FAMILY:08x})")
        if blockno != i or numblocks != n:
            raise Uf2Error(f"{path}: block {i} says {blockno}/{numblocks}: truncated or concatenated file")
    return n


def make_uf2(payload: bytes, base: int = 0x10000000, family: int = RP2040_FAMILY) -> bytes:
    """Wrap bytes in UF2 blocks (256 payload bytes each); used by tests and to build fake images."""
    chunks = [payload[i:i + 256] for i in range(0, len(payload), 256)] or [b""]
    out = bytearray()
    for i, c in enumerate(chunks):
        head = struct.pack("<8I", UF2_MAGIC0, UF2_MAGIC1, UF2_FLAG_FAMILY, base + 256 * i, 256, i, len(chunks), family)
        body = c.ljust(476, b"\0")
        out += head + body + struct.pack("<I", UF2_MAGIC_END)
    return bytes(out)


def enter_bootsel(port: str) -> None:
    """Ask a running MicroPython board to reboot into BOOTSEL (protocol first, raw REPL as fallback)."""
    from .device import Device, DeviceError, ProtocolTimeout
    from .rawrepl import RawRepl
    from .transport import SerialTransport, TransportError

    t = SerialTransport(port)
    try:
        try:
            Device(t, owns_transport=False, timeout=1.5).bootloader()
            return
        except (ProtocolTimeout, DeviceError):
            pass
        r = RawRepl(t)
        r.enter()
        # The board drops off USB while executing this: no reply is expected.
        t.write(b"import machine\r\nmachine.bootloader()\x04")
        time.sleep(0.2)
    except TransportError:
        pass  # the port vanished under us: that is what bootloader() does
    finally:
        t.close()


def wait_for_drive(timeout: float = 10.0, before: set[Path] | None = None,
                   roots: list[Path] | None = None) -> Drive:
    """Wait for a (new) BOOTSEL drive."""
    before = before or set()
    deadline = time.monotonic() + timeout
    while True:
        for d in find_drives(roots):
            if d.path.resolve() not in before:
                return d
        if time.monotonic() >= deadline:
            raise Uf2Error(f"no RPI-RP2 BOOTSEL drive appeared within {timeout:.0f} s (hold BOOTSEL while plugging "
                           f"in, or check that the drive gets mounted)")
        time.sleep(0.1)


def wait_for_port(port: str | None = None, timeout: float = 15.0, before: set[str] | None = None,
                  finder: Callable[[], list[str]] | None = None) -> str:
    """Wait for the board's serial port: `port` itself to re-appear, or a new MicroPython port not in `before`."""
    from .transport import list_ports

    deadline = time.monotonic() + timeout
    before = before or set()
    while True:
        if port is not None:
            if os.path.exists(port) or "://" in port:
                return port
        else:
            current = finder() if finder else [p["port"] for p in list_ports() if p["micropython"]]
            new = [p for p in current if p not in before]
            if new:
                return new[0]
        if time.monotonic() >= deadline:
            raise Uf2Error(f"the serial port {'(' + port + ') ' if port else ''}did not come back within "
                           f"{timeout:.0f} s after flashing")
        time.sleep(0.1)


def copy_to_drive(uf2_file: Path, drive: Drive) -> None:
    dest = drive.path / Path(uf2_file).name
    with open(uf2_file, "rb") as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 16)
        dst.flush()
        try:
            os.fsync(dst.fileno())
        except OSError:
            pass  # the drive may vanish the instant the last block lands: that means it is flashing


def install(uf2_file: Path, port: str | None = None, drive: Drive | None = None, drive_timeout: float = 10.0,
            port_timeout: float = 15.0, roots: list[Path] | None = None,
            progress: Callable[..., None] | None = None) -> str:
    """Flash MicroPython: get the board into BOOTSEL (if `port` is a running board), copy, wait for the port."""
    progress = progress or (lambda *a, **k: None)
    blocks = check_uf2(uf2_file)
    before_ports = set()
    if drive is None:
        existing = {d.path.resolve() for d in find_drives(roots)}
        if port is not None and os.path.exists(port):
            progress("stage", stage="bootsel")
            enter_bootsel(port)
            drive = wait_for_drive(drive_timeout, before=existing, roots=roots)
        else:
            drive = wait_for_drive(drive_timeout, roots=roots)
    progress("stage", stage="uf2", blocks=blocks, drive=str(drive.path))
    if port is None:
        from .transport import list_ports
        before_ports = {p["port"] for p in list_ports() if p["micropython"]}
    copy_to_drive(uf2_file, drive)
    progress("stage", stage="wait_port")
    return wait_for_port(port, port_timeout, before=before_ports)
