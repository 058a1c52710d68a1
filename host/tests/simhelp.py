"""Helpers for host tests on the virtual board."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

from picostim import deploy

DATA_FILES = ("/config.bin", "/levels.bin", "/audit.bin")


def vb_ready(vb):
    """A fresh virtual board whose REPL answers. Rarely (only seen on a heavily loaded host) a fresh virtual board
    stays silent on its port; that is a virtual-board start-up problem, not the host code under test here, so the
    board is power-cycled once, with its state printed for the virtual board's authors."""
    import sys

    from picostim.rawrepl import RawRepl, ReplError
    from picostim.target import wait_alive
    from picostim.transport import SerialTransport
    wait_alive(vb.port)
    try:
        with SerialTransport(vb.port) as t:
            RawRepl(t).enter(timeout=8)
    except ReplError as e:
        print(f"virtual board silent at start ({e}); state={getattr(vb, '_child_state', '?')} "
              f"proc={getattr(getattr(vb, '_proc', None), 'returncode', '?')}; power-cycling once", file=sys.stderr)
        vb.reset()
        wait_alive(vb.port)
    return vb


def app_files(flash_dir: Path) -> dict:
    """Hashes of everything on the virtual flash except the data the firmware writes at run time."""
    out = {}
    for p in sorted(Path(flash_dir).rglob("*")):
        if p.is_file():
            rel = "/" + str(p.relative_to(flash_dir))
            if rel not in DATA_FILES and not rel.startswith(tuple(d + ".tmp" for d in DATA_FILES)):
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def expected_files(board: str, firmware_dir=None) -> dict:
    image = deploy.build_image(board, firmware_dir)
    image[deploy.MANIFEST] = deploy.make_manifest(image, deploy.firmware_version(firmware_dir), board)
    return {p: hashlib.sha256(d).hexdigest() for p, d in image.items()}


def wait_state(dev, states, timeout=20.0) -> dict:
    end = time.monotonic() + timeout
    st = dev.status()
    while st.get("state") not in states and time.monotonic() < end:
        time.sleep(0.1)
        st = dev.status()
    return st


def wait_settled(dev, timeout=30.0) -> dict:
    """Running at the target amplitude (the device ramps increases, S8)."""
    end = time.monotonic() + timeout
    last = None
    while True:
        st = dev.status()
        if st.get("state") == "running" and st.get("setpoint_ua") == st.get("target_ua"):
            return st
        # (a level above the unit's cap bound: the setpoint settles at the bound, below the target)
        if st.get("state") == "running" and st.get("setpoint_ua") == last:
            return st
        last = st.get("setpoint_ua") if st.get("state") == "running" else None
        if time.monotonic() > end:
            raise AssertionError(f"device did not settle at its target: {st}")
        time.sleep(0.1)


def measured_amp_ua(cap) -> float:
    amps = [abs(a) for p in cap.active_pulses() if not p.partial for a in p.amp_ua]
    return sum(amps) / len(amps) if amps else 0.0
