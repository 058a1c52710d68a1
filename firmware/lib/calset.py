# Calibration records (issue 12): read at boot, checked and written by calib_set. Loaded only then and dropped
# after (drop()), so its code is not on the heap while the device runs; calib.py keeps the record in force.
import sys
import time

import calib
import planner
import protocol as P
import pscodes as Q
import store
from calib import G1, C, FIELDS, CAL_VERSION, IDENTITY

GAIN_MIN = 80000              # gains outside 0.8..1.2 are implausible
GAIN_MAX = 120000
OUT_OFF_MAX = 500             # 0.1 uA: +-50 uA
SENSE_OFF_MAX = 300           # 0.1 uA: +-30 uA
V_OFF_MAX = 500               # 0.1 mV: +-50 mV at the electrodes


class CalError(ValueError):
    def __init__(self, code, detail):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def drop():
    sys.modules.pop("calset", None)


def check(r, lvl, cap, i_fs, top):
    """Values of a record the device can accept, else CalError: plausible, and not claiming more output at the
    cap bound `lvl` (cap_level) than the parts' worst case (for such a unit the bound would not hold: refuse)."""
    v = values(r)
    nom = lvl * i_fs * 10 // (top + 1)
    if nom * v[0] // G1 + v[1] > cap * 10:
        raise CalError("over_cap", "record would let the output exceed the cap %d uA (gain %d, offset %d)"
                       % (cap, v[0], v[1]))
    return v


def remove():
    import os
    try:
        os.remove(calib.CAL_PATH)
    except OSError:
        pass


def save(r):
    store.commit(calib.CAL_PATH, store.encode(r, CAL_VERSION))


def values(r):
    """The four integers of a record dict, each checked for type and plausibility (CalError otherwise)."""
    if not isinstance(r, dict):
        raise CalError("bad_type", "record must be an object")
    out = []
    for i, k in enumerate(FIELDS):
        v = r.get(k, IDENTITY[i] if i >= 4 else None)     # (the voltage fields may be left out: identity)
        if not isinstance(v, int) or isinstance(v, bool):
            raise CalError("bad_type", "%s must be an integer" % k)
        out.append(v)
    if not -V_OFF_MAX <= out[5] <= V_OFF_MAX:
        raise CalError("out_of_range", "v_off outside +-%d (0.1 mV)" % V_OFF_MAX)
    for k, v in ((0, out[0]), (2, out[2]), (4, out[4])):
        if not GAIN_MIN <= v <= GAIN_MAX:
            raise CalError("out_of_range", "%s %d outside 0.8..1.2 (implausible)" % (FIELDS[k], v))
    if not -OUT_OFF_MAX <= out[1] <= OUT_OFF_MAX:
        raise CalError("out_of_range", "out_off outside +-%d (0.1 uA)" % OUT_OFF_MAX)
    if not -SENSE_OFF_MAX <= out[3] <= SENSE_OFF_MAX:
        raise CalError("out_of_range", "sense_off outside +-%d (0.1 uA)" % SENSE_OFF_MAX)
    return out


def cmd_get(app):
    a = app.amp
    return {"calibration": calib.rec, "status": calib.status, "in_force": dict(zip(FIELDS, C)),
            "cap_bound_ua": planner.iset_level_to_ua(a.lvl_max, a.i_fs, a.top, a.gain, a.offset)}


def cmd_set(app, req):
    """calib_set: write the calibration record (or clear it), atomic as levels_set: everything that can fail is done
    before the commit point; from the reply on the record is in force (output model, supervisor thresholds)."""
    app.authorize(req, "calib_set")      # first: the production lock (issue 14) checks the MAC of a locked unit
    P.check_keys(req, FIELDS + ("operator", "utc", "mac", "nonce", "clear"))
    if app.state in (Q.ST_RAMPING, Q.ST_RUNNING, Q.ST_PAUSED):
        raise P.ProtoError(Q.E_BUSY, "stop stimulation first")
    op = app._operator(req)
    utc = P.get_str(req, "utc", 40)
    clear = P.get_bool(req, "clear", False)
    a = app.amp
    r = v = None
    if clear:
        if any(k in req for k in FIELDS):
            raise P.ProtoError(Q.E_BAD_REQUEST, "clear takes no record fields")
    else:
        for k in FIELDS[:4]:
            if k not in req:
                raise P.ProtoError(Q.E_BAD_REQUEST, "%s is required" % k)
        r = {k: req[k] for k in FIELDS if k in req}
        try:
            v = check(r, a.lvl_max, a.cap_ua, a.i_fs, a.top)
        except CalError as e:
            raise P.ProtoError(e.code, e.detail)
        r["operator"] = op
        r["utc"] = utc
    before = list(C) if calib.rec is not None else None
    rid = req.get("id")
    fields = {"calibration": r, "audited": True}
    reply = P.reply_ok(rid, fields)
    fields["audited"] = False
    reply_unaudited = P.reply_ok(rid, fields)
    if clear:
        remove()
        calib.apply(IDENTITY)
        calib.rec = None
        calib.status = "none"
    else:
        save(r)                         # the commit point
        calib.rec = r
        calib.apply(v)
        calib.status = "ok"
    a.apply_cal()
    app.sup.recalibrate()
    try:
        au = app.audit
        au._add({"seq": au.next_seq, "t": time.time(), "utc": utc, "operator": op, "level": "calibration",
                 "before": before, "after": v, "key_id": getattr(app, "auth_kid", None)})
    except (MemoryError, OSError):
        reply = reply_unaudited
    return reply
