"""Unit records of the production station: one record per unit tested, append-only, in SQLite (a file, the
default) or PostgreSQL (a line database shared by several stations, by URL; driver psycopg 3).

A record (picostim.station builds it) is written in ONE transaction -- the record row and all its measurement
rows -- so a database holds each record complete or not at all, whatever interrupts the station. Nothing is ever
updated or deleted (the tables refuse it): a retest of a uid appends a new record.

    store = open_store("station.sqlite")          # or "postgresql://user@host:5432/line"
    store.add(record); store.records(uid="...")
    yield_summary(store.records())
"""
from __future__ import annotations

import json
import threading
from collections import Counter, OrderedDict
from pathlib import Path

RESULTS = ("PASS", "FAIL")
RECORD_COLUMNS = ("record_id", "uid", "board", "bundle", "fw", "result", "reason", "operator", "station", "port",
                  "started_utc", "ended_utc", "calibration_before", "calibration_after", "selftest", "record_json")
MEASUREMENT_COLUMNS = ("record_id", "seq", "phase", "name", "value", "unit", "low", "high", "outcome")


class StoreError(RuntimeError):
    pass


_TABLES = """
CREATE TABLE IF NOT EXISTS unit_records (
  id {id_type},
  record_id TEXT NOT NULL UNIQUE,
  uid TEXT NOT NULL,
  board TEXT NOT NULL,
  bundle TEXT NOT NULL,
  fw TEXT NOT NULL,
  result TEXT NOT NULL CHECK (result IN ('PASS', 'FAIL')),
  reason TEXT NOT NULL,
  operator TEXT NOT NULL,
  station TEXT NOT NULL,
  port TEXT NOT NULL,
  started_utc TEXT NOT NULL,
  ended_utc TEXT NOT NULL,
  calibration_before TEXT,
  calibration_after TEXT,
  selftest TEXT NOT NULL,
  record_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS unit_records_uid ON unit_records (uid);
CREATE TABLE IF NOT EXISTS unit_measurements (
  record_id TEXT NOT NULL REFERENCES unit_records (record_id),
  seq INTEGER NOT NULL,
  phase TEXT NOT NULL,
  name TEXT NOT NULL,
  value DOUBLE PRECISION,
  unit TEXT NOT NULL,
  low DOUBLE PRECISION,
  high DOUBLE PRECISION,
  outcome TEXT NOT NULL,
  PRIMARY KEY (record_id, seq)
);
"""

_SQLITE_GUARDS = """
CREATE TRIGGER IF NOT EXISTS unit_records_append_only_u BEFORE UPDATE ON unit_records
  BEGIN SELECT RAISE(ABORT, 'unit records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS unit_records_append_only_d BEFORE DELETE ON unit_records
  BEGIN SELECT RAISE(ABORT, 'unit records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS unit_measurements_append_only_u BEFORE UPDATE ON unit_measurements
  BEGIN SELECT RAISE(ABORT, 'unit records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS unit_measurements_append_only_d BEFORE DELETE ON unit_measurements
  BEGIN SELECT RAISE(ABORT, 'unit records are append-only'); END;
"""

_PG_GUARDS = """
CREATE OR REPLACE FUNCTION picostim_append_only() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'unit records are append-only'; END $$;
CREATE OR REPLACE TRIGGER unit_records_append_only BEFORE UPDATE OR DELETE ON unit_records
  FOR EACH ROW EXECUTE FUNCTION picostim_append_only();
CREATE OR REPLACE TRIGGER unit_measurements_append_only BEFORE UPDATE OR DELETE ON unit_measurements
  FOR EACH ROW EXECUTE FUNCTION picostim_append_only();
"""


def _num(v):
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    return None


def _json_or_null(v):
    return None if v is None else json.dumps(v, sort_keys=True)


