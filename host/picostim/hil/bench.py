"""A HIL bench: one DUT (a flashed board answering the picostim protocol) and one rig (the instrument).

`--dut sim[:board]` starts a VirtualBoard, provisions the firmware into its flash and connects a Device to its
pty; the rig is the virtual board's VirtualRig. `--dut PORT --rig ADDR` uses real hardware: the application is
deployed with picostim.deploy (only changed files) and the rig is a RigClient talking to the rig Pico.

The suite only ever talks to `bench.device` (the protocol, like a host would) and `bench.rig` (measurements at
the electrodes, fault injection, buttons); `bench.vb` is there for the few things only a virtual board can do
cheaply (e.g. provisioning a mutated firmware tree), and tests that use it skip on real hardware.
"""
from __future__ import annotations

from contextlib import contextmanager

import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import paths

DEFAULT_BOARD = "handheld-home"
DEFAULT_LOAD = "2k"
BOOT_TIMEOUT_S = 30.0
REPLY_TIMEOUT_S = 10.0   # a loaded CI host can slow the virtual board's replies; a real board answers in ms
DEFAULT_UNIT_SEED = 1


class BenchError(RuntimeError):
    pass


@dataclass(frozen=True)
class BenchSettings:
    dut: str = "sim"                   # "sim" or a serial port / pyserial URL
    board: str = DEFAULT_BOARD         # board profile (virtual board; expected board on real hardware)
    rig: str | None = "sim"            # "sim" or the rig's address
    load: str = DEFAULT_LOAD           # load selected before every test
    firmware_dir: str | None = None    # firmware tree to provision (default: the repo's firmware/)
    clock: str = "model"               # virtual board clock: model = deterministic, independent of host load
    seed: int = 0
    label: str = ""                    # bench name from a rigs file
    engine: str = "unix"               # virtual board engine: unix (models) or emu (MicroPython image in rp2040js)
    micropython: str | None = None     # the UF2 for engine emu
    bundle: str | None = None          # a firmware bundle file to provision a real DUT with (picostim station)
    lock_key_file: str | None = None   # the maker's line secret: a locked DUT is tested locked (issue 14)
    unit_seed: int | None = None       # virtual unit's parts (tolerances): $PICOSTIM_UNIT_SEED (default 1) + worker
    ideal: bool = False                # virtual unit with ideal parts ($PICOSTIM_IDEAL=1, `picostim hil --ideal`)
    calibrate: bool = True             # calibrate a virtual unit with tolerances against the rig when it opens

    @property
    def is_sim(self) -> bool:
        return self.dut == "sim"

    def replace(self, **kw) -> "BenchSettings":
        return replace(self, **kw)

    @classmethod
    def from_options(cls, dut=None, rig=None, load=None, rigs_file=None, worker_id=None) -> "BenchSettings":
        entry = {}
        if rigs_file:
            entry = _rigs_entry(rigs_file, worker_id)
            dut = dut if dut not in (None, "") and entry.get("dut") is None else entry.get("dut", dut)
            rig = entry.get("rig", rig)
            load = load or entry.get("load")
        dut = dut or os.environ.get("PICOSTIM_DUT") or "sim"
        board = entry.get("board") or DEFAULT_BOARD
        if dut.startswith("sim"):
            if ":" in dut:
                board = dut.split(":", 1)[1] or DEFAULT_BOARD
            dut = "sim"
            rig = rig or "sim"
            if rig not in ("sim", "sim-proto"):
                raise BenchError("a virtual DUT is measured by the virtual rig: use --rig sim (in process) or "
                                 "--rig sim-proto (over the rig protocol, as a real rig is reached)")
        elif not rig:
            raise BenchError(f"DUT {dut} is real hardware: give --rig ADDR (the rig Pico's port)")
        from .. import boards
        boards.path_of(board)  # unknown board -> clear error now, not in the middle of a test
        wid = 0
        if worker_id and worker_id.startswith("gw") and worker_id[2:].isdigit():
            wid = int(worker_id[2:])
        from ..sim import engine_from_env
        # each worker's virtual unit is another unit (its own part values): the suite runs over several seeds
        base = int(os.environ.get("PICOSTIM_UNIT_SEED") or DEFAULT_UNIT_SEED)
        return cls(dut=dut, board=board, rig=rig, load=str(load or DEFAULT_LOAD), seed=wid,
                   label=str(entry.get("name", "")), engine=engine_from_env(),
                   micropython=os.environ.get("PICOSTIM_MICROPYTHON_UF2"), bundle=entry.get("bundle"),
                   lock_key_file=entry.get("lock_key_file") or os.environ.get("PICOSTIM_LOCK_KEY_FILE") or None,
                   unit_seed=base + wid, ideal=os.environ.get("PICOSTIM_IDEAL", "") in ("1", "true", "yes"))


