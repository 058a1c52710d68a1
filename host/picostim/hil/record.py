"""One JSON test record per HIL run: who was tested (DUT identity from `hello`, rig identity), every test with its
outcome, duration, retries and measurements (name, value, unit, limits, outcome) and captured waveforms.

Built on the pytest controller from test reports, so it works the same with pytest-xdist workers: everything a
worker learns travels in `report.user_properties` (see measure.PROP_*).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import uuid
from pathlib import Path

from .. import __version__
from . import measure as M

RECORD_NAME = "record.json"
SCHEMA = 1
INCOMPLETE = "incomplete"       # a test that started but never reported its result (the run was interrupted)
EXIT_INTERRUPTED = 2            # pytest.ExitCode.INTERRUPTED


def prop_value(value):
    """user_properties carry JSON text (so JUnit XML shows JSON, not Python reprs); older producers gave dicts."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _short(longrepr) -> str:
    if longrepr is None:
        return ""
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        return f"{crash.message} ({os.path.basename(str(crash.path))}:{crash.lineno})"
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # skip: (path, line, reason)
        return str(longrepr[2])
    text = str(longrepr)
    return text.strip().splitlines()[-1][:500] if text.strip() else ""


class RecordBuilder:
    def __init__(self, options: dict | None = None):
        self.run_id = uuid.uuid4().hex[:12]
        self.started = _now()
        self.finished = None
        self.options = dict(options or {})
        self.tests: dict[str, dict] = {}
        self.duts: dict[str, dict] = {}
        self.rigs: dict[str, dict] = {}
        self.exitstatus = None

    def _entry(self, nodeid: str) -> dict:
        e = self.tests.get(nodeid)
        if e is None:
            e = self.tests[nodeid] = {
                # a test passes only when its call phase reports a pass; until then it did not finish
                "nodeid": nodeid, "outcome": INCOMPLETE, "duration_s": 0.0, "retries": 0, "retry_limit": 0,
                "attempts": [], "measurements": [], "waveforms": [], "message": "", "worker": None, "dut": None,
            }
        return e

    def add_report(self, report) -> None:
        """Feed every pytest TestReport (setup, call, teardown) here."""
        e = self._entry(report.nodeid)
        e["duration_s"] = round(e["duration_s"] + float(getattr(report, "duration", 0.0) or 0.0), 6)
        worker = getattr(getattr(getattr(report, "node", None), "gateway", None), "id", None)  # set by xdist
        if worker:
            e["worker"] = worker
        for key, value in getattr(report, "user_properties", ()) or ():
            if key in M.PROPS:
                value = prop_value(value)
            if report.when != "call" and key in (M.PROP_MEASUREMENT, M.PROP_WAVEFORM, M.PROP_ATTEMPT):
                continue  # user_properties accumulate over phases; read measurements once, from the call phase
            if key == M.PROP_MEASUREMENT:
                e["measurements"].append(value)
            elif key == M.PROP_WAVEFORM:
                e["waveforms"].append(value)
            elif key == M.PROP_ATTEMPT:
                e["attempts"].append(value)
                e["retry_limit"] = max(e["retry_limit"], value.get("limit", 0))
            elif key == M.PROP_DUT and isinstance(value, dict):
                e["dut"] = value.get("uid") or value.get("port")      # which DUT ran this test
                self.duts.setdefault(str(value.get("uid") or value.get("port")), value)
            elif key == M.PROP_RIG and isinstance(value, dict):
                self.rigs.setdefault(str(value.get("id") or value.get("addr")), value)
            elif key == M.PROP_PLACE:
                e["place"] = value
        e["retries"] = max(0, len(e["attempts"]) - 1)
        if report.failed:
            e["outcome"] = "error" if report.when != "call" else "failed"
            e["message"] = e["message"] or _short(report.longrepr)
        elif report.skipped and e["outcome"] in (INCOMPLETE, "passed"):
            e["outcome"] = "skipped"
            e["message"] = _short(report.longrepr)
        elif report.when == "call" and report.passed and e["outcome"] == INCOMPLETE:
            e["outcome"] = "passed"

    def finish(self, exitstatus=None) -> dict:
        self.finished = _now()
        self.exitstatus = int(exitstatus) if exitstatus is not None else None
        return self.as_dict()

    def summary(self) -> dict:
        s = {"total": len(self.tests), "passed": 0, "failed": 0, "error": 0, "skipped": 0, INCOMPLETE: 0, "retried": 0,
             "measurements": 0, "measurements_failed": 0}
        for e in self.tests.values():
            s[e["outcome"]] = s.get(e["outcome"], 0) + 1
            s["retried"] += 1 if e["retries"] else 0
            s["measurements"] += len(e["measurements"])
            s["measurements_failed"] += sum(1 for m in e["measurements"] if m.get("outcome") == M.FAIL)
        return s

    def outcome(self, s: dict | None = None) -> str:
        """INCOMPLETE when the run was interrupted or a test never finished (whatever the others did), else PASS
        only when every test that ran passed."""
        s = s or self.summary()
        if self.exitstatus == EXIT_INTERRUPTED or s[INCOMPLETE]:
            return "INCOMPLETE"
        return "PASS" if s["failed"] == 0 and s["error"] == 0 and s["total"] else "FAIL"

    def as_dict(self) -> dict:
        s = self.summary()
        t0 = _dt.datetime.fromisoformat(self.started)
        t1 = _dt.datetime.fromisoformat(self.finished) if self.finished else _dt.datetime.now(_dt.timezone.utc)
        return {
            "schema": SCHEMA,
            "kind": "picostim-hil-record",
            "run_id": self.run_id,
            "started": self.started,
            "finished": self.finished,
            "duration_s": round((t1 - t0).total_seconds(), 3),
            "outcome": self.outcome(s),
            "exitstatus": self.exitstatus,
            "host": {"picostim": __version__, "python": platform.python_version(), "platform": platform.platform(),
                     "node": platform.node()},
            "options": self.options,
            "duts": list(self.duts.values()),
            "rigs": list(self.rigs.values()),
            "summary": s,
            "tests": list(self.tests.values()),
        }

    def write(self, directory) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        p = d / RECORD_NAME
        tmp = p.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.as_dict(), indent=1, default=str))
        os.replace(tmp, p)
        return p


def load(path) -> dict:
    """Read a record written by RecordBuilder.write (raises ValueError on anything that is not one)."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable HIL record: {e}") from e
    if not isinstance(rec, dict) or rec.get("kind") != "picostim-hil-record" or rec.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a picostim HIL record (schema {SCHEMA})")
    return rec
