# Treatment zones (issue 17) on the unix port, the app: the zone bound at the amplitude choke point (judged on
# the ISET duty the fake PWM received, not on firmware variables), zone changes, and bad input changing nothing.
# Sweeps are exhaustive over zones x levels x programs, plus a seeded pseudo-random sweep of requests.
import gc
import json
import machine
import rp2
from mpytest import check, raises, done, app_sandbox, Out

import pscodes as C

d, BOARD = app_sandbox("pszones")

import app as A
import audit


# ---------------------------------------------------------------- the app: zone bound at the choke point
out = Out()
# zone logic on a profile without part tolerances: its cap bound is the cap itself (the bound for real parts,
# below the cap, is tested in test_hw_paths and test_calib)
BOARD.pop("tolerances", None)
a = A.App(BOARD, out)
a.audit = audit.Audit(audit.AUDIT_PATH)


def req(obj):
    del machine.log[:]  # (the fakes' logs of register writes and DMA channels would fill the heap over
    del rp2.made[:]     # hundreds of sessions)
    gc.collect()
    for item in a.reader.feed(json.dumps(obj).encode() + b"\n"):
        a.handle_line(item, 0)
    rs = [x for x in out.lines() if "ok" in x]
    return rs[-1] if rs else None


def iset_ua():
    """What the ISET DAC was last told, in uA (gain 1, offset 0 in this profile): duty x I_FS."""
    return a.amp.pwm.d * BOARD["analog"]["i_fs_ua"] // 65535


zt = req({"id": 1, "cmd": "zones"})
check("zones_cmd", zt["ok"] and [z["name"] for z in zt["zones"]] == ["face", "jawline", "periorbital", "neck",
                                                                        "near_ear"] and zt["zone"] == "face", zt)
limits = {z["name"]: z["limit_ua"] for z in zt["zones"]}
check("limits_resolved", limits == {"face": 400, "jawline": 400, "periorbital": 160, "neck": 200, "near_ear": 200},
      limits)
levels = BOARD["levels_ua"]
cap = BOARD["limits"]["cap_ua"]
viol = []
bound_wrong = []
for z in zt["zones"]:
    for prog in z["programs"]:
        for lv in range(1, len(levels) + 1):
            req({"id": 2, "cmd": "stop"})
            r = req({"id": 3, "cmd": "start", "level": lv, "zone": z["name"], "program": prog})
            if not r["ok"]:
                viol.append(("start refused", z["name"], prog, lv, r))
                continue
            if r["level"] < lv:
                r = req({"id": 4, "cmd": "set_level", "level": lv})
            a.amp.tick(100000)                 # any ramp is over
            want = min(levels[lv - 1], z["limit_ua"])
            got = iset_ua()
            if abs(got - want) > 1:
                viol.append((z["name"], prog, lv, got, want))
            if r["bound"] != (C.BOUND_ZONE if levels[lv - 1] > z["limit_ua"] else C.BOUND_LEVEL):
                bound_wrong.append((z["name"], lv, r["bound"]))
            # trial amplitudes up to the cap are held to the zone too
            r2 = req({"id": 5, "cmd": "set_level", "level": lv, "ua": cap})
            a.amp.tick(200000)
            if iset_ua() > z["limit_ua"] + 1 or r2["target_ua"] != z["limit_ua"]:
                viol.append(("trial", z["name"], lv, iset_ua(), r2))
req({"id": 6, "cmd": "stop"})
check("zone_limit_every_zone_level_program", not viol, viol[:4])
check("reply_says_which_bound", not bound_wrong, bound_wrong[:4])

# programs a zone does not allow, waveforms beyond its max rate / phase: refused, nothing changes
state0 = req({"id": 7, "cmd": "status"})
writes0 = a.amp.pwm.writes
for i, r in enumerate([
        {"cmd": "start", "level": 1, "zone": "periorbital", "program": "ems"},
        {"cmd": "start", "level": 1, "zone": "neck", "program": "lift"},
        {"cmd": "start", "level": 1, "zone": "periorbital", "phase_us": 300, "gap_us": 50, "rate_hz": 5},
        {"cmd": "start", "level": 1, "zone": "periorbital", "phase_us": 200, "gap_us": 50, "rate_hz": 20}]):
    r["id"] = 100 + i
    rep = req(r)
    check("zone_refused_%d" % i, rep["ok"] is False and rep["error"] == C.E_ZONE_REFUSED, rep)