def _rigs_entry(path, worker_id) -> dict:
    """A rigs file is a JSON list of benches: [{"name": "bench1", "dut": "/dev/ttyACM0", "rig": "/dev/ttyACM1",
    "board": "handheld-home"}, ...]. xdist worker gwN takes entry N (run with -n len(list))."""
    try:
        benches = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise BenchError(f"{path}: cannot read rigs file: {e}") from e
    if not isinstance(benches, list) or not benches or not all(isinstance(b, dict) for b in benches):
        raise BenchError(f"{path}: a rigs file is a non-empty JSON list of objects")
    idx = 0
    if worker_id and worker_id.startswith("gw") and worker_id[2:].isdigit():
        idx = int(worker_id[2:])
    if idx >= len(benches):
        raise BenchError(f"{path}: worker {worker_id} has no bench (only {len(benches)} listed); use -n {len(benches)}")
    return benches[idx]


def provision_flash(flash_dir: Path, board: str, firmware_dir=None) -> dict:
    """Write the application image (as picostim.deploy builds it, manifest included) straight into a virtual
    board's flash directory: the same bytes a deploy over the REPL would leave, in a fraction of the time."""
    from .. import deploy
    image = deploy.build_image(board, Path(firmware_dir) if firmware_dir else None)
    version = deploy.firmware_version(Path(firmware_dir) if firmware_dir else None)
    image[deploy.MANIFEST] = deploy.make_manifest(image, version, board)
    flash_dir = Path(flash_dir)
    fw_hash = deploy.sha256(image[deploy.MANIFEST])
    for dev_path, data in image.items():
        dst = flash_dir / dev_path.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
    return {"files": len(image), "version": version, "fw_hash": fw_hash}


def firmware_hash(board: str, firmware_dir=None) -> str:
    """sha256 of the manifest `picostim flash` writes for this tree (the manifest holds every file's sha256)."""
    from .. import deploy
    fw = Path(firmware_dir) if firmware_dir else None
    return deploy.sha256(deploy.make_manifest(deploy.build_image(board, fw), deploy.firmware_version(fw), board))


def wipe_flash(flash_dir: Path) -> None:
    for p in Path(flash_dir).iterdir():
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


