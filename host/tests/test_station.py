"""The production station on virtual units, recorded in SQLite and in a real PostgreSQL server: three units (one
with its electrodes open: FAIL with the reason), complete records, retests appended, read-back and yield, the
mismatched-board guard, and Ctrl-C in the middle leaving every unit idle and every record complete or absent."""
import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

import pgserver
from picostim.cli import main as cli
from picostim.device import Device
from picostim.sim import VirtualBoard
from picostim.unitdb import StoreError, open_store

BOARD = "handheld-home"
STEPS = ["flash", "calibrate", "selftest", "hil"]
pytestmark = pytest.mark.timeout(400)


PICOSTIM = str(__import__("pathlib").Path(sys.executable).with_name("picostim"))


def _station(*args, env=None):
    return subprocess.run([PICOSTIM, "station", *args], capture_output=True, text=True, timeout=300, env=env)


def _picostim(*args):
    r = CliRunner().invoke(cli, list(args))
    assert r.exit_code == 0, r.output
    return r.output


def _check_three(db, out):
    assert out.returncode == 1, out.stdout + out.stderr          # one unit failed
    with open_store(db) as store:
        recs = store.records()
        rows = store.measurement_rows()
    assert len(recs) == 3 and len({r["uid"] for r in recs}) == 3
    by_result = {r["result"] for r in recs}
    assert by_result == {"PASS", "FAIL"}
    for r in recs:
        for k in ("uid", "board", "bundle", "fw", "operator", "station", "started_utc", "ended_utc", "result"):
            assert r[k], (k, r)
        assert r["operator"] == "alice" and r["station"] == "line1-st2" and r["board"] == BOARD
        # calibration against the rig's reference resistor (every unit, the open one too: the reference resistor
        # replaces its electrodes while it calibrates): before/after tables, and after it every level in limits
        cal = r["calibration"]
        assert cal["status"].startswith("calibrated"), cal["status"]
        assert len(cal["before"]["points"]) == len(cal["after"]["points"]) == 5
        assert cal["after"]["summary"]["all_ok"] and cal["after"]["summary"]["device_all_ok"]
        assert cal["after"]["summary"]["worst_error_pct"] <= 1.0 < cal["before"]["summary"]["worst_error_pct"]
        assert cal["after"]["record"]["operator"] == "alice"
        cm = [m for m in r["measurements"] if m["phase"] == "calibrate"]
        assert len(cm) == 11 and all(m["outcome"] == "PASS" for m in cm), cm
        assert [s["name"] for s in r["steps"]] == STEPS
        assert r["started_utc"] < r["ended_utc"]
        assert r["selftest"]["checks"]
        assert all({"name", "value", "unit", "low", "high", "outcome"} <= set(m) for m in r["measurements"])
        assert len([m for m in rows if m["record_id"] == r["record_id"]]) == len(r["measurements"])  # complete
    fail = next(r for r in recs if r["result"] == "FAIL")
    assert fail["reason"].startswith("selftest:") and "output_path" in fail["reason"], fail["reason"]
    assert [s["outcome"] for s in fail["steps"]] == ["pass", "pass", "fail", "not run"]
    assert any(m["name"] == "measured_ohm" and m["outcome"] == "FAIL" for m in fail["measurements"])
    for ok in (r for r in recs if r["result"] == "PASS"):
        assert ok["reason"] == "" and [s["outcome"] for s in ok["steps"]] == ["pass", "pass", "pass", "pass"]
        hil = [m for m in ok["measurements"] if m["phase"].startswith("hil:")]
        assert len({m["phase"] for m in hil}) >= 6 and all(m["outcome"] == "PASS" for m in hil)
        st = next(m for m in ok["measurements"] if m["name"] == "measured_ohm")
        assert st["low"] == 1800 and st["high"] == 2200 and 1800 <= st["value"] <= 2200
    return recs


ARGS = ["--board", BOARD, "-p", "sim", "-p", "sim", "-p", "sim", "--sim-load", "2k", "--sim-load", "open",
        "--operator", "alice", "--station-id", "line1-st2"]


