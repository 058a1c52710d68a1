"""Host-side checks of device settings (config, level table) against the board profile, before anything is sent.

The device validates again (S2/S3); these checks only give an operator a clear message early. Limits come from the
board profile and firmware/lib/pscodes.py, never from constants here.
"""
from __future__ import annotations

from .shared import codes

CONFIG_KEYS = ("session_s", "default_level", "default_program", "start_low")


class SettingsError(ValueError):
    def __init__(self, code: str, msg: str):
        super().__init__(msg)
        self.code = code


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def cap_ua(profile: dict) -> int:
    return min(int(profile["limits"]["cap_ua"]), codes.FIRMWARE_CEILING_UA)


def check_levels(profile: dict, levels) -> list[int]:
    cap = cap_ua(profile)
    n = len(profile["levels_ua"])
    if not isinstance(levels, list) or not all(_is_int(x) for x in levels):
        raise SettingsError(codes.E_BAD_TYPE, "levels must be a list of whole microamps")
    if len(levels) != n:
        raise SettingsError(codes.E_OUT_OF_RANGE, f"{profile['name']} has {n} levels, got {len(levels)}")
    for i, x in enumerate(levels, 1):   # over-cap first: the message that matters most
        if x > cap:
            raise SettingsError(codes.E_OVER_CAP, f"level {i}: {x} uA is above the {profile['name']} cap of {cap} uA")
    for i, x in enumerate(levels, 1):
        if x <= 0:
            raise SettingsError(codes.E_OUT_OF_RANGE, f"level {i}: {x} uA must be at least 1 uA")
    for i, (a, b) in enumerate(zip(levels, levels[1:]), 1):
        if not a < b:
            raise SettingsError(codes.E_OUT_OF_RANGE, f"levels must increase: level {i} = {a} uA, "
                                                      f"level {i + 1} = {b} uA")
    return list(levels)


def with_level(profile: dict, levels: list[int], level: int, ua: int) -> list[int]:
    """The level table after setting one level, checked whole."""
    if not _is_int(level) or not 1 <= level <= len(levels):
        raise SettingsError(codes.E_OUT_OF_RANGE, f"level must be 1..{len(levels)}")
    new = list(levels)
    new[level - 1] = ua
    return check_levels(profile, new)


def check_config(profile: dict, cfg: dict, n_levels: int | None = None) -> dict:
    if not isinstance(cfg, dict):
        raise SettingsError(codes.E_BAD_TYPE, "config must be an object")
    n_levels = n_levels or len(profile["levels_ua"])
    for k, v in cfg.items():
        if k not in CONFIG_KEYS:
            raise SettingsError(codes.E_BAD_REQUEST, f"unknown config key {k!r} (known: {', '.join(CONFIG_KEYS)})")
        if k == "session_s":
            mx = profile["limits"]["session_max_s"]
            if not _is_int(v):
                raise SettingsError(codes.E_BAD_TYPE, "session_s must be a whole number of seconds")
            if not 1 <= v <= mx:
                raise SettingsError(codes.E_OUT_OF_RANGE, f"session_s must be 1..{mx} on {profile['name']}")
        elif k == "default_level":
            if not _is_int(v):
                raise SettingsError(codes.E_BAD_TYPE, "default_level must be a whole number")
            if not 1 <= v <= n_levels:
                raise SettingsError(codes.E_OUT_OF_RANGE, f"default_level must be 1..{n_levels}")
        elif k == "start_low":
            if not isinstance(v, bool):
                raise SettingsError(codes.E_BAD_TYPE, "start_low must be true or false")
        elif k == "default_program":
            if v is not None and not isinstance(v, str):
                raise SettingsError(codes.E_BAD_TYPE, "default_program must be a program name or null")
            if v is not None and v not in profile.get("programs", []):
                raise SettingsError(codes.E_UNKNOWN_PROGRAM, f"program {v!r} is not allowed on {profile['name']} "
                                                             f"(allowed: {', '.join(profile.get('programs', []))})")
    return dict(cfg)


def parse_value(text: str):
    """CLI value: JSON if it parses (numbers, null, strings in quotes), else the plain string."""
    import json
    try:
        return json.loads(text)
    except ValueError:
        return text
