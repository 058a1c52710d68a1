"""The production station: flash, calibrate, self-test and HIL-test every unit, and write one unit record each.

Per unit, in its own thread (the work is serial I/O):
1. flash the bundle, every file hash-verified (`deploy.deploy(bundle=..., verify=True)`; another board's profile is
   refused unless `reprovision`);
2. calibrate -- `calibrate()` below (picostim.calibration against the rig's reference resistor): the unit's
   calibration record is written, and the record keeps the error tables before and after; a unit whose levels or
   own current reading stay out of limits after it FAILs here;
3. self-test against the fixture's known resistor (`Device.selftest(expect_ohm=...)`): every check and the measured
   impedance become measurements with limits;
4. the quick HIL subset (`hil_tests/ -m production`), run by pytest against this unit and its rig; every measurement
   of it lands in the record;
5. the record (uid, board, bundle, calibration, selftest, measurements, operator, station, start/end UTC, result and
   the reason of a FAIL) is written in one transaction (picostim.unitdb).

A step that fails ends the unit's run (later steps are recorded as not run) and the unit is FAIL. Every unit ends
idle: the output is stopped on every path. `Station.cancel()` (Ctrl-C) stops the units between steps and the HIL
run at once; an interrupted unit gets no record (each record complete or absent).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import paths

STEPS = ("flash", "calibrate", "selftest", "hil")
DEFAULT_EXPECT_OHM = 2000       # the fixture's known resistor (the virtual rig's "2k" load)
HIL_MARKER = "production"
HIL_TIMEOUT_S = 600.0           # the whole subset
HIL_TEST_TIMEOUT_S = 240        # one test (pytest-timeout), as `picostim hil`
IDLE_RETRY_S = 30.0             # making a unit idle is retried this long


class Cancelled(Exception):
    pass


class StepFailed(Exception):
    pass


@dataclass(frozen=True)
class UnitSpec:
    port: str                      # serial port / URL, or sim[:board] (a virtual unit with its virtual rig)
    rig: str | None = None         # the rig's address for a real unit
    sim_load: str = "2k"           # what is on a virtual unit's electrodes ("open": a broken unit/fixture)


@dataclass
class StationConfig:
    bundle: object                 # picostim.bundle.Bundle
    bundle_file: str               # the same bundle as a file (handed to the HIL run)
    operator: str
    station_id: str = field(default_factory=socket.gethostname)
    expect_ohm: int = DEFAULT_EXPECT_OHM
    tol_pct: int | None = None
    hil_marker: str = HIL_MARKER
    reprovision: bool = False
    signer: object = None          # picostim.auth.Signer (--key-file): lock each unit as the last step (issue 14)


def _kill_group(pgid: int, wait_s: float = 10.0) -> None:
    """SIGKILL a process group and wait until none of it is left (a killed process still holds its ports until it
    has exited; a unit is made idle only after that)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.01)


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def calibrate(port: str, rig: str | None, operator: str = "unknown",
              cancelled=None) -> tuple[dict | None, dict | None, str]:
    """Calibration step (the unit's serial port, its rig's address): returns (before, after, status), before/after
    as {"points": [...], "summary": {...}, ...} (picostim.calibration.Result). A unit that cannot be calibrated or
    stays out of limits raises StepFailed (the record still gets the tables, via the exception's `tables`)."""
    from .calibration import CalibrationCancelled, CalibrationError, calibrate as run
    from .device import Device
    from .sim.rigproto import RigClient
    if not rig:
        raise StepFailed("no rig for this unit (--rig ADDR): calibration needs its reference resistor")
    with Device(port, timeout=10) as dev, RigClient(rig) as rc:
        dev.ensure_app()
        try:
            res = run(dev, rc, operator=operator, cancelled=cancelled)
        except CalibrationCancelled:
            raise Cancelled() from None
        except CalibrationError as e:
            raise StepFailed(str(e)) from None
    d = res.to_dict()
    before = {"points": d["before"], "summary": d["before_summary"]}
    after = {"points": d["after"], "summary": d["after_summary"], "record": d["record"], "fit": d["fit"],
             "cap_bound_ua": d["cap_bound_ua"]}
    if not res.passed:
        e = StepFailed(res.reason)
        e.tables = (before, after)
        raise e
    s = d["after_summary"]
    return before, after, (f"calibrated: worst level error {s['worst_error_pct']:.2f} % (before "
                           f"{d['before_summary']['worst_error_pct']:.2f} %), device reading within "
                           f"{s['worst_device_error_ua']:.2f} uA of the rig")


