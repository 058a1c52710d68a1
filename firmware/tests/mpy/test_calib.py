# calib_get / calib_set on the unix port (issue 12): a refused record changes nothing (file, record in force,
# thresholds); an accepted one is stored with version + CRC32, audited, in force at once (output model, supervisor
# thresholds) and again after a reboot; a corrupt file is reported and not applied; clear removes it.
import json
import os
from mpytest import check, done, app_sandbox, app_with_output, Out

import audit
import calib
import store
import pscodes as C

d, BOARD = app_sandbox("pscal")

import app as A


a, out = app_with_output(BOARD)


def req(obj):
    for item in a.reader.feed(json.dumps(obj).encode() + b"\n"):
        a.handle_line(item, 0)
    rs = [x for x in out.lines() if "ok" in x]
    return rs[-1] if rs else None


def exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


r = req({"id": 1, "cmd": "calib_get"})
check("get_none", r["ok"] and r["calibration"] is None and r["status"] == "none" and
      r["in_force"] == {"out_gain": 100000, "out_off": 0, "sense_gain": 100000, "sense_off": 0, "v_gain": 100000,
                        "v_off": 0}, r)
bound0 = r["cap_bound_ua"]
check("cap_bound_below_cap", 0 < bound0 < BOARD["limits"]["cap_ua"], bound0)
trip0 = a.sup.trip_raw
GOOD = {"out_gain": 103000, "out_off": 45, "sense_gain": 98000, "sense_off": -20}
bad = [dict(GOOD, out_gain=79999), dict(GOOD, sense_gain=120001), dict(GOOD, out_off=9999),
       dict(GOOD, out_gain="1.0"), dict(GOOD, out_gain=120000, out_off=500), dict(GOOD, extra=1)]
codes = []
for k, rec in enumerate(bad):
    x = dict(rec)
    x.update({"id": 10 + k, "cmd": "calib_set", "operator": "eve"})
    r = req(x)
    codes.append(r.get("error"))
    if r["ok"]:
        break
check("bad_records_refused_with_codes", codes == [C.E_OUT_OF_RANGE, C.E_OUT_OF_RANGE, C.E_OUT_OF_RANGE,
                                                     C.E_BAD_TYPE, C.E_OVER_CAP, C.E_BAD_REQUEST], codes)
check("refused_nothing_written", not exists(calib.CAL_PATH) and calib.rec is None and a.sup.trip_raw == trip0)
r = req({"id": 20, "cmd": "calib_set", "out_gain": 103000, "operator": "eve"})
check("missing_field_refused", not r["ok"] and r["error"] == C.E_BAD_REQUEST, r)

x = dict(GOOD)
x.update({"id": 30, "cmd": "calib_set", "operator": "carol", "utc": "2026-12-04T10:00:00Z"})
r = req(x)
check("good_record_ok", r["ok"] and r["audited"] and r["calibration"]["out_gain"] == 103000, r)
with open(calib.CAL_PATH, "rb") as f:
    raw = f.read()
check("stored_with_version_and_crc", store.decode(raw, 7)["sense_off"] == -20)
check("in_force", calib.C == [103000, 45, 98000, -20, 100000, 0])
# the trip decides on calibrated current: its raw threshold follows the sense gain (0.98: 2 % fewer counts)
# (trip at 420 uA true: the sense path reads 0.98 * 420 - 2.0 = 409.6 uA nominal = ideal code 508.4, which lies in
# the wide code 512 of erratum RP2040-E11 (ideal 504..512): the threshold is the code below it, 511, so the trip
# decides at the wide code's lower edge (early, not late); without a record 420 uA = ideal 521.3, code 521)
check("trip_threshold_recalibrated", a.sup.trip_raw == 511 and trip0 == 521, (trip0, a.sup.trip_raw))
B_raw = calib.ua_to_raw(300)
check("raw_to_ua_calibrated", abs(calib.raw_to_ua(B_raw) - 300) <= 1, B_raw)
e = a.audit.entries[-1]
check("audited", e["level"] == "calibration" and e["operator"] == "carol"
      and e["after"] == [103000, 45, 98000, -20, 100000, 0]
      and e["before"] is None and e["utc"] == "2026-12-04T10:00:00Z", e)
# output model: with out_gain 1.03 the same 240 uA needs ~3 % less duty than without a record
r = req({"id": 31, "cmd": "calib_get"})
check("get_record", r["calibration"]["operator"] == "carol" and r["status"] == "ok", r)
# the bound is the same ISET level; the record only changes what the device predicts it delivers (x1.03 + 4.5 uA)
check("cap_bound_same_level", abs(r["cap_bound_ua"] - (bound0 * 1.03 + 4.5)) <= 2, (r["cap_bound_ua"], bound0))

# a reboot loads it
a2 = A.App(BOARD, Out())
check("reboot_loads_record", calib.status == "ok" and calib.C == [103000, 45, 98000, -20, 100000, 0])
# a corrupt file: reported, identity in force, selftest check fails
with open(calib.CAL_PATH, "wb") as f:
    f.write(raw[:-3] + b"xyz")
a3 = A.App(BOARD, Out())
check("corrupt_reported_not_applied", calib.status.startswith("refused") and calib.C == [100000, 0, 100000, 0, 100000, 0],
      calib.status)
# clear
a = a3
a.out = out
a.audit = audit.Audit(audit.AUDIT_PATH)
r = req({"id": 40, "cmd": "calib_set", "clear": True, "operator": "carol"})
check("clear_ok", r["ok"] and not exists(calib.CAL_PATH) and calib.rec is None, r)
r = req({"id": 41, "cmd": "calib_set", "clear": True, "out_gain": 100000})
check("clear_with_fields_refused", not r["ok"] and r["error"] == C.E_BAD_REQUEST, r)
# busy while stimulating
req({"id": 50, "cmd": "start", "level": 1, "phase_us": 200, "gap_us": 50, "rate_hz": 10})
x = dict(GOOD)
x.update({"id": 51, "cmd": "calib_set"})
r = req(x)
check("busy_while_stimulating", not r["ok"] and r["error"] == C.E_BUSY and not exists(calib.CAL_PATH), r)
req({"id": 52, "cmd": "stop"})
done()
