# Treatment zones (issue 17): where on the body the handheld is, as board-profile data. Each zone has a current
# limit (uA, or a fraction of the board cap), the programs it allows and optionally a maximum rate, a maximum phase
# and a shorter session. The firmware (board.validate, app) and the host (picostim.boards, via
# picostim.shared) run this same file, so it imports nothing: constants come in as arguments.
#
# Profile shape:
#   "zones": {"default": "face", "select": {"button": "power", "long_press_ms": 1200},
#             "list": [{"name": "face", "limit_frac": 1.0, "programs": [...]},
#                      {"name": "periorbital", "limit_ua": 160, "programs": ["microcurrent"],
#                       "max_rate_hz": 10, "max_phase_us": 250, "session_max_s": 300}, ...]}
# The list order is the order the zone button steps through (and the LED's blink count, 1-based).
# On the device it is loaded at boot only (board.load_zones / drop_zones): board.py validates with it, zonectl.py
# builds its zone table from it; the run-time checks of a zone (program, max rate, max phase) are in zonectl.

ZONE_KEYS = ("name", "title", "limit_ua", "limit_frac", "programs", "max_rate_hz", "max_phase_us", "session_max_s")
NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"
FRAC_SCALE = 10000        # limit_frac is taken to 1e-4 (integer maths: same result on the device and the host)


class ZoneError(ValueError):
    pass


def _num(v, lo, hi, whole=False):
    return (isinstance(v, int) or (isinstance(v, float) and not whole)) and not isinstance(v, bool) and lo <= v <= hi


def _fail(name, why):
    raise ZoneError("zone %s: %s" % (name, why))


def limit_of(z, cap):
    """A zone's limit in whole uA: limit_ua as given, or floor(limit_frac x cap) with limit_frac taken to 1e-4."""
    if "limit_ua" in z:
        return z["limit_ua"]
    return int(z["limit_frac"] * FRAC_SCALE + 0.5) * cap // FRAC_SCALE


def validate(b, cap, min_ua, long_press_min_ms=300):
    """Raise ZoneError (naming the zone) unless every zone's limit is in min_ua..cap, every program is one the board
    allows, names are unique and the default and the button are sane. No "zones": valid (one implicit face zone)."""
    zs = b.get("zones")
    if zs is None:
        return
    lst = zs.get("list") if isinstance(zs, dict) else None
    if not (isinstance(lst, list) and 0 < len(lst) <= 8 and all(k in ("default", "select", "list") for k in zs)):
        raise ZoneError("zones must be {default, select, list} with 1..8 zones")
    progs = b.get("programs", [])
    smax = (b.get("limits") or {}).get("session_max_s", 0)
    names = []
    for z in lst:
        n = z.get("name") if isinstance(z, dict) else None
        if not (isinstance(n, str) and 0 < len(n) <= 16 and all(c in NAME_CHARS for c in n)) or n in names:
            raise ZoneError("zone name %r invalid (1..16 of a-z 0-9 _) or repeated" % (n,))
        names.append(n)
        p = z.get("programs")
        bad = [k for k in z if k not in ZONE_KEYS]
        if bad:
            _fail(n, "unknown key %s" % bad[0])
        if ("limit_ua" in z) == ("limit_frac" in z):
            _fail(n, "give limit_ua or limit_frac (one of them)")
        if not (_num(z["limit_ua"], -1e9, 1e9, 1) if "limit_ua" in z else _num(z["limit_frac"], 1e-9, 1e9)):
            _fail(n, "limit_ua must be a whole number of uA, limit_frac a number above 0")
        if "limit_frac" in z and z["limit_frac"] > 1:
            # (a fraction just above 1 would floor to the cap itself: refused as meant, not as rounded)
            _fail(n, "limit_frac %s is above 1, a limit above the board cap %d uA" % (z["limit_frac"], cap))
        lu = limit_of(z, cap)
        if lu > cap:
            _fail(n, "limit %d uA is above the board cap %d uA" % (lu, cap))
        if lu < min_ua:
            _fail(n, "limit %d uA is below %d uA (the contact probe)" % (lu, min_ua))
        if not (isinstance(p, list) and p and all(isinstance(x, str) for x in p)):
            _fail(n, "programs must be a non-empty list of names")
        if "max_rate_hz" in z and not _num(z["max_rate_hz"], 0.5, 500):
            _fail(n, "max_rate_hz must be 0.5..500")
        if "max_phase_us" in z and not _num(z["max_phase_us"], 20, 1000, 1):
            _fail(n, "max_phase_us must be 20..1000")
        if "session_max_s" in z and not _num(z["session_max_s"], 1, smax, 1):
            _fail(n, "session_max_s must be 1..%d (the board's)" % smax)
        for x in p:
            if x not in progs:
                raise ZoneError("zone %s: unknown program %s (the board allows %s)" % (n, x, ", ".join(progs)))
    if zs.get("default", names[0]) not in names:
        raise ZoneError("zones.default %r is not a zone" % (zs.get("default"),))
    sel = zs.get("select")
    if sel is not None and not (isinstance(sel, dict) and all(k in ("button", "long_press_ms") for k in sel)
                                and sel.get("button") in ("power", "up", "down")
                                and _num(sel.get("long_press_ms"), long_press_min_ms, 10000, 1)):
        raise ZoneError("zones.select must be {button: power|up|down, long_press_ms: %d..10000}" % long_press_min_ms)


def table(b, cap):
    """The zones as the firmware applies them (validated profile), in profile order, and the default's index:
    [{name, limit_ua, programs, max_rate_mhz, max_phase_us, session_max_ms}]. No zones: one face zone at the cap
    with every program of the board."""
    zs = b.get("zones")
    lst = zs["list"] if zs else [{"name": "face", "limit_ua": cap, "programs": b.get("programs", [])}]
    out = []
    for z in lst:
        out.append({"name": z["name"], "limit_ua": min(limit_of(z, cap), cap), "programs": z["programs"],
                    "max_rate_mhz": int(z["max_rate_hz"] * 1000 + 0.5) if "max_rate_hz" in z else 0,
                    "max_phase_us": z.get("max_phase_us", 0),
                    "session_max_ms": z["session_max_s"] * 1000 if "session_max_s" in z else 0})
    names = [z["name"] for z in out]
    return out, names.index(zs.get("default", names[0])) if zs else 0


def select_of(b):
    """(button name, long press ms) that steps through the zones, or (None, 0) when the profile has none."""
    zs = b.get("zones")
    sel = zs.get("select") if isinstance(zs, dict) else None
    return (sel["button"], sel["long_press_ms"]) if sel else (None, 0)