for i, r in enumerate([
        {"cmd": "start", "level": 1, "zone": "eyes"}, {"cmd": "start", "level": 1, "zone": 7},
        {"cmd": "start", "level": 1, "zone": "x" * 40}, {"cmd": "set_zone", "zone": "eyes"},
        {"cmd": "set_zone"}, {"cmd": "set_zone", "zone": None}, {"cmd": "set_zone", "zone": ["face"]},
        {"cmd": "set_zone", "zone": "face", "extra": 1}, {"cmd": "zones", "zone": "face"}]):
    r["id"] = 200 + i
    rep = req(r)
    check("bad_zone_input_%d" % i, rep["ok"] is False and rep["error"] in C.ERROR_CODES, rep)
unknown = req({"id": 210, "cmd": "set_zone", "zone": "eyes"})
check("unknown_zone_code", unknown["error"] == C.E_UNKNOWN_ZONE and "periorbital" in unknown["detail"], unknown)
state1 = req({"id": 8, "cmd": "status"})
check("bad_input_changes_nothing", all(state0[k] == state1[k] for k in ("state", "zone", "zone_limit_ua", "level",
                                                                        "setpoint_ua")), (state0, state1))
check("bad_input_no_iset_write", a.amp.pwm.writes == writes0, (writes0, a.amp.pwm.writes))

# seeded random requests while running: the ISET never exceeds the zone chosen at that moment
req({"id": 9, "cmd": "start", "level": 5, "zone": "face", "phase_us": 200, "gap_us": 50, "rate_hz": 10})
names = ["face", "jawline", "periorbital", "neck", "near_ear", "eyes", ""]
seed = 777
over = []
now = 0
for k in range(300):
    seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
    kind = seed % 3
    if kind == 0:
        req({"id": 300 + k, "cmd": "set_zone", "zone": names[(seed >> 4) % len(names)]})
    elif kind == 1:
        req({"id": 300 + k, "cmd": "set_level", "level": 1 + (seed >> 5) % 7})
    else:
        req({"id": 300 + k, "cmd": "set_level", "level": 1 + (seed >> 5) % 5, "ua": (seed >> 9) % (cap + 60)})
    now += (seed >> 12) % 400
    a.amp.tick(now)
    zname = a.zc.zone()["name"]
    if iset_ua() > limits[zname] + 1:
        over.append((k, zname, iset_ua()))
check("random_requests_never_above_zone", not over, over[:4])
req({"id": 10, "cmd": "stop"})

# zone change while running: lower limit at once, higher limit by a ramp
r = req({"id": 11, "cmd": "start", "level": 5, "zone": "face", "phase_us": 200, "gap_us": 50, "rate_hz": 10})
req({"id": 12, "cmd": "set_level", "level": 5})
a.amp.tick(100000)
check("face_top", abs(iset_ua() - 400) <= 1, iset_ua())
r = req({"id": 13, "cmd": "set_zone", "zone": "periorbital"})
check("drop_at_once", r["ok"] and abs(iset_ua() - 160) <= 1 and r["setpoint_ua"] <= 160 and r["bound"] == "zone",
      (iset_ua(), r))
check("zone_shortens_session", r["session_s"] <= 300, r)
r = req({"id": 14, "cmd": "set_zone", "zone": "face"})
check("raise_is_ramped", r["ok"] and iset_ua() <= 161 and a.amp.ramping(), (iset_ua(), r))
a.amp.tick(200000)
check("raise_reaches_level", abs(iset_ua() - 400) <= 1, iset_ua())
st = req({"id": 15, "cmd": "status"})
check("status_zone_fields", st["zone"] == "face" and st["zone_limit_ua"] == 400 and st["bound"] == "level", st)
req({"id": 16, "cmd": "stop"})

done()
