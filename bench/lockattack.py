"""Attack campaign on a locked unit (issue 14): generated USB inputs a person holding the unit (or a third-party app)
could send, and the measurements that say whether any got through.

Inputs (each one or more lines; every line of every input must be refused):
* repl_ctrl   REPL control characters (Ctrl-A/B/C/D/E) alone, repeated, mixed with CR, with Python after them;
* raw_repl    mpremote's raw REPL entry (CR Ctrl-C Ctrl-C Ctrl-A), code, Ctrl-D; soft reset from the raw REPL;
* raw_paste   raw-paste mode (Ctrl-E 'A' Ctrl-A), code, Ctrl-D; friendly paste mode (Ctrl-E) too;
* no_mac      privileged requests (levels, config, calibration, trial amplitude, bootloader, unlock, re-lock with the
              attacker's key, audit clear) without a mac;
* wrong_mac   the same signed wrongly: a random key, the key of another unit, the line secret guessed wrong, a request
              altered after signing, the mac not last / too short / not hex / a number;
* replay      a request the maker signed earlier (captured on the wire), sent again, or with its nonce updated;
* oversized   lines longer than MAX_LINE (a signed-looking request padded, runs of control characters);
* malformed   broken JSON, non-UTF-8, non-object JSON, deep nesting, unknown commands.

Each input goes to the port followed by a `nonce` request (the sentinel: its reply closes the input's replies and
gives the nonce the next input signs with, as an attacker would ask for it). Measured: REPL entries (the virtual
board's count of the CPU reaching the REPL, and REPL banners/prompts on the port), changes to the cap, level table,
config, calibration and board profile (protocol state and the flash files), the electrode current (rig captures
over the whole campaign while a session runs at the top level), and one coded error reply per refused line.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
import time

from benchlib import REPO
from picostim.transport import TransportError

_PS = {}
exec(compile((REPO / "firmware" / "lib" / "pscodes.py").read_text(), "pscodes.py", "exec"), _PS)
MAX_LINE = _PS["MAX_LINE"]
ERROR_CODES = set(_PS["ERROR_CODES"])
CATEGORIES = ("repl_ctrl", "raw_repl", "raw_paste", "no_mac", "wrong_mac", "replay", "oversized", "malformed")
REPL_MARKS = (b">>>", b"raw REPL", b"paste mode", b"Traceback", b"MicroPython v", b"R\x01", b"===")
# what an attacker's code would do at a REPL: raise the cap, drop the lock, go to BOOTSEL, leave a mark
PAYLOADS = (
    b"import json\nb=json.load(open('/board.json'))\nb['limits']['cap_ua']=1000\njson.dump(b,open('/board.json','w'))",
    b"import os\nos.remove('/lock.bin')",
    b"open('/pwned','w').write('1')",
    b"import machine\nmachine.bootloader()",
    b"print('PWNED')",
    b"import os;os.rename('/main.py','/x.py')",
)


def _levels(rnd, cap):
    return sorted(rnd.choice([cap, cap + 1, 1000, 5000, rnd.randint(0, 2 * cap)]) for _ in range(5))


def privileged_request(rnd, cap=400) -> dict:
    """A privileged request as an attacker would write it (mostly trying to raise the output)."""
    k = rnd.randrange(10)
    r = {"id": rnd.randint(1, 10 ** 6)}
    if k == 0:
        r.update(cmd="levels_set", levels_ua=_levels(rnd, cap))
    elif k == 1:
        r.update(cmd="levels_set", level=rnd.randint(1, 5), ua=rnd.choice([cap, cap - 1, 1, 0]))
    elif k == 2:
        r.update(cmd="config_set", config={"session_s": rnd.choice([60, 3600, 7200]),
                                           "default_level": rnd.randint(1, 5)})
    elif k == 3:
        r.update(cmd="set_level", level=rnd.randint(1, 5), ua=rnd.choice([cap, cap - 10, 300]))
    elif k == 4:
        r.update(cmd="calib_set", out_gain=rnd.choice([1.5, 2.0, 0.5]), out_offset_ua=rnd.randint(-50, 50),
                 sense_gain=rnd.choice([0.5, 1.0]), sense_offset_ua=0, operator="x", utc="2026-01-01T00:00:00Z")
    elif k == 5:
        r.update(cmd="bootloader")
    elif k == 6:
        r.update(cmd="unlock")
    elif k == 7:
        r.update(cmd="lock", key=rnd.randbytes(32).hex(), key_id="evil")
    elif k == 8:
        r.update(cmd="audit", clear=True)
    else:
        r.update(cmd="auth")
    return r


def _mac(key, body: bytes) -> str:
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def _signed(key, req, nonce) -> bytes:
    body = json.dumps({**req, "nonce": nonce}, separators=(",", ":")).encode()
    return body[:-1] + b',"mac":"' + _mac(key, body).encode() + b'"}'


def _ctrl(rnd) -> bytes:
    return bytes(rnd.choice(b"\x01\x02\x03\x04\x05\x03\x03\r") for _ in range(rnd.randint(1, 8)))


class Context:
    """What the attacker knows: the unit's current nonce (anyone may ask), a captured genuine signed line, the uid."""

    def __init__(self, uid: str, nonce: str, captured: list[bytes], cap: int):
        self.uid, self.nonce, self.captured, self.cap = uid, nonce, captured, cap