@dataclass
class Bench:
    settings: BenchSettings
    device: object = None
    rig: object = None
    vb: object = None
    hello: dict = field(default_factory=dict)
    opened_s: float = 0.0
    fw_hash: str | None = None     # sha256 of the deployed manifest (which holds every file's sha256)
    signer: object = None          # picostim.auth.Signer with --lock-key-file: signs privileged requests

    def _signer(self):
        if self.settings.lock_key_file and self.signer is None:
            from ..auth import Signer
            self.signer = Signer.from_file(self.settings.lock_key_file)
        return self.signer
    calibration: dict | None = None   # picostim.calibration result of a virtual unit calibrated at open

    # -- life cycle ------------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, settings: BenchSettings) -> "Bench":
        b = cls(settings)
        t0 = time.monotonic()
        try:
            if settings.is_sim:
                b._open_sim()
            else:
                b._open_hw()
        except BaseException:
            b.close()
            raise
        b.opened_s = time.monotonic() - t0
        return b

    def _open_sim(self):
        from ..device import Device
        from ..sim import VirtualBoard
        s = self.settings
        self.vb = VirtualBoard(board=s.board, load=s.load, clock=s.clock, seed=s.seed, engine=s.engine,
                               micropython=s.micropython, unit_seed=s.unit_seed, ideal=s.ideal)
        self.vb.start()
        if self.vb.flash_dir is None:       # emu: the flash is the emulated chip's, installed as `picostim flash` does
            self.vb.provision(s.board, s.firmware_dir)
            self.fw_hash = firmware_hash(s.board, s.firmware_dir)
        else:
            self.fw_hash = provision_flash(self.vb.flash_dir, s.board, s.firmware_dir)["fw_hash"]
        self.vb.reset()
        self.rig = self.vb.rig
        if self.rig is None:
            raise BenchError("the virtual board has no rig model (host/picostim/sim/rig.py missing?)")
        if s.rig == "sim-proto":
            from ..sim.rigproto import RigClient
            if not self.vb.rig_address:
                raise BenchError("the virtual board serves no rig protocol address")
            self.rig = RigClient(self.vb.rig_address)
        from ..transport import SerialTransport
        # the USB port re-enumerates after the reset: wait for it like a host waits for a Pico
        self.device = Device(SerialTransport(self.vb.port, open_timeout=BOOT_TIMEOUT_S), owns_transport=True,
                             timeout=REPLY_TIMEOUT_S, signer=self._signer())
        self.hello = self.device.hello(timeout=BOOT_TIMEOUT_S)
        if s.calibrate and not s.ideal:
            self.calibrate_unit()
        if self.signer is not None:
            # with a key the virtual unit is locked as the station leaves a real one: the suite runs on a locked unit
            self.device.lock()
            self.hello = self.device.hello(timeout=BOOT_TIMEOUT_S)

    def calibrate_unit(self):
        """A unit with real parts is calibrated against the rig before the tests judge its amplitudes, as the
        production station does; the error before and after goes into every test's DUT identity (report)."""
        from ..calibration import calibrate
        res = calibrate(self.device, self.rig, operator="hil-bench", reference=self.settings.load)
        self.calibration = res.to_dict()
        self.rig_defaults()
        return res

    def _open_hw(self):
        from .. import deploy
        from ..device import Device
        from ..sim.rigproto import RigClient
        from ..transport import SerialTransport
        s = self.settings
        self.rig = RigClient(s.rig)
        t = SerialTransport(s.dut)
        # a locked DUT (production mode) has no REPL: unlock it with the key, provision, lock it again
        was_locked = deploy.unlock_for_flash(t, self._signer())
        if s.bundle:
            from ..bundle import read
            # a unit already carrying this bundle (the station just flashed it) answers in one round trip
            bundle = read(s.bundle)
            deploy.deploy(t, bundle=bundle, verify=False)
            self.fw_hash = deploy.sha256(bundle.manifest)
        else:
            deploy.deploy(t, s.board, Path(s.firmware_dir) if s.firmware_dir else None)
            self.fw_hash = firmware_hash(s.board, s.firmware_dir)
        if was_locked is not None:
            deploy.relock(t, self.signer)
        self.device = Device(t, owns_transport=True, timeout=REPLY_TIMEOUT_S, signer=self.signer)
        self.hello = self.device.hello(timeout=BOOT_TIMEOUT_S)

    def close(self):
        # The session ends with the output idle, whatever the last test left running (a real DUT outlives us).
        if self.device is not None:
            try:
                self._dut_idle()
            except Exception:  # noqa: BLE001 - best effort: a DUT that does not answer cannot be stopped from here
                pass
        for obj in (self.device,):
            try:
                if obj is not None:
                    obj.close()
            except Exception:
                pass
        if self.rig is not None and hasattr(self.rig, "close"):
            try:
                self.rig.close()
            except Exception:
                pass
        if self.vb is not None:
            self.vb.close()
        self.device = self.rig = self.vb = None

    # -- identity (lands in the test record) ---------------------------------------------------------------------
    def dut_identity(self) -> dict:
        h = self.hello or {}
        return {"uid": h.get("uid"), "fw": h.get("fw"), "bundle": h.get("bundle"), "proto": h.get("proto"),
                "board": h.get("board"), "locked": h.get("locked"), "key_id": h.get("key_id"),
                "cap_ua": h.get("cap_ua"), "port": "sim" if self.vb is not None else self.settings.dut,
                "virtual": self.vb is not None, "bench": self.settings.label or None,
                "firmware_dir": self.settings.firmware_dir, "fw_hash": self.fw_hash,
                **({"unit_seed": getattr(self.vb, "unit_seed", None), "ideal_parts": self.settings.ideal}
                   if self.vb is not None else {}),
                **({"calibration": {"uncalibrated": self.calibration["before_summary"],
                                    "calibrated": self.calibration["after_summary"],
                                    "cap_bound_ua": self.calibration["cap_bound_ua"],
                                    "passed": self.calibration["passed"]}} if self.calibration else {})}

    def rig_identity(self) -> dict:
        ident = {}
        try:
            ident = dict(self.rig.info())
            ident.pop("faults", None)
            ident.pop("now_s", None)
        except Exception as e:  # identity is informative; never fail a test over it
            ident = {"error": str(e)}
        ident.setdefault("addr", "sim" if self.vb is not None else self.settings.rig)
        ident.setdefault("id", ident.get("uid") or ident["addr"])
        return ident

    # -- per-test hygiene -------------------------------------------------------------------------------------------
    def prepare_for_test(self):
        """Known state before each test: rig faults cleared, default load, buttons released, DUT idle + no fault."""
        self.rig_defaults()
        try:
            self._dut_idle()
        except Exception:
            self.recover()

    def rig_defaults(self):
        self.rig.inject("clear")
        if self.rig.faults().get("charging"):
            self.rig.inject("charging", on=False)
        self.rig.set_load(self.settings.load)

    def _dut_idle(self):
        from ..device import DeviceError
        d = self.device
        d.telemetry_enable(False)
        for cmd in ("stop", "clear_fault"):
            try:
                d.request(cmd)
            except DeviceError:
                pass
        d.poll_events(0.05)

    def after_test(self):
        """A test may end (pass, fail, timeout, Ctrl-C) with the DUT stimulating: stop it before anything else."""
        try:
            self._dut_idle()
        except Exception:  # noqa: BLE001 - a DUT that stopped answering is recovered before the next test
            pass

    def recover(self):
        """The DUT stopped answering (a test hung, cut or reset it): reconnect, else power-cycle it."""
        try:
            self.reconnect()
        except Exception:
            self.power_cycle()
        self._dut_idle()

    @contextmanager
    def repl_access(self):
        """For a test that needs the REPL (Ctrl-C, soft reset, raw-REPL file edits): a locked DUT is unlocked with the
        key for the test and locked again after it, whatever the test did. Without the key a locked DUT skips."""
        d = self.device
        if not d.hello(timeout=BOOT_TIMEOUT_S).get("locked"):
            yield
            return
        if self.signer is None:
            import pytest
            pytest.skip("the DUT is locked and no --lock-key-file was given: this test needs its REPL")
        try:
            d.unlock(wait_s=BOOT_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001
            raise BenchError(f"unlock failed: {e}; noise {list(d.noise)[-6:]}; port {d.t.drain(quiet_s=0.5)[-300:]!r}; "
                             f"vb {getattr(self.vb, '_child_state', None)} repl {getattr(getattr(self.vb, 'repl', None), 'mode', None)}") from e
        try:
            yield
        finally:
            try:
                d.hello(timeout=BOOT_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - the test left the board at the REPL: back into the application
                d.ensure_app(timeout=BOOT_TIMEOUT_S)
            d.lock()
            self.hello = d.hello(timeout=BOOT_TIMEOUT_S)

    def power_cycle(self):
        """Power off and on through the rig (the DUT's supply switch), then wait for the application."""
        self.rig.inject("power_loss")
        self.rig.wait(0.05)
        self.rig.inject("power_restore")
        return self.reconnect()

    def reconnect(self) -> dict:
        """After a power cycle or reset the USB port goes away and comes back: reopen it, wait for `hello`."""
        self.device.t.reconnect(BOOT_TIMEOUT_S)
        self.device.poll_events()
        self.hello = self.device.hello(timeout=BOOT_TIMEOUT_S)
        return self.hello
