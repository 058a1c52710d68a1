"""Seeded generator of protocol inputs for the fuzz campaigns: well-formed commands with hostile argument values,
type confusion, mutated JSON, raw garbage, over-long lines and deep nesting. Deterministic for a given seed, so
a violation can be replayed from its index."""
from __future__ import annotations

import json
import random

from benchlib import REPO

_PS = {}
exec(compile((REPO / "firmware" / "lib" / "pscodes.py").read_text(), "pscodes.py", "exec"), _PS)
MAX_LINE = _PS["MAX_LINE"]

COMMANDS = ("hello", "status", "config_get", "config_set", "levels_get", "levels_set", "start", "stop", "set_level",
            "clear_fault", "telemetry", "audit", "selftest")
# Commands that would end the session by resetting the device; sent rarely so a campaign exercises the rest.
RARE = ("reset", "bootloader")
ARGS = {
    "config_set": ("config",), "levels_set": ("levels_ua", "level", "ua", "operator"),
    "start": ("level", "program", "phase_us", "gap_us", "rate_hz", "burst_on_s", "burst_off_s", "duration_s"),
    "set_level": ("level", "ua"), "telemetry": ("on", "rate_hz"), "audit": ("clear",),
}
CONFIG_KEYS = ("default_level", "session_s", "default_program", "ramp_ms", "telemetry_hz", "bogus")
PROGRAM_NAMES = ("microcurrent", "ems", "lift", "nope", "", "x" * 40)


def _number(rnd):
    return rnd.choice([0, 1, -1, 2, 3, 5, 10, 19, 20, 21, 50, 100, 250, 399, 400, 401, 500, 999, 1000, 1001, 1200,
                       1201, 5000, 65535, 65536, 2 ** 29 - 1, 2 ** 29, 2 ** 30, 2 ** 31, 2 ** 63, -2 ** 31, 10 ** 30,
                       0.5, 0.49, 1.5, 2.0, 499.99, 500.0, 500.01, -0.0, 1e-9, 1e308, -1e308,
                       rnd.randint(-10 ** 6, 10 ** 6), rnd.random() * 1000])


def _value(rnd, depth=0):
    k = rnd.random()
    if k < 0.45:
        return _number(rnd)
    if k < 0.55:
        return rnd.choice([True, False, None])
    if k < 0.7:
        return rnd.choice(["", "1", "abc", "400", "\u00e9\u4e2d", "x" * rnd.randint(30, 80), "\x00", "level",
                           "microcurrent"])
    if k < 0.85 and depth < 3:
        return [_value(rnd, depth + 1) for _ in range(rnd.randint(0, 12))]
    if depth < 3:
        return {rnd.choice(CONFIG_KEYS): _value(rnd, depth + 1) for _ in range(rnd.randint(0, 4))}
    return 7


VALID = {
    "level": lambda r: r.randint(1, 5), "program": lambda r: r.choice(PROGRAM_NAMES[:3]),
    "phase_us": lambda r: r.randint(20, 1000), "gap_us": lambda r: r.randint(0, 500),
    "rate_hz": lambda r: r.choice([r.randint(1, 500), round(r.uniform(0.5, 500), 3)]),
    "burst_on_s": lambda r: r.choice([0.5, 1, 2]), "burst_off_s": lambda r: r.choice([0.5, 1, 2]),
    "duration_s": lambda r: r.randint(1, 1200), "ua": lambda r: r.randint(0, 420),
    "levels_ua": lambda r: sorted(r.randint(0, 410) for _ in range(5)), "operator": lambda r: "tech",
    "on": lambda r: r.choice([True, False]), "rate_hz_tel": lambda r: r.randint(1, 1000),
    "clear": lambda r: r.choice([True, False]),
    "config": lambda r: {"default_level": r.randint(1, 5)} if r.random() < 0.5 else {"session_s": r.randint(60, 1200)},
}


def plausible_obj(rnd) -> dict:
    """A request with arguments inside (or just past) the documented ranges, so sessions really run."""
    cmd = rnd.choice(("start", "start", "start", "set_level", "levels_set", "stop", "status", "config_set",
                      "telemetry", "clear_fault", "audit"))
    req = {"id": rnd.randint(0, 10 ** 6), "cmd": cmd}
    for name in ARGS.get(cmd, ()):
        if cmd == "levels_set" and name in ("level", "ua"):
            continue
        if name == "rate_hz" and cmd == "telemetry":
            req[name] = VALID["rate_hz_tel"](rnd)
        elif rnd.random() < (0.9 if name == "level" else 0.4):
            req[name] = VALID[name](rnd)
    if cmd == "start" and "program" in req and rnd.random() < 0.7:
        for k in ("phase_us", "gap_us", "rate_hz", "burst_on_s", "burst_off_s"):
            req.pop(k, None)
    return req


