# Production lock (issue 14) on the unix port: HMAC-SHA256 against RFC 4231, then a unit locked through the
# protocol refuses every privileged request that is unsigned, wrongly signed or replayed (with its code, nothing
# changes), does the work when signed, records the key id in its audit trail, and keeps nonces apart across boots.
import json
import os
from binascii import hexlify, unhexlify
from mpytest import check, done, app_sandbox, app_with_output, Out

import audit
import config
import store
import lock
import pscodes as C
from hmac256 import hmac_sha256, equal

d, BOARD = app_sandbox("pslock")
import app as A
import lockcmd

# RFC 4231 test cases 1, 2, 6 (key longer than a block)
check("rfc4231_1", hexlify(hmac_sha256(b"\x0b" * 20, b"Hi There")) ==
      b"b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
check("rfc4231_2", hexlify(hmac_sha256(b"Jefe", b"what do ya want for nothing?")) ==
      b"5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
check("rfc4231_6", hexlify(hmac_sha256(b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First")) ==
      b"60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
check("equal", equal(b"abc", b"abc") and not equal(b"abc", b"abd") and not equal(b"ab", b"abc"))

# split_mac: only a trailing "mac" member of 64 hex digits counts
M = "ab" * 32
sm = lockcmd.split_mac(('{"id":1,"cmd":"x","nonce":"1.a.0","mac":"%s"}' % M).encode())
check("split_compact", sm is not None and sm[0] == b'{"id":1,"cmd":"x","nonce":"1.a.0"}' and sm[1] == unhexlify(M), sm)
sm = lockcmd.split_mac(('{"id": 1, "cmd": "x", "mac": "%s" }' % M).encode())
check("split_spaced", sm is not None and sm[0] == b'{"id": 1, "cmd": "x"}', sm)
for bad in ('{"mac":"%s"}' % M, '{"a":1,"mac":"%s","b":2}' % M, '{"a":1,"mac":"%s"}x' % M, '{"a":1,"mac":"%s"}' % M[:62],
            '{"a":1,"mac":"%s"}' % ("zz" * 32), '{"a":1,"mac":%s}' % ("1" * 66)):
    check("split_refuses_%s" % bad[-12:], lockcmd.split_mac(bad.encode()) is None, bad)


a, out = app_with_output(BOARD)
KEY = bytes(range(32))
KID = "k1test"


def send(line):
    for item in a.reader.feed(line + b"\n"):
        a.handle_line(item, 0)
    rs = [x for x in out.lines() if "ok" in x]
    return rs[-1] if rs else None


def req(obj):
    return send(json.dumps(obj).encode())


def signed(obj, key=KEY, nonce=None):
    """The host's signing, as picostim.auth does it: the line without mac, then the mac member appended last."""
    o = dict(obj)
    o["nonce"] = nonce if nonce is not None else req({"id": 900, "cmd": "nonce"})["nonce"]
    body = json.dumps(o).encode()
    return body[:-1] + (', "mac": "%s"}' % hexlify(hmac_sha256(key, body)).decode()).encode()


r = req({"id": 1, "cmd": "hello"})
check("unlocked_hello", r["ok"] and r["locked"] is False and r["nonce"] is None, r)
r = req({"id": 2, "cmd": "lock", "key": "12", "key_id": KID})
check("lock_bad_key_refused", r["ok"] is False and r["error"] == C.E_BAD_REQUEST and not lock.present(), r)
r = req({"id": 3, "cmd": "lock", "key": hexlify(KEY).decode(), "key_id": KID})
check("lock_ok", r["ok"] and r["locked"] and r["key_id"] == KID and lock.present(), r)
r = req({"id": 4, "cmd": "hello"})
check("locked_hello", r["locked"] is True and r["key_id"] == KID and isinstance(r["nonce"], str), r)

levels0 = req({"id": 5, "cmd": "levels_get"})["levels_ua"]
cfg0 = req({"id": 6, "cmd": "config_get"})["config"]
new = [70, 150, 230, 310, 390]
cases = [
    ("missing_mac", json.dumps({"id": 10, "cmd": "levels_set", "levels_ua": new}).encode(), C.E_AUTH_REQUIRED),
    ("wrong_key", lambda: signed({"id": 11, "cmd": "levels_set", "levels_ua": new}, key=b"\x01" * 32), C.E_AUTH_FAILED),
    ("stale_nonce", signed({"id": 12, "cmd": "levels_set", "levels_ua": new}, nonce="0.0.0"), C.E_NONCE),
    ("cfg_missing_mac", json.dumps({"id": 13, "cmd": "config_set", "config": {"session_s": 60}}).encode(),
     C.E_AUTH_REQUIRED),
    ("trial_ua", json.dumps({"id": 14, "cmd": "set_level", "level": 2, "ua": 400}).encode(), C.E_AUTH_REQUIRED),
    ("bootloader", json.dumps({"id": 15, "cmd": "bootloader"}).encode(), C.E_AUTH_REQUIRED),
    ("audit_clear", json.dumps({"id": 16, "cmd": "audit", "clear": True}).encode(), C.E_AUTH_REQUIRED),
    ("unlock", json.dumps({"id": 17, "cmd": "unlock"}).encode(), C.E_AUTH_REQUIRED),
    ("relock_other_key", json.dumps({"id": 18, "cmd": "lock", "key": "00" * 32, "key_id": "evil"}).encode(),
     C.E_AUTH_REQUIRED),
]
# an altered signed request: the mac was made for a lower table
cases.append(("altered", lambda: signed({"id": 19, "cmd": "levels_set", "levels_ua": [60, 140, 220, 300, 380]})
              .replace(b"380", b"400"), C.E_AUTH_FAILED))
for name, line, code in cases:
    if not isinstance(line, bytes):
        line = line()        # signed for the nonce current now
    r = send(line)
    check("refused_" + name, r is not None and r["ok"] is False and r["error"] == code, (r, line[:80]))
check("refused_nothing_changed", req({"id": 20, "cmd": "levels_get"})["levels_ua"] == levels0 and
      req({"id": 21, "cmd": "config_get"})["config"] == cfg0 and getattr(a, "pending", None) is None and lock.present() and
      a.lk.key_id == KID)
# a user still chooses among the levels
r = req({"id": 22, "cmd": "start", "level": 3})
check("user_start_level", r["ok"] and r["requested_level"] == 3, r)
r = req({"id": 23, "cmd": "set_level", "level": 4})
check("user_set_level", r["ok"] and r["level"] == 4, r)
req({"id": 24, "cmd": "stop"})

# with the key: the work gets done, the audit names the key
line = signed({"id": 30, "cmd": "levels_set", "levels_ua": new, "operator": "tech9"})
r = send(line)
check("signed_levels_set", r["ok"] and r["levels_ua"] == new, r)
e = req({"id": 31, "cmd": "audit"})["entries"][-1]
check("audit_key_id", e["key_id"] == KID and e["operator"] == "tech9" and e["level"] == 5, e)
r = send(line)
check("replay_refused", r["ok"] is False and r["error"] == C.E_NONCE, r)
r = send(signed({"id": 32, "cmd": "config_set", "config": {"session_s": 300, "default_level": 1}}))
check("signed_config_set", r["ok"] and r["config"]["session_s"] == 300, r)
r = send(signed({"id": 33, "cmd": "auth"}))
check("auth_verified", r["ok"] and r["verified"] is True, r)

# a new boot: the counter moved on, a nonce of the last boot is refused
n_old = req({"id": 40, "cmd": "nonce"})["nonce"]
pre = signed({"id": 41, "cmd": "levels_set", "levels_ua": levels0}, nonce=n_old)
boot0 = a.lk.boot
a = None                 # (the first App goes: two whole apps do not fit a 192 KB heap for long)
import gc
gc.collect()
out = Out()
a = A.App(BOARD, out)
check("reboot_locked", a.lk is not None and a.lk.key == KEY and a.lk.boot == boot0 + 1)
a.audit = audit.Audit(audit.AUDIT_PATH)
r = send(pre)
check("old_boot_nonce_refused", r["ok"] is False and r["error"] == C.E_NONCE and
      req({"id": 42, "cmd": "levels_get"})["levels_ua"] == new, r)

# unlock (signed): lock file gone, reset pending, audit entry with the key id
a.pending = None
r = send(signed({"id": 50, "cmd": "unlock"}))
check("unlock_ok", r["ok"] and r["locked"] is False and not lock.present() and a.pending == "reset", r)
e = req({"id": 51, "cmd": "audit"})["entries"][-1]
check("unlock_audited", e.get("what") == "unlock" and e["key_id"] == KID, e)
r = req({"id": 53, "cmd": "unlock"})
check("unlock_when_unlocked_is_a_no_op", r["ok"] and r["locked"] is False and "state" not in r, r)
r = req({"id": 52, "cmd": "levels_set", "levels_ua": levels0})
check("unlocked_levels_set", r["ok"], r)

# a damaged lock file: still locked, nothing verifies (fail closed)
with open(lock.LOCK_PATH, "wb") as f:
    f.write(b"garbage")
a = out = None
gc.collect()
a3 = A.App(BOARD, Out())
check("corrupt_lock_stays_locked", a3.lk is not None and a3.lk.key is None)
a, out = a3, Out()
a.out = out
r = send(signed({"id": 60, "cmd": "levels_set", "levels_ua": new}))
check("corrupt_lock_refuses", r["ok"] is False and r["error"] == C.E_AUTH_FAILED, r)
os.remove(lock.LOCK_PATH)
done()
