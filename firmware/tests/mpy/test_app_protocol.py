# The application's request handling on the unix port with recording stand-ins for machine/rp2: every bad
# request gets a coded error reply and leaves state, levels and the amplitude DAC untouched.
import json
import os
import machine
from mpytest import check, done, app_sandbox, Out

import config
import audit
import board as B
import pscodes as C

import time
d, BOARD = app_sandbox("psapp")

import app as A


out = Out()
a = A.App(BOARD, out)
a.audit = audit.Audit(audit.AUDIT_PATH)


def req(obj_or_bytes):
    line = obj_or_bytes if isinstance(obj_or_bytes, bytes) else json.dumps(obj_or_bytes).encode()
    # the line and its newline fed apart, as the device reads them (no 3 KB copy of a long test line in the harness)
    for item in a.reader.feed(line) + a.reader.feed(b"\n"):
        a.handle_line(item, 0)
    rs = [x for x in out.lines() if "ok" in x]
    return rs[-1] if rs else None


r = req({"id": 1, "cmd": "hello"})
check("hello", r["ok"] and r["cap_ua"] == 400 and r["levels_ua"] == [80, 160, 240, 320, 400] and
      r["config_status"] == "defaults" and "ems" in r["programs"], r)
r = req({"id": 2, "cmd": "start", "level": 2, "phase_us": 200, "gap_us": 100, "rate_hz": 50})
check("start", r["ok"] and r["phase_us"] == 200 and r["gap_us"] == 100 and abs(r["rate_hz"] - 50) < 1e-6, r)
import gc
gc.collect()
print("HEAP_LIVE_RUNNING", gc.mem_alloc(), "FREE", gc.mem_free())
state0 = req({"id": 3, "cmd": "status"})
iset_writes = a.amp.pwm.writes
bad = [
    b"\xff\xfe\xfd", b"{", b"[1,2]", b'{"id":1}', b"x" * 3000, b'{"id":4,"cmd":"bogus"}',
    b'{"id":5,"cmd":"set_level","level":"3"}', b'{"id":6,"cmd":"set_level","level":9}',
    b'{"id":7,"cmd":"set_level","level":2,"ua":401}', b'{"id":8,"cmd":"set_level","level":2,"ua":1e9}',
    b'{"id":9,"cmd":"levels_set","levels_ua":[80,160,240,320,401]}', b'{"id":10,"cmd":"levels_set","level":5,"ua":999}',
    b'{"id":11,"cmd":"levels_set","levels_ua":[80,160]}', b'{"id":12,"cmd":"start","level":1}',
    b'{"id":13,"cmd":"config_set","config":{"session_s":999999}}', b'{"id":14,"cmd":"config_set","config":5}',
    b'{"id":15,"cmd":"telemetry","rate_hz":0}', b'{"id":16,"cmd":"status","extra":1}',
    b'{"id":17,"cmd":"__init__"}', b'{"id":[],"cmd":"hello"}', b'{"id":18,"cmd":"levels_set","level":1,"ua":"80"}',
]
codes_seen = []
allok = True
for line in bad:
    r = req(line)
    if r is None or r["ok"] is not False or r.get("error") not in C.ERROR_CODES:
        allok = False
        print("bad reply for", line[:40], r)
    else:
        codes_seen.append(r["error"])
check("bad_requests_coded_errors", allok)
check("over_cap_code_used", codes_seen.count("over_cap") >= 3, codes_seen)
check("line_too_long_code", "line_too_long" in codes_seen)
state1 = req({"id": 19, "cmd": "status"})
same = all(state0[k] == state1[k] for k in ("state", "level", "target_ua", "setpoint_ua", "program"))
check("state_unchanged", same, (state0, state1))
check("iset_unchanged", a.amp.pwm.writes == iset_writes)
check("levels_unchanged", req({"id": 20, "cmd": "levels_get"})["levels_ua"] == [80, 160, 240, 320, 400])

r = req({"id": 21, "cmd": "levels_set", "level": 3, "ua": 230, "operator": "tech7"})
check("levels_set_one", r["ok"] and r["levels_ua"][2] == 230)
r = req({"id": 22, "cmd": "audit"})
e = r["entries"][-1]
check("audit_entry", e["operator"] == "tech7" and e["level"] == 3 and e["before_ua"] == 240 and e["after_ua"] == 230, e)
r = req({"id": 23, "cmd": "set_level", "level": 4, "ua": 300})
check("trial_ua", r["ok"] and r["target_ua"] == 300)
check("trial_not_persisted", req({"id": 24, "cmd": "levels_get"})["levels_ua"][3] == 320)
r = req({"id": 25, "cmd": "stop"})
check("stop", r["ok"] and r["state"] == "idle" and a.amp.applied_ua == 0)
r = req({"id": 26, "cmd": "start", "program": "ems", "level": 1})
check("start_program", r["ok"] and r["program"] == "ems" and r["burst_on_s"] == 2.0, r)
req({"id": 27, "cmd": "stop"})
r = req({"id": 28, "cmd": "selftest"})
check("selftest", r["ok"] and r["passed"], r)
r = req({"id": 29, "cmd": "config_set", "config": {"session_s": 600, "default_level": 2}})
check("config_set", r["ok"] and r["config"]["session_s"] == 600)
# a fresh App reads back what was persisted
b = A.App(BOARD, Out())
check("persisted", b.settings.status == "ok" and b.settings.levels[2] == 230 and b.settings.config["session_s"] == 600)
done()
