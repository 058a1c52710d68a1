# Treatment zones (issue 17) on the unix port: the board-profile check (firmware/lib/zones.py via board.validate)
# rejects every bad zone with a message that names it; a seeded sweep of limits around the cap.
import gc
import json
from mpytest import check, raises, done, app_sandbox

import board as B
import pscodes as C

d, BOARD = app_sandbox("pszones")



def load(name):
    with open("boards/%s.json" % name) as f:
        return json.load(f)


def copy(obj):
    return json.loads(json.dumps(obj))


# ---------------------------------------------------------------- profile check
for name in ("handheld-home", "handheld-pro", "pico-devkit"):
    try:
        B.validate(load(name))
        check("profile_ok_" + name, True)
    except B.BoardError as e:
        check("profile_ok_" + name, False, str(e))


def bad(label, mutate, words):
    b = copy(BOARD)
    mutate(b)
    e = raises("profile_rejects_" + label, B.BoardError, B.validate, b)
    if e is not None:
        msg = str(e)
        check("profile_message_" + label, all(w in msg for w in words), msg)


def zone(b, name):
    for z in b["zones"]["list"]:
        if z["name"] == name:
            return z


def set_limit_ua(v):
    def f(b):
        z = zone(b, "periorbital")
        z.pop("limit_frac", None)
        z["limit_ua"] = v
    return f


cap = BOARD["limits"]["cap_ua"]
bad("limit_above_cap", set_limit_ua(cap + 1), ("periorbital", "above the board cap"))
bad("limit_far_above_cap", set_limit_ua(5000), ("periorbital", "above the board cap"))
bad("frac_above_one", lambda b: zone(b, "neck").update({"limit_frac": 1.01}), ("neck", "above the board cap"))
bad("limit_below_probe", set_limit_ua(C.CONTACT_PROBE_UA - 1), ("periorbital", "below"))
bad("limit_not_int", set_limit_ua("160"), ("periorbital", "whole number"))
bad("both_limits", lambda b: zone(b, "neck").update({"limit_ua": 100}), ("neck", "one of them"))
bad("unknown_program", lambda b: zone(b, "neck")["programs"].append("tesla"), ("neck", "unknown program tesla"))
bad("program_not_on_board", lambda b: b.update({"programs": ["microcurrent"]}), ("unknown program",))
bad("duplicate_zone", lambda b: b["zones"]["list"].append(copy(zone(b, "face"))), ("face", "repeated"))
bad("unknown_key", lambda b: zone(b, "face").update({"limit_uA": 5}), ("face", "unknown key limit_uA"))
bad("default_missing", lambda b: b["zones"].update({"default": "eyes"}), ("default",))
bad("long_press_short", lambda b: b["zones"]["select"].update({"long_press_ms": 50}), ("long_press_ms",))
bad("session_above_board", lambda b: zone(b, "neck").update({"session_max_s": 99999}), ("neck", "session_max_s"))
bad("start_low_type", lambda b: b.update({"config_defaults": {"start_low": 1}}), ("start_low",))
# seeded sweep of limits around the cap: accepted exactly when 20 <= limit <= cap
seed = 12345
wrong = []
for k in range(200):
    seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
    v = seed % (2 * cap + 40) - 20
    b = copy(BOARD)
    set_limit_ua(v)(b)
    try:
        B.validate(b)
        ok = True
    except B.BoardError:
        ok = False
    if ok != (C.ZONE_MIN_LIMIT_UA <= v <= cap):
        wrong.append(v)
check("profile_limit_sweep", not wrong, wrong[:5])

done()