def check_record(rec: dict) -> None:
    """A record is complete before it is written: every field present and typed."""
    for k in ("record_id", "uid", "board", "bundle", "fw", "result", "reason", "operator", "station", "port",
              "started_utc", "ended_utc"):
        if not isinstance(rec.get(k), str):
            raise StoreError(f"unit record: {k} missing or not text")
    if rec["result"] not in RESULTS:
        raise StoreError(f"unit record: result {rec['result']!r} is not PASS or FAIL")
    if not isinstance(rec.get("selftest"), dict) or not isinstance(rec.get("measurements"), list):
        raise StoreError("unit record: selftest or measurements missing")
    cal = rec.get("calibration")
    if not isinstance(cal, dict) or "before" not in cal or "after" not in cal:
        raise StoreError("unit record: calibration before/after missing")


class UnitStore:
    """Base: the SQL is the same for both engines; subclasses connect and name their placeholder."""
    placeholder = "?"
    url = ""

    def __init__(self):
        self._lock = threading.Lock()

    def _sql(self, text: str) -> str:
        return text.replace("?", self.placeholder)

    def add(self, rec: dict) -> None:
        """Write one record and its measurements in one transaction (all or nothing)."""
        check_record(rec)
        cal = rec["calibration"]
        row = (rec["record_id"], rec["uid"], rec["board"], rec["bundle"], rec["fw"], rec["result"], rec["reason"],
               rec["operator"], rec["station"], rec["port"], rec["started_utc"], rec["ended_utc"],
               _json_or_null(cal.get("before")), _json_or_null(cal.get("after")),
               json.dumps(rec["selftest"], sort_keys=True), json.dumps(rec, sort_keys=True))
        ms = [(rec["record_id"], i, str(m.get("phase", "")), str(m["name"]), _num(m.get("value")),
               str(m.get("unit") or ""), _num(m.get("low")), _num(m.get("high")), str(m.get("outcome")))
              for i, m in enumerate(rec["measurements"])]
        ins_r = self._sql(f"INSERT INTO unit_records ({', '.join(RECORD_COLUMNS)}) VALUES "
                          f"({', '.join('?' * len(RECORD_COLUMNS))})")
        ins_m = self._sql(f"INSERT INTO unit_measurements ({', '.join(MEASUREMENT_COLUMNS)}) VALUES "
                          f"({', '.join('?' * len(MEASUREMENT_COLUMNS))})")
        with self._lock:
            self._write(ins_r, row, ins_m, ms)

    def records(self, uid: str | None = None) -> list[dict]:
        """Every record (oldest first), or a uid's."""
        q = "SELECT record_json FROM unit_records" + (" WHERE uid = ?" if uid else "") + " ORDER BY id"
        with self._lock:
            rows = self._query(self._sql(q), (uid,) if uid else ())
        return [json.loads(r[0]) for r in rows]

    def measurement_rows(self) -> list[dict]:
        q = ("SELECT r.uid, r.board, r.bundle, r.result, r.started_utc, r.station, r.operator, m.record_id, m.seq, "
             "m.phase, m.name, m.value, m.unit, m.low, m.high, m.outcome FROM unit_measurements m JOIN unit_records r "
             "ON r.record_id = m.record_id ORDER BY r.id, m.seq")
        cols = ("uid", "board", "bundle", "result", "started_utc", "station", "operator", "record_id", "seq", "phase",
                "name", "value", "unit", "low", "high", "outcome")
        with self._lock:
            rows = self._query(q, ())
        return [dict(zip(cols, r)) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SqliteStore(UnitStore):
    def __init__(self, path):
        super().__init__()
        import sqlite3
        self.url = str(path)
        self._sqlite3 = sqlite3
        try:
            self._db = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_TABLES.format(id_type="INTEGER PRIMARY KEY AUTOINCREMENT") + _SQLITE_GUARDS)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{path}: not a usable station database: {e}") from e

    def _write(self, ins_r, row, ins_m, ms):
        c = self._db
        try:
            c.execute("BEGIN IMMEDIATE")
            c.execute(ins_r, row)
            c.executemany(ins_m, ms)
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise

    def _query(self, q, args):
        return self._db.execute(q, args).fetchall()

    def _close(self):
        self._db.close()