def command_obj(rnd) -> dict:
    if rnd.random() < 0.4:
        return plausible_obj(rnd)
    cmd = rnd.choice(COMMANDS) if rnd.random() > 0.003 else rnd.choice(RARE)
    req = {"id": rnd.choice([rnd.randint(0, 10 ** 6), rnd.randint(0, 10 ** 6), "s%d" % rnd.randint(0, 99), None,
                             -5, 2 ** 40, 1.5, [], {}, True, "x" * 70])}
    if rnd.random() < 0.05:
        req.pop("id")
    req["cmd"] = cmd if rnd.random() > 0.05 else rnd.choice([None, 5, [], "HELLO", "start ", "cmd_start", "__init__",
                                                            "x" * 40, ""])
    allowed = ARGS.get(cmd, ())
    for name in allowed:
        if rnd.random() < 0.5:
            if name == "levels_ua":
                n = rnd.choice([0, 4, 5, 5, 5, 6, 10])
                req[name] = [rnd.choice([_number(rnd), rnd.randint(0, 400), rnd.randint(0, 400)]) for _ in range(n)] \
                    if rnd.random() < 0.8 else _value(rnd)
            elif name == "config":
                req[name] = {rnd.choice(CONFIG_KEYS): _value(rnd) for _ in range(rnd.randint(0, 4))} \
                    if rnd.random() < 0.8 else _value(rnd)
            elif name == "program":
                req[name] = rnd.choice(PROGRAM_NAMES) if rnd.random() < 0.7 else _value(rnd)
            elif name in ("on", "clear"):
                req[name] = rnd.choice([True, False, True, 1, 0, "true", None])
            elif name == "operator":
                req[name] = rnd.choice(["tech", "", "x" * 33, 5, None])
            else:
                req[name] = _number(rnd) if rnd.random() < 0.8 else _value(rnd)
    if rnd.random() < 0.1:
        req[rnd.choice(["extra", "Level", "ua", "config", "__class__"])] = _value(rnd)
    return req


def _mutate(rnd, b: bytes) -> bytes:
    b = bytearray(b)
    for _ in range(rnd.randint(1, 6)):
        op = rnd.random()
        if not b:
            b.append(rnd.randrange(256))
        elif op < 0.3:
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        elif op < 0.5:
            del b[rnd.randrange(len(b)):]
        elif op < 0.7:
            b.insert(rnd.randrange(len(b) + 1), rnd.choice(b'{}[]",:\\0\r\x03\x04\xff'))
        else:
            i = rnd.randrange(len(b))
            del b[i:i + rnd.randint(1, 4)]
    return bytes(b)


def _one_input(rnd) -> bytes:
    k = rnd.random()
    if k < 0.55:
        return json.dumps(command_obj(rnd)).encode()
    if k < 0.72:
        return _mutate(rnd, json.dumps(command_obj(rnd)).encode())
    if k < 0.80:
        # raw garbage (no Ctrl-C: 0x03 would break into the REPL on the device, which is the REPL's contract)
        return bytes(rnd.choice([x for x in range(256) if x != 3]) for _ in range(rnd.randint(1, 300)))
    if k < 0.85:
        n = rnd.choice([MAX_LINE - 1, MAX_LINE, MAX_LINE + 1, rnd.randint(MAX_LINE, 6 * MAX_LINE)])
        body = json.dumps({"id": 1, "cmd": "status", "pad": ""}).encode()
        return body[:-2] + b"x" * max(0, n - len(body)) + b'"}'
    if k < 0.89:
        d = rnd.randint(20, 400)
        return (b"[" * d + b"1" + b"]" * d) if rnd.random() < 0.5 else (b'{"a":' * d + b"1" + b"}" * d)
    if k < 0.93:
        return rnd.choice([b"null", b"1", b'"hello"', b"[]", b"{}", b'{"cmd":"hello"}', b'{"id":1}', b"NaN",
                           b'{"id":1,"cmd":"start","level":NaN}', b'{"id":1,"cmd":"start","rate_hz":Infinity}',
                           b'{"id":1,"cmd":"set_level","level":1,"ua":1e400}', b"\xef\xbb\xbf{}", b"\r\r\r"])
    # several requests in one write, some split across a CR
    parts = [json.dumps(command_obj(rnd)).encode() for _ in range(rnd.randint(2, 4))]
    return rnd.choice([b"\n", b"\r", b"\r\n"]).join(parts)


def generate(n: int, seed: int) -> list:
    rnd = random.Random(seed)
    return [one_input(rnd) for _ in range(n)]


def one_input(rnd) -> bytes:
    # 0x03 (Ctrl-C) breaks into the REPL by contract (mpremote relies on it): it is not a protocol input.
    return _one_input(rnd).replace(b"\x03", b"\x02")