ProgressFn = Callable[[int, str, str], None]


class Station:
    def __init__(self, cfg: StationConfig, store, progress: ProgressFn | None = None):
        self.cfg = cfg
        self.store = store
        self.progress = progress or (lambda i, stage, detail="": None)
        self._cancel = threading.Event()
        self._procs: set = set()
        self.idle_after: dict[int, str] = {}     # unit index -> output state read back at its end
        self._lock = threading.Lock()

    def cancel(self) -> None:
        """Stop every unit as soon as possible (the HIL runs now, other steps at their end)."""
        self._cancel.set()
        with self._lock:
            procs = list(self._procs)
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGINT)
            except (ProcessLookupError, PermissionError):
                pass

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    # -- many units ------------------------------------------------------------------------------------------------
    def run(self, units: list[UnitSpec]) -> list[dict]:
        """Test the units in parallel; returns one outcome per unit (the record, or {"result": "ABORTED"}).
        KeyboardInterrupt cancels the run and is re-raised once every unit is idle and every record is settled."""
        outcomes: list[dict | None] = [None] * len(units)
        threads = [threading.Thread(target=self._unit_thread, args=(i, u, outcomes), daemon=True,
                                    name=f"station-unit-{i}") for i, u in enumerate(units)]
        # Ctrl-C only marks the run cancelled: raised as KeyboardInterrupt anywhere in this loop (even between two
        # joins) it would end the process with the unit threads (daemons) mid-step and a unit's output left on
        sigint = threading.Event()
        in_main = threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGINT, lambda *_: sigint.set()) if in_main else None
        try:
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(0.1)
                if sigint.is_set() and not self.cancelled:
                    self.cancel()
        finally:
            if in_main:
                signal.signal(signal.SIGINT, old)
        if sigint.is_set():
            raise KeyboardInterrupt
        return [o or {"result": "ABORTED"} for o in outcomes]

    def _unit_thread(self, i: int, unit: UnitSpec, outcomes: list) -> None:
        try:
            outcomes[i] = self.test_unit(i, unit)
        except Cancelled:
            outcomes[i] = {"result": "ABORTED", "port": unit.port}
            self.progress(i, "aborted", "interrupted: no record written")
        except Exception as e:  # noqa: BLE001 - a unit's failure to be recorded must not stop the others
            outcomes[i] = {"result": "ERROR", "port": unit.port, "reason": f"{type(e).__name__}: {e}"}
            self.progress(i, "error", f"{type(e).__name__}: {e}")

    # -- one unit --------------------------------------------------------------------------------------------------
    def _check(self):
        if self._cancel.is_set():
            raise Cancelled()

    def test_unit(self, i: int, unit: UnitSpec) -> dict:
        from .target import open_target, slot_uid
        cfg = self.cfg
        b = cfg.bundle
        rec = {"record_id": uuid.uuid4().hex, "uid": "unknown", "board": b.board, "bundle": b.hash, "fw": b.fw,
               "port": unit.port, "operator": cfg.operator, "station": cfg.station_id, "started_utc": utc_now(),
               "ended_utc": "", "result": "FAIL", "reason": "", "expect_ohm": cfg.expect_ohm,
               "calibration": {"before": None, "after": None, "status": ""}, "selftest": {},
               "steps": [], "measurements": []}
        self._check()
        self.progress(i, "start", unit.port)
        # a virtual unit's identity (unique_id) follows its slot on the station: a retest in a slot is the same unit
        with open_target(unit.port, board=b.board, deploy_app=False, load=unit.sim_load, seed=i,
                         uid=slot_uid(i)) as tgt:
            rec["port"] = unit.port if tgt.vb is None else f"{unit.port} ({tgt.port})"
            rig = unit.rig if tgt.vb is None else tgt.vb.rig_address
            try:
                self._steps(i, tgt.port, rig, rec)
            finally:
                rec["rig_after"] = self._rig_defaults(rig)
                rec["idle_after"] = self.idle_after[i] = self._make_idle(tgt.port)
                if rec["idle_after"] != "idle":
                    self.progress(i, "NOT IDLE", f"output state after the run: {rec['idle_after']}")
        self._check()          # an interrupted unit is not recorded: its run is incomplete
        if rec["result"] == "PASS" and rec["idle_after"] != "idle":
            rec["result"], rec["reason"] = "FAIL", f"idle check: output state after the tests {rec['idle_after']}"
        rec["ended_utc"] = utc_now()
        self.store.add(rec)
        self.progress(i, rec["result"], rec["reason"] or f"uid {rec['uid']}")
        return rec

    def _steps(self, i: int, port: str, rig: str | None, rec: dict) -> None:
        steps = STEPS + ("lock",) if self.cfg.signer is not None else STEPS
        for name in steps:
            self._check()
            self.progress(i, name, "")
            t0 = time.monotonic()
            step = {"name": name, "outcome": "pass", "detail": ""}
            try:
                getattr(self, f"_step_{name}")(i, port, rig, rec, step)
            except Cancelled:
                raise
            except Exception as e:  # noqa: BLE001 - the failure is the record's reason
                if self._cancel.is_set():
                    raise Cancelled() from e
                step["outcome"] = "fail"
                step["detail"] = str(e) if isinstance(e, StepFailed) else f"{type(e).__name__}: {e}"
            step["seconds"] = round(time.monotonic() - t0, 3)
            rec["steps"].append(step)
            if step["outcome"] == "fail":
                rec["result"] = "FAIL"
                rec["reason"] = f"{name}: {step['detail']}"
                for rest in steps[steps.index(name) + 1:]:
                    rec["steps"].append({"name": rest, "outcome": "not run", "detail": f"{name} failed",
                                         "seconds": 0.0})
                return
        rec["result"] = "PASS"

    def _measure(self, rec, phase, name, value, unit="", low=None, high=None, outcome=None):
        if outcome is None:
            ok = isinstance(value, (int, float)) and (low is None or value >= low) and (high is None or value <= high)
            outcome = "PASS" if ok else "FAIL"
        rec["measurements"].append({"phase": phase, "name": name, "value": value, "unit": unit, "low": low,
                                    "high": high, "outcome": outcome})
        return outcome == "PASS"

    def _step_flash(self, i, port, rig, rec, step):
        from . import deploy
        from .transport import SerialTransport
        with SerialTransport(port) as t:
            first = deploy.quick_hello(t)        # the unit's identity even if flashing it is refused or fails
            if first and first.get("uid"):
                rec["uid"] = str(first["uid"])
            if first and first.get("locked"):       # a retest of a locked unit: unlocked here, locked again last
                deploy.unlock_for_flash(t, self.cfg.signer)
            r = deploy.deploy(t, bundle=self.cfg.bundle, verify=True, reprovision=self.cfg.reprovision)
        hello = r.hello or {}
        rec["uid"] = str(hello.get("uid") or rec["uid"])
        step["detail"] = (f"{len(r.written)} written, {len(r.removed)} removed, {r.unchanged} unchanged, "
                          f"every file verified")
        self._measure(rec, "flash", "bundle_reported", int(hello.get("bundle") == self.cfg.bundle.hash), "",
                      1, 1)
        if hello.get("bundle") != self.cfg.bundle.hash:
            raise StepFailed(f"the unit reports bundle {hello.get('bundle')!r} after flashing")

    def _step_lock(self, i, port, rig, rec, step):
        """The station's last step (issue 14): the unit stores its own key and keeps its USB port for the protocol;
        checked with a signed request."""
        from .device import Device
        with Device(port, timeout=5.0, signer=self.cfg.signer) as dev:
            dev.hello(timeout=15.0)
            st = dev.lock()
            h = dev.hello()
        self._measure(rec, "lock", "locked", int(bool(h.get("locked"))), "", 1, 1)
        self._measure(rec, "lock", "key_id_matches", int(h.get("key_id") == self.cfg.signer.key_id), "", 1, 1)
        step["detail"] = f"locked, key id {st.get('key_id')}"

    def _step_calibrate(self, i, port, rig, rec, step):
        try:
            before, after, status = calibrate(port, rig, operator=self.cfg.operator,
                                              cancelled=lambda: self.cancelled)
        except StepFailed as e:
            before, after = getattr(e, "tables", (None, None))
            rec["calibration"] = {"before": before, "after": after, "status": f"failed: {e}"}
            self._calibration_measurements(rec, before, after)
            raise
        rec["calibration"] = {"before": before, "after": after, "status": status}
        self._calibration_measurements(rec, before, after)
        step["detail"] = status

    def _calibration_measurements(self, rec, before, after):
        from .calibration import ACC_PCT, ACC_UA, DEV_PCT, DEV_UA, allowed
        if before:
            s = before["summary"]
            self._measure(rec, "calibrate", "uncalibrated_worst_error_pct", s.get("worst_error_pct"), "%",
                          outcome="PASS")
        for p in (after or {}).get("points", []):
            ref = p["applied_ua"] if p["bounded"] else p["target_ua"]
            lim = allowed(ref, ACC_PCT, ACC_UA)
            self._measure(rec, "calibrate", f"level_{p['target_ua']:g}ua", p["rig_ua"], "uA", ref - lim, ref + lim)
            dl = allowed(p["rig_ua"], DEV_PCT, DEV_UA)
            self._measure(rec, "calibrate", f"device_reading_{p['target_ua']:g}ua", p["device_error_ua"], "uA",
                          -dl, dl)

    def _step_selftest(self, i, port, rig, rec, step):
        from .device import Device
        with Device(port, timeout=10) as dev:
            dev.ensure_app()
            r = dev.selftest(expect_ohm=self.cfg.expect_ohm, tol_pct=self.cfg.tol_pct, timeout=15)
        r = {k: v for k, v in r.items() if k not in ("id", "ok")}
        rec["selftest"] = r
        lo, hi = (r.get("accept_ohm") or [None, None])[:2]
        checks = r.get("checks", [])
        for c in checks:
            self._measure(rec, "selftest", c["name"], int(bool(c["ok"])), "", 1, 1)
        self._measure(rec, "selftest", "measured_ohm", r.get("measured_ohm"), "ohm", lo, hi)
        if not r.get("passed"):
            bad = [f"{c['name']} ({c.get('detail')})" if c.get("detail") else c["name"] for c in checks if not c["ok"]]
            raise StepFailed("failed " + "; ".join(bad or ["(no failing check named)"]))
        step["detail"] = f"{r.get('measured_ohm')} ohm, accepted {lo}..{hi}"

    def _step_hil(self, i, port, rig, rec, step):
        if not rig:
            raise StepFailed("no rig for this unit (--rig ADDR)")
        with tempfile.TemporaryDirectory(prefix="picostim-station-") as d:
            rigs = Path(d) / "bench.json"
            rigs.write_text(json.dumps([{"name": f"station-{self.cfg.station_id}-{i}", "dut": port, "rig": rig,
                                         "board": self.cfg.bundle.board, "bundle": self.cfg.bundle_file}]))
            report = Path(d) / "report"
            cmd = [sys.executable, "-m", "pytest", str(paths.HIL_TESTS_DIR), "-m", self.cfg.hil_marker,
                   "--rigs-file", str(rigs), "--hil-report", str(report), "-p", "no:cacheprovider",
                   "--timeout", str(HIL_TEST_TIMEOUT_S), "-q", "--no-header", "-x"]
            with open(Path(d) / "pytest.log", "w+") as log:
                p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     cwd=d)
                with self._lock:
                    self._procs.add(p)
                try:
                    if self._cancel.is_set():
                        os.killpg(p.pid, signal.SIGINT)
                    rc = p.wait(HIL_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    _kill_group(p.pid)
                    p.wait()
                    raise StepFailed(f"HIL subset did not finish within {HIL_TIMEOUT_S:.0f} s")
                finally:
                    # pytest's own workers can outlive it after a Ctrl-C and start the output again after the unit
                    # was made idle: nothing of its process group may run on
                    _kill_group(p.pid)
                    with self._lock:
                        self._procs.discard(p)
                self._check()
                log.seek(0)
                tail = log.read()[-1500:]
            try:
                hil = json.loads((report / "record.json").read_text())
            except (OSError, ValueError):
                raise StepFailed(f"HIL subset wrote no record (pytest exit {rc}): {tail.strip()[-400:]}")
        failed = []
        for t in hil.get("tests", []):
            name = t["nodeid"].split("::", 1)[-1]
            for m in t.get("measurements", []):
                self._measure(rec, f"hil:{name}", m["name"], m.get("value"), m.get("unit") or "", m.get("low"),
                              m.get("high"), m.get("outcome"))
            if t["outcome"] in ("failed", "error"):
                failed.append(f"{name}: {t.get('message', '')}"[:300])
        n = hil.get("summary", {}).get("total", 0)
        rec["hil"] = {"tests": n, "summary": hil.get("summary"), "marker": self.cfg.hil_marker}
        if failed:
            raise StepFailed("; ".join(failed))
        if rc != 0 or n == 0:
            raise StepFailed(f"HIL subset: pytest exit {rc}, {n} tests: {tail.strip()[-400:]}")
        step["detail"] = f"{n} tests passed"

    def _rig_defaults(self, rig: str | None) -> str:
        """The fixture back to its resting state whatever a step was doing (an interrupted HIL test may have left
        the unit's power cut or a fault injected): power on, faults cleared, charger off; never raises."""
        if not rig:
            return "no rig"
        from .sim.rigproto import RigClient
        try:
            c = RigClient(rig, timeout=10)
            try:
                c.inject("power_restore")
                c.inject("clear")
                if c.faults().get("charging"):
                    c.inject("charging", on=False)
            finally:
                c.close()
            return "defaults"
        except Exception as e:  # noqa: BLE001
            return f"unknown ({type(e).__name__}: {e})"

    def _make_idle(self, port: str) -> str:
        """Stop the output whatever happened (the application restarted if it was interrupted); never raises.
        Retried until IDLE_RETRY_S: the port can still be held for a moment by an interrupted HIL process, or the
        unit be rebooting after a fault injection."""
        from .device import Device
        deadline = time.monotonic() + IDLE_RETRY_S
        while True:
            try:
                with Device(port, timeout=5) as dev:
                    dev.ensure_app(timeout=15)
                    dev.request("telemetry", on=False)
                    dev.stop()
                    st = dev.status()
                if st.get("state") == "idle" or time.monotonic() >= deadline:
                    return str(st.get("state"))
            except Exception as e:  # noqa: BLE001
                if time.monotonic() >= deadline:
                    return f"unknown ({type(e).__name__}: {e})"
            time.sleep(0.2)
