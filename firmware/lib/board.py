# Board profile: load /board.json (written by the host deploy from boards/<name>.json) and validate it on the
# device (S2). The firmware ceiling comes from pscodes and no profile value can raise it.
import json

import sys
import calib
from pscodes import FIRMWARE_CEILING_UA, ZONE_MIN_LIMIT_UA, ZONE_LONG_PRESS_MIN_MS

BOARD_PATH = "/board.json"
PROGRAMS_PATH = "/programs.json"

OUTPUT_PINS = ("BRIDGE_A", "BRIDGE_B", "ISET", "HV_EN")
REQUIRED_PINS = ("BRIDGE_A", "BRIDGE_B", "ISET", "HV_EN", "FAULT_N", "CHARGING", "BTN_POWER", "BTN_UP",
                 "BTN_DOWN", "LED_STATUS", "I_SENSE", "V_ELECTRODE", "V_BAT")


class BoardError(ValueError):
    pass


def _need(cond, msg):
    if not cond:
        raise BoardError(msg)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def validate(b):
    """Raise BoardError unless b is a usable stimulator profile inside the firmware ceiling."""
    _need(isinstance(b, dict), "profile is not an object")
    _need(b.get("schema") == 1, "unsupported schema")
    _need(b.get("kind") == "stimulator", "not a stimulator profile")
    pins = b.get("pins")
    _need(isinstance(pins, dict), "pins missing")
    for p in REQUIRED_PINS:
        _need(_is_int(pins.get(p)) and 0 <= pins[p] <= 29, "pin %s invalid" % p)
    used = [v for v in pins.values() if v is not None]
    _need(all(_is_int(v) and 0 <= v <= 29 for v in used), "pin value invalid")
    _need(len(used) == len(set(used)), "two signals share a GPIO")
    a, bb = pins["BRIDGE_A"], pins["BRIDGE_B"]
    _need(a % 2 == 0 and bb == a + 1, "BRIDGE_A/B must be channels A/B of one slice")
    for p in ("BRIDGE_A", "ISET"):
        _need(((pins[p] >> 1) & 7) <= 3, "%s must be on PWM slices 0-3" % p)
    _need(pins["ISET"] % 2 == 0, "ISET must be a channel A pin")
    for p in ("I_SENSE", "V_ELECTRODE", "V_BAT"):
        _need(26 <= pins[p] <= 29, "%s must be an ADC pin" % p)
    an = b.get("analog")
    _need(isinstance(an, dict), "analog missing")
    _need(an.get("i_fs_ua") == FIRMWARE_CEILING_UA, "analog.i_fs_ua must equal the firmware ceiling")
    for k in ("iset_pwm_hz", "r_sense_ohm", "sense_gain", "v_electrode_divider"):
        _need(_is_int(an.get(k)) and an[k] > 0, "analog.%s invalid" % k)
    _need(100000 <= an["iset_pwm_hz"] <= 1000000, "analog.iset_pwm_hz must be 100 kHz..1 MHz")
    _need(isinstance(an.get("adc_vref_v"), (int, float)) and 1.0 <= an["adc_vref_v"] <= 3.6, "adc_vref_v invalid")
    lim = b.get("limits")
    _need(isinstance(lim, dict), "limits missing")
    cap = lim.get("cap_ua")
    _need(_is_int(cap) and 0 < cap <= FIRMWARE_CEILING_UA, "cap_ua above the firmware ceiling")
    levels = b.get("levels_ua")
    validate_levels(levels, cap)
    for k in ("session_default_s", "session_max_s", "ramp_ms_per_level_step", "recontact_ramp_ms",
              "session_rampdown_ms", "wdt_timeout_ms", "z_max_ohm", "overcurrent_margin_pct",
              "overcurrent_margin_min_ua"):
        _need(_is_int(lim.get(k)) and lim[k] > 0, "limits.%s invalid" % k)
    _need(lim["session_default_s"] <= lim["session_max_s"], "session default above max")
    _need(lim["wdt_timeout_ms"] <= 1000, "wdt_timeout_ms above 1000 (S11)")
    _need(lim["ramp_ms_per_level_step"] >= 300, "ramp_ms_per_level_step below 300 (S8)")
    _need(lim["recontact_ramp_ms"] >= 1000, "recontact_ramp_ms below 1000 (S7)")
    progs = b.get("programs", [])
    _need(isinstance(progs, list) and all(isinstance(p, str) for p in progs), "programs invalid")
    zones = load_zones()
    try:
        zones.validate(b, cap, ZONE_MIN_LIMIT_UA, ZONE_LONG_PRESS_MIN_MS)
    except zones.ZoneError as e:
        raise BoardError(str(e))
    finally:
        drop_zones()
    cd = b.get("config_defaults", {})
    _need(isinstance(cd, dict) and all(k in ("start_low",) for k in cd), "config_defaults: only start_low")
    _need(isinstance(cd.get("start_low", False), bool), "config_defaults.start_low must be true or false")


def load_zones():
    """zones.py (the zone check and table, shared with the host) is needed at boot only: load_zones() ... use ...
    drop_zones() keeps its ~3 KB of code off the heap while the device runs."""
    import zones
    return zones


def drop_zones():
    sys.modules.pop("zones", None)


def validate_levels(levels, cap):
    _need(isinstance(levels, list) and 0 < len(levels) <= 20, "levels_ua must be a list of 1..20 levels")
    _need(all(_is_int(x) and 0 < x <= cap for x in levels), "every level must be 1..cap uA")
    _need(all(levels[i] < levels[i + 1] for i in range(len(levels) - 1)), "levels_ua must increase")


def load(path=None):
    with open(path or BOARD_PATH) as f:
        b = json.load(f)
    validate(b)
    return b


def load_programs(board, path=None):
    """Programs this board allows, from /programs.json; a missing or bad file gives none (manual waveforms only)."""
    path = path or PROGRAMS_PATH
    try:
        with open(path) as f:
            allp = json.load(f)["programs"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    out = {}
    for name in board.get("programs", []):
        p = allp.get(name) if isinstance(allp, dict) else None
        if isinstance(p, dict) and isinstance(p.get("steps"), list) and p["steps"]:
            out[name] = p
    return out


def cap_ua(b):
    # min() again here so a profile edited after validation still cannot exceed the ceiling
    return min(b["limits"]["cap_ua"], FIRMWARE_CEILING_UA)


def trip_limit_ua(b):
    """S4: cap + max(margin %, margin minimum)."""
    lim = b["limits"]
    cap = cap_ua(b)
    return cap + max(cap * lim["overcurrent_margin_pct"] // 100, lim["overcurrent_margin_min_ua"])


def ua_to_adc_raw(b, ua):
    """Microamps through R_SENSE x gain into 12-bit ADC counts on this unit (calib.py: its sense calibration)."""
    return calib.ua_to_raw(ua)


def adc_raw_to_ua(b, raw):
    """12-bit I_SENSE counts to calibrated microamps (calib.py)."""
    return calib.raw_to_ua(raw)


def adc_raw_to_electrode_mv(b, raw):
    """12-bit V_ELECTRODE counts to calibrated mV at the electrodes (calib.py)."""
    d = calib.raw_to_dmv(raw)
    return (d + 5) // 10 if d > 0 else 0