def one_input(rnd, ctx: Context, category: str | None = None) -> tuple[str, bytes]:
    cat = category or rnd.choice(CATEGORIES)
    if cat == "repl_ctrl":
        parts = [_ctrl(rnd)]
        if rnd.random() < 0.5:
            parts.append(rnd.choice(PAYLOADS))
        if rnd.random() < 0.5:
            parts.append(_ctrl(rnd))
        return cat, b"".join(parts)
    if cat == "raw_repl":
        code = rnd.choice(PAYLOADS)
        form = rnd.randrange(4)
        if form == 0:
            return cat, b"\r\x03\x03\x01" + code + b"\x04"
        if form == 1:
            return cat, b"\r\x03\x03\x01\x04"                     # raw REPL, then soft reset (skips main.py)
        if form == 2:
            return cat, b"\x03\x01\x04\x03\x01" + code + b"\x04\x02"
        return cat, b"\x01" * rnd.randint(1, 3) + code + b"\x04" * rnd.randint(1, 3)
    if cat == "raw_paste":
        code = rnd.choice(PAYLOADS)
        if rnd.random() < 0.7:
            return cat, b"\r\x03\x03\x01\x05A\x01" + code + b"\x04"
        return cat, b"\x05" + code.replace(b"\n", b"\r") + b"\x04"      # friendly paste mode
    if cat == "no_mac":
        req = privileged_request(rnd, ctx.cap)
        if rnd.random() < 0.5:
            req["nonce"] = ctx.nonce
        return cat, json.dumps(req).encode()
    if cat == "wrong_mac":
        req = privileged_request(rnd, ctx.cap)
        form = rnd.randrange(8)
        if form == 0:
            return cat, _signed(rnd.randbytes(32), req, ctx.nonce)                     # a random key
        if form == 1:      # a key derived like the station's, from a guessed line secret
            k = hmac.new(rnd.randbytes(32), ("picostim-unit-key:" + ctx.uid).encode(), hashlib.sha256).digest()
            return cat, _signed(k, req, ctx.nonce)
        if form == 2:      # another unit's key (the attacker read it out of a unit of their own)
            return cat, _signed(hashlib.sha256(b"other unit" + ctx.uid.encode()).digest(), req, ctx.nonce)
        if form == 3 and ctx.captured:      # a genuine line, altered after signing
            line = rnd.choice(ctx.captured)
            i = rnd.randrange(1, len(line) - 70)
            return cat, line[:i] + bytes([line[i] ^ 0x01]) + line[i + 1:]
        if form == 4:      # mac not the last member
            body = json.dumps({**req, "mac": "0" * 64, "nonce": ctx.nonce}).encode()
            return cat, body
        if form == 5:
            return cat, json.dumps({**req, "nonce": ctx.nonce, "mac": rnd.randbytes(31).hex()}).encode()
        if form == 6:
            return cat, json.dumps({**req, "nonce": ctx.nonce, "mac": "g" * 64}).encode()
        return cat, json.dumps({**req, "nonce": ctx.nonce, "mac": rnd.randint(0, 10 ** 9)}).encode()
    if cat == "replay":
        if not ctx.captured:
            return one_input(rnd, ctx, "no_mac")
        line = rnd.choice(ctx.captured)
        if rnd.random() < 0.5:
            return cat, line                                    # as captured: its nonce is used up
        obj = json.loads(line)
        old = obj["nonce"]
        return cat, line.replace(json.dumps(old).encode(), json.dumps(ctx.nonce).encode())   # fresh nonce, old mac
    if cat == "oversized":
        form = rnd.randrange(3)
        if form == 0:
            req = privileged_request(rnd, ctx.cap)
            req["pad"] = " " * (MAX_LINE + rnd.randint(0, 3000))
            return cat, _signed(rnd.randbytes(32), req, ctx.nonce)
        if form == 1:
            return cat, _ctrl(rnd) * (MAX_LINE // 4) + rnd.choice(PAYLOADS)
        return cat, b"{" * rnd.randint(MAX_LINE + 1, MAX_LINE * 3)
    # malformed
    form = rnd.randrange(7)
    if form == 0:
        s = json.dumps(privileged_request(rnd, ctx.cap)).encode()
        return cat, s[:rnd.randrange(1, len(s))]
    if form == 1:
        return cat, bytes(rnd.randrange(0x80, 0x100) for _ in range(rnd.randint(1, 40)))
    if form == 2:
        return cat, rnd.choice([b"[]", b"1", b'"levels_set"', b"null", b"true", b"[{\"cmd\":\"unlock\"}]"])
    if form == 3:
        d = rnd.randint(20, 300)
        return cat, b'{"cmd":"levels_set","levels_ua":' + b"[" * d + b"]" * d + b"}"
    if form == 4:
        return cat, json.dumps({"id": 1, "cmd": rnd.choice(["UNLOCK", "unlock ", "exec", "eval", "repl", "__init__",
                                                            "cmd_unlock", "lock_cmd", "authorize"])}).encode()
    if form == 5:
        return cat, json.dumps({"id": 1, "cmd": "levels_set", "levels_ua": [400] * 5,
                                "mac": None, "nonce": None}).encode()
    return cat, b'{"cmd":"unlock","id":1}\x00'


def generate(n: int, seed: int) -> list[tuple[str, random.Random]]:
    """n inputs, every category in turn (then shuffled), deterministic for a seed: (category, its own Random). Each
    is built only when sent (build()), so it signs with the nonce current then, as an attacker would."""
    rnd = random.Random(seed)
    cats = [CATEGORIES[i % len(CATEGORIES)] for i in range(n)]
    rnd.shuffle(cats)
    return [(c, random.Random(rnd.getrandbits(64))) for c in cats]


def build(item, ctx: Context) -> tuple[str, bytes]:
    cat, r = item
    return one_input(r, ctx, cat)


def lines_of(data: bytes) -> int:
    """How many request lines the unit sees in data + newline: every non-empty run between CR/LF gets one reply
    (an over-long one too: line_too_long)."""
    return sum(1 for seg in data.replace(b"\r", b"\n").split(b"\n") if seg)


# ---- the run -------------------------------------------------------------------------------------------------------
class ElectrodeWatch:
    """Back-to-back rig captures for as long as the campaign runs: the largest electrode current measured."""

    def __init__(self, vb, window_s: float = 2.0):
        self.vb, self.window_s = vb, window_s
        self.max_abs_ua = 0.0
        self.max_amp_ua = 0.0
        self.captures = 0
        self.pulses = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True, name="lock-electrodes")

    def _run(self):
        while not self._stop.is_set():
            try:
                cap = self.vb.rig.capture(self.window_s, trace_bins=16, keep_pieces=False)
            except Exception as e:  # noqa: BLE001 - a reset mid-window: note it, go on
                self.errors.append(str(e)[:120])
                time.sleep(0.05)
                continue
            self.captures += 1
            self.max_abs_ua = max(self.max_abs_ua, cap.max_abs_ua)
            act = cap.active_pulses()
            self.pulses += len(act)
            self.max_amp_ua = max([self.max_amp_ua] + [abs(a) for p in act for a in p.amp_ua])

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(timeout=60)


