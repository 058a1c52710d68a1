"""Board profiles: load and validate the JSON data in boards/ (used by the host, the virtual board and tests).

The firmware validates the same file again on the device (S2); this is the host-side check.
"""
from __future__ import annotations

import json
from pathlib import Path

from . import paths
from .shared import codes, zones


class BoardError(ValueError):
    """A board profile is missing, malformed or breaks a safety limit."""


REQUIRED_PINS = ("BRIDGE_A", "BRIDGE_B", "ISET", "HV_EN", "FAULT_N", "CHARGING", "BTN_POWER", "BTN_UP",
                 "BTN_DOWN", "LED_STATUS", "I_SENSE", "V_ELECTRODE", "V_BAT")


def names() -> list[str]:
    return sorted(p.stem for p in paths.BOARDS_DIR.glob("*.json") if p.stem != "programs")


def path_of(name: str) -> Path:
    p = paths.BOARDS_DIR / f"{name}.json"
    if not p.is_file():
        raise BoardError(f"unknown board {name!r}; known: {', '.join(names())}")
    return p


def load(name_or_path) -> dict:
    """Load a board profile by name (boards/<name>.json) or path, validated."""
    p = Path(name_or_path)
    if not p.suffix:
        p = path_of(str(name_or_path))
    try:
        profile = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise BoardError(f"{p}: cannot read board profile: {e}") from e
    validate(profile)
    return profile


def load_programs() -> dict:
    return json.loads((paths.BOARDS_DIR / "programs.json").read_text())["programs"]


def _need(cond, msg):
    if not cond:
        raise BoardError(msg)


def validate(b: dict) -> None:
    _need(isinstance(b, dict), "board profile must be a JSON object")
    name = b.get("name", "?")
    _need(b.get("schema") == 1, f"{name}: unsupported schema {b.get('schema')!r}")
    _need(isinstance(b.get("pins"), dict), f"{name}: pins missing")
    if b.get("kind") == "rig":
        return
    pins = b["pins"]
    for p in REQUIRED_PINS:
        _need(isinstance(pins.get(p), int) and 0 <= pins[p] <= 29, f"{name}: pin {p} must be a GPIO number 0..29")
    used = [v for v in pins.values() if v is not None]
    _need(len(used) == len(set(used)), f"{name}: two signals share a GPIO")
    # Bridge and ISET on slices 0-3: a soft reset halts only those (spec section 1).
    for p in ("BRIDGE_A", "BRIDGE_B", "ISET"):
        _need(((pins[p] >> 1) & 7) <= 3, f"{name}: {p} must be on PWM slices 0-3")
    _need((pins["BRIDGE_A"] >> 1) == (pins["BRIDGE_B"] >> 1) and pins["BRIDGE_A"] % 2 == 0
          and pins["BRIDGE_B"] == pins["BRIDGE_A"] + 1, f"{name}: BRIDGE_A/B must be channels A/B of one slice")
    for p in ("I_SENSE", "V_ELECTRODE", "V_BAT"):
        _need(26 <= pins[p] <= 29, f"{name}: {p} must be an ADC pin (GPIO26..29)")
    a = b.get("analog", {})
    _need(a.get("i_fs_ua") == codes.FIRMWARE_CEILING_UA, f"{name}: analog.i_fs_ua must be {codes.FIRMWARE_CEILING_UA}")
    lim = b.get("limits", {})
    cap = lim.get("cap_ua")
    _need(isinstance(cap, int) and 0 < cap <= codes.FIRMWARE_CEILING_UA,
          f"{name}: limits.cap_ua {cap!r} must be 1..{codes.FIRMWARE_CEILING_UA} (firmware ceiling)")
    levels = b.get("levels_ua")
    _need(isinstance(levels, list) and levels, f"{name}: levels_ua missing")
    _need(all(isinstance(x, int) and 0 < x <= cap for x in levels), f"{name}: every level must be 1..cap ({cap}) uA")
    _need(all(x < y for x, y in zip(levels, levels[1:])), f"{name}: levels_ua must increase")
    _need(0 < lim.get("session_default_s", 0) <= lim.get("session_max_s", 0), f"{name}: session default must be <= max")
    _need(0 < lim.get("wdt_timeout_ms", 0) <= 1000, f"{name}: wdt_timeout_ms must be <= 1000 (S11)")
    _need(lim.get("ramp_ms_per_level_step", 0) >= 300, f"{name}: ramp_ms_per_level_step must be >= 300 (S8)")
    _need(lim.get("recontact_ramp_ms", 0) >= 1000, f"{name}: recontact_ramp_ms must be >= 1000 (S7)")
    dp = b.get("default_program")
    _need(dp is None or dp in (b.get("programs") or []),
          f"{name}: default_program {dp!r} must be one of the board's programs {b.get('programs')}")
    try:   # the firmware's own check (firmware/lib/zones.py), run here too
        zones.validate(b, cap, codes.ZONE_MIN_LIMIT_UA, codes.ZONE_LONG_PRESS_MIN_MS)
    except zones.ZoneError as e:
        raise BoardError(f"{name}: {e}") from e
    cd = b.get("config_defaults", {})
    _need(isinstance(cd, dict) and set(cd) <= {"start_low"} and isinstance(cd.get("start_low", False), bool),
          f"{name}: config_defaults may hold only start_low (true/false)")


def zone_table(b: dict) -> list[dict]:
    """The board's zones with their limits resolved to uA (as the device computes them), default first flagged."""
    cap = min(int(b["limits"]["cap_ua"]), codes.FIRMWARE_CEILING_UA)
    tbl, d = zones.table(b, cap)
    return [{**z, "default": i == d} for i, z in enumerate(tbl)]


def compliance_limit_ua(b: dict, ohm: float) -> float:
    """The most the board's current source can drive into `ohm`: its compliance voltage less the source's headroom,
    over the load. A level above it is delivered at this limit, not refused."""
    an = b["analog"]
    return (an["v_comp_v"] - an["compliance_headroom_v"]) / ohm * 1e6