def test_station_three_units_sqlite_retest_and_read_back(tmp_path):
    db = str(tmp_path / "station.sqlite")
    out = _station(*ARGS, "--db", db)
    recs = _check_three(db, out)
    assert out.stdout.count("unit 2 sim") >= 4            # a progress line per unit and stage
    failed_uid = next(r["uid"] for r in recs if r["result"] == "FAIL")

    # retest: the same virtual unit (uid) with its load fixed now passes; the FAIL record stays as it was
    out = _station("--board", BOARD, "-p", "sim", "-p", "sim", "--sim-load", "2k", "--sim-load", "2k",
                   "--operator", "bob", "--db", db)
    assert out.returncode == 0, out.stdout + out.stderr
    with open_store(db) as store:
        again = store.records(uid=failed_uid)
    assert [r["result"] for r in again] == ["FAIL", "PASS"] and again[0] == next(r for r in recs
                                                                                 if r["uid"] == failed_uid)
    units = json.loads(_picostim("units", "list", "--db", db, "--json"))
    assert len(units) == 3 and {u["uid"]: u["records"] for u in units}[failed_uid] == 2
    shown = json.loads(_picostim("units", "show", failed_uid, "--db", db, "--json"))
    assert [r["operator"] for r in shown] == ["alice", "bob"]
    y = json.loads(_picostim("units", "yield", "--db", db, "--json"))
    assert y["units"] == 3 and y["records"] == 5 and y["first_pass"] == 2 and y["final_pass"] == 3
    assert y["failures_by_measurement"] == {"selftest.measured_ohm": 1, "selftest.output_path": 1}
    assert "first-pass yield 66.7 %" in _picostim("units", "yield", "--db", db)
    rows = list(csv.DictReader(io.StringIO(_picostim("units", "export", "--csv", "--db", db))))
    with open_store(db) as store:
        assert len(rows) == sum(len(r["measurements"]) for r in store.records())
    assert {r["outcome"] for r in rows if r["uid"] == failed_uid and r["name"] == "output_path"} == {"FAIL", "PASS"}
    assert len(json.loads(_picostim("units", "export", "--json", "--db", db))) == 5
    # append-only: the database itself refuses to change a record
    with sqlite3.connect(db) as c, pytest.raises(sqlite3.DatabaseError, match="append-only"):
        c.execute("UPDATE unit_records SET result='PASS'")
    r = CliRunner().invoke(cli, ["units", "show", "nosuchuid", "--db", db])
    assert r.exit_code == 1 and "no records" in r.output


@pytest.fixture(scope="module")
def pg():
    bindir = pgserver.binaries()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries are not installed (Debian package `postgresql`; .ci/run installs it)")
    server = pgserver.PgServer(bindir).start()
    yield server
    server.stop()


def test_station_three_units_postgresql(pg):
    out = _station(*ARGS, "--db", pg.url)
    recs = _check_three(pg.url, out)
    y = json.loads(_picostim("units", "yield", "--db", pg.url, "--json"))
    assert y["units"] == 3 and y["first_pass"] == 2
    import psycopg
    with psycopg.connect(pg.url) as c:
        assert c.execute("SELECT count(*) FROM unit_records").fetchone()[0] == 3
        assert c.execute("SELECT count(*) FROM unit_measurements").fetchone()[0] == sum(len(r["measurements"])
                                                                                       for r in recs)
        with pytest.raises(psycopg.Error, match="append-only"):
            c.execute("DELETE FROM unit_measurements")