class PostgresStore(UnitStore):
    placeholder = "%s"

    def __init__(self, url: str):
        super().__init__()
        try:
            import psycopg
        except ImportError as e:
            raise StoreError("PostgreSQL needs the psycopg driver: pip install 'picostim[postgres]'") from e
        self.url = url
        self._psycopg = psycopg
        try:
            self._db = psycopg.connect(url, autocommit=True, connect_timeout=10)
            with self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(727274)")   # two stations creating the schema
                for stmt in (_TABLES.format(id_type="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
                             + _PG_GUARDS).split(";\n"):
                    if stmt.strip():
                        self._db.execute(stmt)
        except psycopg.Error as e:
            raise StoreError(f"PostgreSQL {_redact(url)}: {e}".strip()) from e

    def _write(self, ins_r, row, ins_m, ms):
        with self._db.transaction():
            self._db.execute(ins_r, row)
            with self._db.cursor() as cur:
                cur.executemany(ins_m, ms)

    def _query(self, q, args):
        return self._db.execute(q.replace("?", "%s"), args).fetchall()

    def _close(self):
        self._db.close()


def _redact(url: str) -> str:
    """The URL without its password (error messages end up in logs)."""
    from urllib.parse import urlsplit, urlunsplit
    try:
        u = urlsplit(url)
        if u.password:
            u = u._replace(netloc=u.netloc.replace(":" + u.password + "@", ":***@"))
        return urlunsplit(u)
    except ValueError:
        return "(url)"


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def open_store(url_or_path, must_exist: bool = False) -> UnitStore:
    """A store by URL (postgresql://...) or SQLite path (or sqlite:///path). `must_exist`: reading back, a missing
    SQLite file is an error (a typo must not create an empty database)."""
    s = str(url_or_path)
    if is_postgres(s):
        return PostgresStore(s)
    if s.startswith("sqlite:///"):
        s = s[len("sqlite:///") - 1:] if s.startswith("sqlite:////") else s[len("sqlite:///"):]
    if must_exist and not Path(s).is_file():
        raise StoreError(f"{s}: no such station database")
    return SqliteStore(Path(s))


# -- read-back ---------------------------------------------------------------------------------------------------
def units(records: list[dict]) -> list[dict]:
    """One row per uid, in first-seen order: first and latest result, number of records."""
    out: "OrderedDict[str, dict]" = OrderedDict()
    for r in records:
        u = out.get(r["uid"])
        if u is None:
            u = out[r["uid"]] = {"uid": r["uid"], "board": r["board"], "records": 0, "first_result": r["result"]}
        u["records"] += 1
        u.update(last_result=r["result"], last_reason=r["reason"], bundle=r["bundle"], last_ended_utc=r["ended_utc"],
                 station=r["station"], board=r["board"])
    return list(out.values())


def yield_summary(records: list[dict]) -> dict:
    """First-pass yield (a unit's first record PASS), final yield (its latest), failures by measurement."""
    us = units(records)
    n = len(us)
    first = sum(1 for u in us if u["first_result"] == "PASS")
    final = sum(1 for u in us if u["last_result"] == "PASS")
    by_measurement: Counter = Counter()
    by_reason: Counter = Counter()
    for r in records:
        if r["result"] != "FAIL":
            continue
        failed = {f"{m.get('phase')}.{m['name']}" for m in r["measurements"] if m.get("outcome") == "FAIL"}
        by_measurement.update(failed)
        by_reason[r["reason"].split(":", 1)[0] or "?"] += 1
    return {"units": n, "records": len(records), "retests": len(records) - n,
            "first_pass": first, "first_pass_yield": first / n if n else None,
            "final_pass": final, "final_yield": final / n if n else None,
            "failures_by_measurement": dict(by_measurement.most_common()),
            "failures_by_step": dict(by_reason.most_common())}
