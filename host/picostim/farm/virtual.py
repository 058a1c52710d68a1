"""Virtual benches for a farm on one machine: each is a virtual board (flashed with the current firmware) whose USB
serial port is a pty, plus its virtual rig served on a second pty (sim.rigpty). Both are serial devices, so a
labgrid exporter serves them through ser2net exactly like a real DUT and rig Pico.

ser2net only serves paths under /dev/, so the stable links live in a private directory under /dev/shm: the DUT
link follows the board's pty across resets (the board re-creates its pty like USB re-enumerates), and ser2net
resolves it again for every connection.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..hil.bench import DEFAULT_BOARD, DEFAULT_LOAD, provision_flash
from .benches import exporter_config, place_matches
from .coordinator import Coordinator, FarmError

LINK_PARENT = "/dev/shm"


def serial_links(vb, directory) -> tuple[str, object]:
    """Give a running virtual board the serial face of a real bench: `directory`/dut, a stable link to its USB
    port, and `directory`/rig, its rig served on a pty (RigSerialPort; close it when done). Both are serial
    devices ser2net (labgrid's exporter) can serve when `directory` is under /dev/ (e.g. /dev/shm/...)."""
    from ..sim.rigpty import RigSerialPort
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dut = directory / "dut"
    if dut.is_symlink():
        dut.unlink()
    os.symlink(vb.port, dut)
    return str(dut), RigSerialPort(vb.rig, link=str(directory / "rig"))


class VirtualBench:
    """One virtual bench: `entry` is its bench-list entry (name, dut, rig, board)."""

    def __init__(self, name: str, link_dir: Path, board: str = DEFAULT_BOARD, load: str = DEFAULT_LOAD,
                 clock: str = "model", seed: int = 0):
        from ..sim import VirtualBoard
        self.name = name
        self.board = board
        # a unit with its own parts (tolerances, from the seed), calibrated on its bench as the station leaves it
        self.vb = VirtualBoard(board=board, load=load, clock=clock, seed=seed, rig_port=None, unit_seed=1000 + seed)
        self.rig_port = None
        try:
            self.vb.start()
            provision_flash(self.vb.flash_dir, board)
            self.vb.reset()
            self._calibrate(load)
            self.dut_link, self.rig_port = serial_links(self.vb, Path(link_dir) / name)
        except BaseException:
            self.close()
            raise

    def _calibrate(self, load):
        from ..calibration import calibrate
        from ..device import Device
        from ..target import wait_alive
        wait_alive(self.vb.port)
        with Device(self.vb.port, timeout=10) as dev:
            dev.ensure_app(timeout=30)
            calibrate(dev, self.vb.rig, operator="farm")
        self.vb.rig.set_load(load)

    @property
    def entry(self) -> dict:
        return {"name": self.name, "dut": self.dut_link, "rig": self.rig_port.link, "board": self.board,
                "location": f"virtual bench {self.name} ({self.board})"}

    def close(self) -> None:
        if self.rig_port is not None:
            self.rig_port.close()
            self.rig_port = None
        if self.vb is not None:
            self.vb.close()
            self.vb = None


class VirtualFarm:
    """N virtual benches on this machine, their exporter configuration and (optionally) a labgrid exporter for them,
    with one place per bench on the coordinator. Close it to stop everything it started."""

    def __init__(self, count: int, prefix: str = "vbench-", board: str = DEFAULT_BOARD, load: str = DEFAULT_LOAD,
                 clock: str = "model", config_path: str | None = None, coordinator: str | None = None,
                 exporter_name: str | None = None, hostname: str | None = None, echo=None):
        if count < 1:
            raise FarmError("a farm needs at least one bench")
        self.echo = echo or (lambda s: None)
        self.benches: list[VirtualBench] = []
        self.exporter = None
        self.exporter_name = exporter_name or f"{prefix.rstrip('-_.') or 'picostim'}-exporter"
        if not os.path.isdir(LINK_PARENT):
            raise FarmError(f"{LINK_PARENT} is missing: virtual benches need Linux (ser2net serves /dev/ paths only)")
        self.link_dir = Path(tempfile.mkdtemp(prefix="picostim-farm-", dir=LINK_PARENT))
        self.config_path = Path(config_path) if config_path else self.link_dir / "exporter.yaml"
        try:
            for i in range(count):
                b = VirtualBench(f"{prefix}{i + 1}", self.link_dir, board=board, load=load, clock=clock, seed=i)
                self.benches.append(b)
                self.echo(f"bench={b.name} board={b.board} dut={b.dut_link} rig={b.rig_port.link}")
            self.config_path.write_text(exporter_config([b.entry for b in self.benches]))
            self.bench_list = self.link_dir / "benches.json"
            self.bench_list.write_text(json.dumps([b.entry for b in self.benches], indent=1))
            self.echo(f"exporter-config={self.config_path}")
            self.echo(f"bench-list={self.bench_list}")
            if coordinator:
                self.start_exporter(coordinator, hostname)
                self.add_places(coordinator)
        except BaseException:
            self.close()
            raise

    def start_exporter(self, coordinator: str, hostname: str | None = None, timeout_s: float = 60.0) -> None:
        """Run labgrid's exporter for these benches and wait until the coordinator lists their resources."""
        exe = shutil.which("labgrid-exporter", path=os.path.dirname(sys.executable) + os.pathsep
                           + os.environ.get("PATH", ""))
        if not exe:
            raise FarmError("labgrid-exporter not found; run `make setup`")
        if not (shutil.which("ser2net") or os.path.exists("/usr/sbin/ser2net")):
            raise FarmError("ser2net is not installed (Debian: apt-get install ser2net); labgrid's exporter needs it")
        cmd = [exe, "-c", coordinator, "-n", self.exporter_name]
        if hostname:
            cmd += ["--hostname", hostname]
        cmd.append(str(self.config_path))
        self._exporter_log = open(self.link_dir / "exporter.log", "wb")
        self.exporter = subprocess.Popen(cmd, stdout=self._exporter_log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.echo(f"exporter={self.exporter_name} pid={self.exporter.pid} log={self.link_dir / 'exporter.log'}")
        deadline = time.monotonic() + timeout_s
        want = {b.name for b in self.benches}
        with Coordinator(coordinator) as c:
            while True:
                if self.exporter.poll() is not None:
                    raise FarmError(f"labgrid-exporter exited with {self.exporter.returncode}: {self.exporter_tail()}")
                c.sync()
                groups = c._session.resources.get(self.exporter_name, {})
                if want <= {g for g, res in groups.items() if res}:
                    return
                if time.monotonic() > deadline:
                    raise FarmError(f"the coordinator at {coordinator} lists no resources of exporter "
                                    f"{self.exporter_name} after {timeout_s:.0f} s")
                time.sleep(0.2)

    def exporter_tail(self, lines: int = 3) -> str:
        try:
            text = (self.link_dir / "exporter.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def add_places(self, coordinator: str) -> None:
        """One place per bench (named after it, tagged with its board), matching this exporter's dut and rig."""
        with Coordinator(coordinator) as c:
            for b in self.benches:
                c.ensure_place(b.name, place_matches(self.exporter_name, b.name), {"board": b.board})
                self.echo(f"place={b.name}")

    def close(self) -> None:
        if self.exporter is not None:
            if self.exporter.poll() is None:
                self.exporter.terminate()       # the exporter stops its ser2net children on the way out
                try:
                    self.exporter.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.exporter.pid, 9)
                    self.exporter.wait(5)
            self.exporter = None
            self._exporter_log.close()
        for b in self.benches:
            b.close()
        self.benches = []
        shutil.rmtree(self.link_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
