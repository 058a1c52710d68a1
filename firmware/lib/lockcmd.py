# Production lock state, commands and the one authorization check (issue 14). Loaded only when a unit is locked
# or a lock command arrives (app.py imports it lazily): an unlocked unit's heap never holds it.
#
# /lock.bin (lock.LOCK_PATH) holds this unit's key (derived at the station from the line secret and the uid: the
# line secret never reaches a unit), its key id and a boot counter. The request nonce is "<boot>.<salt>.<n>": n
# counts signed attempts since boot, salt is random per boot and per lock, so no nonce repeats across resets, nor
# after an unlock or a reflash has lost the counter. Written atomically with a CRC (store.py). A lock file that
# exists but cannot be read keeps the unit locked with no usable key (fail closed): only a BOOTSEL reflash opens it.
#
# A privileged request carries "nonce" (the device's current one) and, as its line's LAST member, "mac": 64 hex
# digits of HMAC-SHA256(unit key, the line's bytes with that member removed). The MAC covers the exact bytes the
# device parsed: no canonical re-encoding (MicroPython's single-precision floats would not reproduce the host's).
import os
from binascii import unhexlify, hexlify
import micropython

import lock as L
import store
import pscodes as C
from protocol import ProtoError, get_str, check_keys
from hmac256 import hmac_sha256, equal


class Lock:
    def __init__(self, key, key_id, boot):
        self.key = key            # bytes (32) or None: a damaged record (nothing verifies)
        self.key_id = key_id
        self.boot = boot
        self.n = 0
        self.problem = None
        self.line = None          # the request line being handled (App.handle_line): the mac covers its bytes
        self.kid = None           # the key id that signed it
        try:
            self.salt = hexlify(os.urandom(4)).decode()
        except Exception:         # no RNG: the counter alone still keeps this lock's nonces apart
            self.salt = "0"

    def nonce(self):
        return "%d.%s.%d" % (self.boot, self.salt, self.n)


def save(key_hex, key_id, boot):
    store.write_atomic(L.LOCK_PATH, {"key": key_hex, "key_id": key_id, "boot": boot})


def load():
    """None on an unlocked unit; else the Lock, its boot counter advanced and stored before any request is heard
    (a nonce of an earlier boot never comes back)."""
    if not L.present():
        return None
    try:
        rec = store.read(L.LOCK_PATH)
        if rec is None:           # removed between the two looks
            return None
        key = unhexlify(rec["key"])
        kid = rec["key_id"]
        boot = rec["boot"] + 1
        if len(key) != 32 or not isinstance(kid, str) or not isinstance(boot, int):
            raise ValueError("lock record fields")
        save(rec["key"], kid, boot)
        return Lock(key, kid, boot)
    except Exception as e:        # corrupt, unreadable, or the counter cannot be stored: locked, nothing verifies
        lk = Lock(None, None, 0)
        lk.problem = str(e)
        return lk


def split_mac(line):
    """(signed bytes, mac bytes) when the line ends with the member "mac":"<64 hex>" (spaces allowed around ':'
    and before '}'), else None. signed = the line without that member: what the host signed."""
    i = line.rfind(b'"mac"')
    if i < 1:
        return None
    n = len(line)
    j = i + 5
    while j < n and line[j] == 32:
        j += 1
    if j >= n or line[j] != 58:           # ':'
        return None
    j += 1
    while j < n and line[j] == 32:
        j += 1
    if j + 66 > n or line[j] != 34 or line[j + 65] != 34:
        return None
    try:
        mac = unhexlify(line[j + 1:j + 65])
    except ValueError:
        return None
    j += 66
    while j < n and line[j] == 32:
        j += 1
    if j != n - 1 or line[j] != 125:      # '}' and nothing after it
        return None
    k = i - 1
    while k > 0 and line[k] == 32:
        k -= 1
    if line[k] != 44:                     # ','
        return None
    return line[:k] + b"}", mac


def authorize(app, req, what):
    """None on an unlocked unit; on a locked one the key id when req is signed for the current nonce, else
    ProtoError (auth_required / bad_nonce / auth_failed). Every signed attempt uses the nonce up."""
    lk = app.lk
    if lk is None:
        return None
    if "mac" not in req:
        raise ProtoError(C.E_AUTH_REQUIRED, "locked: %s needs the maker's key" % what)
    cur = lk.nonce()
    lk.n += 1
    if req.get("nonce") != cur:
        raise ProtoError(C.E_NONCE, "nonce missing or used: ask nonce, sign again")
    sm = split_mac(lk.line) if isinstance(lk.line, bytes) else None
    mac = req.get("mac")
    if lk.key is None:
        raise ProtoError(C.E_AUTH_FAILED, "lock record unreadable: %s" % lk.problem)
    if sm is None or not isinstance(mac, str) or mac.lower().encode() != _hex(sm[1]):
        raise ProtoError(C.E_AUTH_FAILED, "mac must be the last member: \"mac\":\"<64 hex>\"")
    if not equal(hmac_sha256(lk.key, sm[0]), sm[1]):
        raise ProtoError(C.E_AUTH_FAILED, "mac does not verify")
    return lk.key_id


def _hex(b):
    return hexlify(b)


def state(app):
    lk = app.lk
    return {"locked": lk is not None, "key_id": lk.key_id if lk else None, "nonce": lk.nonce() if lk else None}


def cmd_nonce(app, req):
    check_keys(req, ())
    return state(app)


def cmd_auth(app, req):
    """A signed no-op: the station checks that the unit holds the key it derived (after lock)."""
    kid = authorize(app, req, "auth")       # first, as every privileged request (App.authorize)
    check_keys(req, ())
    d = state(app)
    d["verified"] = kid is not None
    return d


def cmd_lock(app, req):
    """Unlocked: the station's last step stores the unit key. Locked: re-keying needs the current key."""
    authorize(app, req, "lock")
    check_keys(req, ("key", "key_id"))
    key = get_str(req, "key", 64, required=True)
    kid = get_str(req, "key_id", 16, required=True)
    try:
        if len(unhexlify(key)) != 32:
            raise ValueError
    except ValueError:
        raise ProtoError(C.E_BAD_REQUEST, "key must be 64 hex digits")
    boot = app.lk.boot if app.lk is not None else 0
    save(key.lower(), kid, boot)
    app.lk = Lock(unhexlify(key), kid, boot)   # a new salt: no nonce shown before comes back
    micropython.kbd_intr(-1)                     # from now on Ctrl-C is data
    audit_lock(app, "lock", kid)
    return state(app)


def cmd_unlock(app, req):
    """Signed: remove the lock, then reset (pending) so the unit boots unlocked: REPL and deploys work again."""
    if app.lk is None:
        check_keys(req, ())
        return state(app)           # not locked: nothing to do, no reset
    kid = authorize(app, req, "unlock")
    check_keys(req, ())
    os.remove(L.LOCK_PATH)
    app.lk = None
    audit_lock(app, "unlock", kid)
    app.idle_output()
    app.pending = "reset"
    return {"locked": False, "key_id": kid, "state": "reset"}


def audit_lock(app, what, kid):
    try:
        app.audit.record("lock", None, None, None, None, key_id=kid, what=what)
    except (MemoryError, OSError):
        pass     # the lock state is stored; only its audit entry is missing


COMMANDS = {"nonce": cmd_nonce, "auth": cmd_auth, "lock": cmd_lock, "unlock": cmd_unlock}