def test_bad_databases_and_mismatched_board_refused(tmp_path):
    bad = tmp_path / "not.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError):
        open_store(bad)
    r = CliRunner().invoke(cli, ["units", "list", "--db", str(bad)])
    assert r.exit_code == 1 and "not a usable station database" in r.output
    r = CliRunner().invoke(cli, ["units", "list", "--db", str(tmp_path / "typo.sqlite")])
    assert r.exit_code == 1 and "no such station database" in r.output and not (tmp_path / "typo.sqlite").exists()
    r = CliRunner().invoke(cli, ["station", "--board", BOARD, "-p", "sim:handheld-pro", "--db", str(tmp_path / "x")])
    assert r.exit_code == 2 and "is a handheld-pro unit" in r.output
    assert not (tmp_path / "x").exists()
    r = CliRunner().invoke(cli, ["station", "--board", BOARD, "-p", "/dev/ttyACM7", "--db", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--rig" in r.output


def test_ctrl_c_mid_station_leaves_units_idle_and_records_whole(tmp_path):
    db = str(tmp_path / "station.sqlite")
    vbs = [VirtualBoard(board=BOARD, clock="model", seed=40 + i) for i in range(3)]
    try:
        for vb in vbs:
            vb.start()
        args = []
        for vb in vbs:
            args += ["-p", vb.port]
        for vb in vbs:
            args += ["--rig", vb.rig_address]
        p = subprocess.Popen([PICOSTIM, "station", "--board", BOARD, *args, "--db", db],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            seen.append(line)
            if " hil" in line:
                break
        assert any(" hil" in s for s in seen), "".join(seen)
        # interrupt while a unit's output is live: its HV_EN pin high (read from the model, not asked of the unit)
        deadline = time.monotonic() + 120
        while not any(getattr(vb.frontend, "lvl_hv", 0) for vb in vbs) and time.monotonic() < deadline:
            time.sleep(0.002)
        assert any(vb.frontend.lvl_hv for vb in vbs), "no unit's output came on during the HIL subset"
        p.send_signal(signal.SIGINT)
        rest, _ = p.communicate(timeout=120)
        out = "".join(seen) + rest
        assert p.returncode == 130, out
        assert "Traceback" not in out and "interrupted" in out
        for vb in vbs:                            # every unit idle, measured at its electrodes
            with Device(vb.port, timeout=10) as dev:
                st = dev.hello(timeout=15) and dev.status()
            if st["state"] != "idle":
                print(out, st, sep="\n")
            assert st["state"] == "idle", st
            cap = vb.rig.capture(0.3)
            assert cap.max_abs_ua < 1.0 and not cap.active_pulses()
        with open_store(db) as store:             # each record complete or absent
            recs = store.records()
            rows = store.measurement_rows()
        assert len(recs) < 3
        for r in recs:
            assert r["ended_utc"] and len([m for m in rows if m["record_id"] == r["record_id"]]) == \
                len(r["measurements"])
        with sqlite3.connect(db) as c:
            ids = {x[0] for x in c.execute("SELECT record_id FROM unit_records")}
            orphans = {x[0] for x in c.execute("SELECT record_id FROM unit_measurements")} - ids
        assert not orphans
    finally:
        for vb in vbs:
            vb.close()


def test_unit_carrying_another_board_is_refused_and_recorded_fail(tmp_path):
    """The station's flash keeps the reprovisioning guard: a handheld-pro unit on a handheld-home line is not
    flashed; its record (uid from its own hello) says what would have changed."""
    from picostim import deploy
    from picostim.transport import SerialTransport
    db = str(tmp_path / "station.sqlite")
    with VirtualBoard(board="handheld-pro", clock="model", seed=77) as vb:
        with SerialTransport(vb.port, open_timeout=30) as t:
            uid = deploy.deploy(t, "handheld-pro").hello["uid"]
        out = _station("--board", BOARD, "-p", vb.port, "--rig", vb.rig_address, "--db", db)
        assert out.returncode == 1, out.stdout + out.stderr
        with Device(vb.port, timeout=10) as dev:
            h = dev.hello(timeout=15)
        assert h["board"] == "handheld-pro" and h["cap_ua"] == 800
    with open_store(db) as store:
        (rec,) = store.records()
    assert rec["uid"] == uid and rec["result"] == "FAIL" and rec["reason"].startswith("flash: ")
    assert "cap 800 -> 400 uA" in rec["reason"] and "--reprovision" in rec["reason"]
    assert [s["outcome"] for s in rec["steps"]] == ["fail", "not run", "not run", "not run"]
