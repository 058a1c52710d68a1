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
# On the device board.py validates with it and zonectl.py builds the zone table from it; the run-time checks of a
# zone (program, max rate, max phase) are in zonectl.

ZONE_KEYS = ("name", "title", "limit_ua", "limit_frac", "programs", "max_rate_hz", "max_phase_us", "session_max_s")
MAX_ZONES = 8
NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"
FRAC_SCALE = 10000        # limit_frac is taken to 1e-4 (integer maths: same result on the device and the host)
BUTTONS = ("power", "up", "down")


class ZoneError(ValueError):
    pass


def _need(cond, msg):
    if not cond:
        raise ZoneError(msg)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def limit_of(z, cap):
    """A zone's limit in whole uA: limit_ua as given, or floor(limit_frac x cap) with limit_frac taken to 1e-4."""
    if "limit_ua" in z:
        return z["limit_ua"]
    f = int(z["limit_frac"] * FRAC_SCALE + 0.5)
    return f * cap // FRAC_SCALE


def validate(b, cap, min_ua, long_press_min_ms=300):
    """Raise ZoneError unless the profile's zones are usable: every limit in min_ua..cap, every program one the
    board allows, unique names, a known default. A profile without "zones" is valid (one implicit face zone)."""
    zs = b.get("zones")
    if zs is None:
        return
    _need(isinstance(zs, dict), "zones must be an object with a list")
    for k in zs:
        _need(k in ("default", "select", "list"), "zones: unknown key %s" % k)
    lst = zs.get("list")
    _need(isinstance(lst, list) and 0 < len(lst) <= MAX_ZONES, "zones.list must hold 1..%d zones" % MAX_ZONES)
    progs = b.get("programs", [])
    lim = b.get("limits") or {}
    names = []
    for z in lst:
        _need(isinstance(z, dict), "every zone must be an object")
        n = z.get("name")
        _need(isinstance(n, str) and 0 < len(n) <= 16 and all(c in NAME_CHARS for c in n),
              "zone name %r invalid (1..16 of a-z 0-9 _)" % (n,))
        _need(n not in names, "zone %s appears twice" % n)
        names.append(n)
        for k in z:
            _need(k in ZONE_KEYS, "zone %s: unknown key %s" % (n, k))
        _need(("limit_ua" in z) != ("limit_frac" in z), "zone %s: give limit_ua or limit_frac (one of them)" % n)
        if "limit_ua" in z:
            v = z["limit_ua"]
            _need(_is_int(v), "zone %s: limit_ua must be a whole number of uA" % n)
            _need(v <= cap, "zone %s: limit %d uA is above the board cap %d uA" % (n, v, cap))
        else:
            v = z["limit_frac"]
            _need(_is_num(v), "zone %s: limit_frac must be a number" % n)
            _need(v <= 1, "zone %s: limit_frac %s is above the board cap (more than 1)" % (n, v))
            _need(v > 0, "zone %s: limit_frac must be above 0" % n)
        lu = limit_of(z, cap)
        _need(lu >= min_ua, "zone %s: limit %d uA is below %d uA (the contact probe)" % (n, lu, min_ua))
        p = z.get("programs")
        _need(isinstance(p, list) and p and all(isinstance(x, str) for x in p),
              "zone %s: programs must be a non-empty list of names" % n)
        for x in p:
            _need(x in progs, "zone %s: unknown program %s (the board allows %s)" % (n, x, ", ".join(progs)))
        if "max_rate_hz" in z:
            _need(_is_num(z["max_rate_hz"]) and 0.5 <= z["max_rate_hz"] <= 500, "zone %s: max_rate_hz 0.5..500" % n)
        if "max_phase_us" in z:
            _need(_is_int(z["max_phase_us"]) and 20 <= z["max_phase_us"] <= 1000, "zone %s: max_phase_us 20..1000" % n)
        if "session_max_s" in z:
            smax = lim.get("session_max_s", 0)
            _need(_is_int(z["session_max_s"]) and 0 < z["session_max_s"] <= smax,
                  "zone %s: session_max_s must be 1..%d (the board's)" % (n, smax))
    d = zs.get("default", names[0])
    _need(d in names, "zones.default %r is not a zone" % (d,))
    sel = zs.get("select")
    if sel is not None:
        _need(isinstance(sel, dict), "zones.select must be an object")
        for k in sel:
            _need(k in ("button", "long_press_ms"), "zones.select: unknown key %s" % k)
        _need(sel.get("button") in BUTTONS, "zones.select.button must be one of %s" % ", ".join(BUTTONS))
        lp = sel.get("long_press_ms")
        _need(_is_int(lp) and long_press_min_ms <= lp <= 10000,
              "zones.select.long_press_ms must be %d..10000" % long_press_min_ms)


def table(b, cap):
    """The zones as the firmware uses them (validated profile): [{name, limit_ua, programs, max_rate_mhz,
    max_phase_us, session_max_ms}], in profile order; the default zone's index. No zones: one face zone at the cap
    with every program of the board."""
    zs = b.get("zones")
    if zs is None:
        return [{"name": "face", "limit_ua": cap, "programs": list(b.get("programs", [])), "max_rate_mhz": 0,
                 "max_phase_us": 0, "session_max_ms": 0}], 0
    out = []
    for z in zs["list"]:
        out.append({"name": z["name"], "limit_ua": min(limit_of(z, cap), cap), "programs": list(z["programs"]),
                    "max_rate_mhz": int(z["max_rate_hz"] * 1000 + 0.5) if "max_rate_hz" in z else 0,
                    "max_phase_us": z.get("max_phase_us", 0),
                    "session_max_ms": z["session_max_s"] * 1000 if "session_max_s" in z else 0})
    d = zs.get("default", out[0]["name"])
    return out, [z["name"] for z in out].index(d)


def select_of(b):
    """(button name, long press ms) that steps through the zones, or (None, 0) when the profile has none."""
    zs = b.get("zones")
    sel = zs.get("select") if isinstance(zs, dict) else None
    if not sel:
        return None, 0
    return sel["button"], sel["long_press_ms"]