def _reconnect(vb, dev) -> bool:
    if getattr(vb, "in_bootloader", False):
        return False
    try:
        dev.t.reconnect(10)
        dev.hello(timeout=10)
        return True
    except Exception:  # noqa: BLE001
        return False


def read_until(dev, sid, timeout=10.0):
    replies, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        obj = dev._read_message(max(0.01, end - time.monotonic()))
        if obj is None or "ev" in obj:
            continue
        if obj.get("id") == sid:
            return replies, obj
        replies.append(obj)
    return replies, None


def snapshot(dev, vb=None) -> dict:
    """Everything that bounds the output, as the unit reports it (and as its flash holds it, where visible)."""
    h = dev.request("hello")
    snap = {"cap_ua": h.get("cap_ua"), "ceiling_ua": h.get("ceiling_ua"), "levels_ua": h.get("levels_ua"),
            "board": h.get("board"), "programs": h.get("programs"), "bundle": h.get("bundle"),
            "locked": h.get("locked"), "key_id": h.get("key_id"), "config": dev.request("config_get")["config"]}
    try:
        snap["calib"] = {k: v for k, v in dev.request("calib_get").items() if k not in ("id", "ok")}
    except Exception as e:  # noqa: BLE001 - firmware without calibration (issue 12 not merged): unknown_cmd
        snap["calib"] = getattr(e, "code", "?")
    flash = getattr(vb, "flash_dir", None)
    if flash is not None:
        files = {}
        for p in sorted(flash.rglob("*")):
            rel = "/" + str(p.relative_to(flash))
            # the unit's own run-time records: audit trail, zone memory; lock.bin's boot counter moves per boot
            if p.is_file() and not rel.startswith(("/audit.bin", "/session.bin", "/lock.bin")):
                files[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        snap["flash"] = files
    return snap


def keep_stimulating(dev, level: int):
    """A session at the top level (what a user may do): the rig watches that nothing raises it."""
    st = dev.request("status")
    if st.get("state") in ("idle",):
        dev.request("start", level=level, phase_us=200, gap_us=100, rate_hz=20, duration_s=1200)
    st = dev.request("status")
    if st.get("level") != level and st.get("state") in ("ramping", "running", "paused"):
        dev.request("set_level", level=level)


def attack(vb, dev, inputs, captured: list[bytes], ctx: Context, progress=None, reply_timeout: float = 10.0) -> dict:
    """Send every input to the locked unit on dev; returns the measured figures and the violations."""
    n_levels = len(dev.request("hello")["levels_ua"])
    before = snapshot(dev, vb)
    repl0 = getattr(vb, "repl_entries", None)
    boots0 = getattr(vb, "boot_count", 0)
    dev.noise.clear()
    s = {"inputs": 0, "lines": 0, "rejections": 0, "answered": 0, "accepted": [], "uncoded": [], "missing": [],
         "repl_marks": [], "port_lost": [], "by_category": {c: 0 for c in CATEGORIES}, "codes": {}}
    keep_stimulating(dev, n_levels)
    with ElectrodeWatch(vb) as watch:
        for k, item in enumerate(inputs):
            cat, data = build(item, ctx)
            s["inputs"] += 1
            s["by_category"][cat] += 1
            want = lines_of(data)
            s["lines"] += want
            sid = f"n{k}"
            try:
                dev.send_raw(data + b"\n")
                dev.send_raw(json.dumps({"id": sid, "cmd": "nonce"}).encode() + b"\n")
                replies, st = read_until(dev, sid, reply_timeout)
            except TransportError as e:     # the unit went away (BOOTSEL, reset): a finding; get it back
                s["port_lost"].append({"input": k, "cat": cat, "data": data[:160].hex(), "detail": str(e)[:100]})
                if not _reconnect(vb, dev):
                    break
                continue
            for r in replies:
                if r.get("ok") is True:
                    s["accepted"].append({"input": k, "cat": cat, "data": data[:160].hex(), "reply": r})
                else:
                    s["rejections"] += 1
                    code = r.get("error")
                    s["codes"][code] = s["codes"].get(code, 0) + 1
                    if code in ERROR_CODES:
                        s["answered"] += 1
                    else:
                        s["uncoded"].append({"input": k, "reply": r})
            if st is None or len(replies) != want:
                s["missing"].append({"input": k, "cat": cat, "lines": want, "replies": len(replies),
                                     "sentinel": st is not None, "data": data[:160].hex()})
                if st is None:
                    dev.t.drain(quiet_s=0.2)
            else:
                ctx.nonce = st.get("nonce", ctx.nonce)
            if dev.noise:       # a locked unit's port carries protocol lines only: anything else is a finding
                for line in list(dev.noise):
                    s["repl_marks"].append({"input": k, "cat": cat, "line": line[:120],
                                            "repl": any(m.decode("latin-1") in line for m in REPL_MARKS)})
                dev.noise.clear()
            if k % 200 == 199:
                keep_stimulating(dev, n_levels)
                if progress:
                    progress(k + 1, s)
    try:
        after = snapshot(dev, vb)
    except Exception as e:  # noqa: BLE001 - the unit no longer answers: everything may have changed
        after = {"error": str(e)[:120]}
    s["repl_entries"] = None if repl0 is None else vb.repl_entries - repl0
    s["boots"] = getattr(vb, "boot_count", 0) - boots0
    s["changes"] = {key: {"before": before[key], "after": after.get(key)} for key in before
                    if before[key] != after.get(key) and key != "nonce"}
    s["electrodes"] = {"max_abs_ua": watch.max_abs_ua, "max_amp_ua": watch.max_amp_ua, "captures": watch.captures,
                       "pulses": watch.pulses, "errors": watch.errors[:5]}
    return s


def verdict(s: dict, cap_ua: float, tol_ua: float) -> list[str]:
    """The campaign's four results, each as a problem sentence (empty: the attack suite found nothing)."""
    bad = []
    if s["repl_entries"]:
        bad.append(f"{s['repl_entries']} REPL entries")
    if s["repl_marks"]:
        bad.append(f"{len(s['repl_marks'])} non-protocol lines on the port: {s['repl_marks'][:3]}")
    if s["changes"]:
        bad.append(f"changed: {s['changes']}")
    if s["accepted"]:
        bad.append(f"{len(s['accepted'])} attack lines accepted: {s['accepted'][:3]}")
    if s["uncoded"] or s["missing"]:
        bad.append(f"unanswered/uncoded: {s['missing'][:3]} {s['uncoded'][:3]}")
    if s["answered"] != s["lines"]:
        bad.append(f"{s['lines']} lines sent, {s['answered']} coded rejections")
    if s["electrodes"]["max_amp_ua"] > cap_ua + tol_ua or s["electrodes"]["max_abs_ua"] > cap_ua + tol_ua:
        bad.append(f"electrode current above the cap: {s['electrodes']}")
    if not s["electrodes"]["pulses"]:
        bad.append("the rig saw no stimulation during the attack (nothing was at stake)")
    if s["boots"]:
        bad.append(f"{s['boots']} resets during the attack")
    bf = s.get("boot_flood")
    if bf and (bf["came_back_locked"] != bf["resets"] or bf["repl_entries"]):
        bad.append(f"boot-window flood: {bf}")
    if s["port_lost"]:
        bad.append(f"the port went away {len(s['port_lost'])} times: {s['port_lost'][:2]}")
    return bad


def lock_unit(dev, signer) -> list[bytes]:
    """Lock the unit with the signer's key; returns genuine signed lines the maker sent (captured by the attacker):
    a no-op levels_set to the current table and an `auth` check."""
    dev.lock(signer)
    uid = dev.hello()["uid"]
    table = dev.request("levels_get")["levels_ua"]
    nonce = dev.request("nonce")["nonce"]
    line = signer.sign_line(uid, {"id": "maker1", "cmd": "levels_set", "levels_ua": table, "operator": "maker"},
                            nonce)
    dev.send_raw(line + b"\n")
    dev.wait_reply("maker1", "levels_set")          # raises unless ok
    nonce = dev.request("nonce")["nonce"]
    line2 = signer.sign_line(uid, {"id": "maker2", "cmd": "auth"}, nonce)           # the station's key check
    dev.send_raw(line2 + b"\n")
    dev.wait_reply("maker2", "auth")
    return [line, line2]
