"""Production lock, host side (issue 14): line secrets, per-device keys and request signing.

* The **line secret** (32 random bytes, `picostim keygen`) stays at the station / with the maker's field tools, in a
  key file (`--key-file`, or `$PICOSTIM_KEY_FILE`): one line of 64 hex digits.
* A unit's **key** = HMAC-SHA256(line secret, "picostim-unit-key:" + uid hex). The station derives it and `lock`
  stores it on that unit alone: a key read out of one unit's flash opens no other unit.
* The **key id** names the line secret (its first 4 bytes of HMAC-SHA256(line secret, "picostim-key-id:")): units
  record it in `hello` and in every audit entry of a signed change, so a maker sees which key made a change.
* A signed request carries `"nonce"` (the unit's current one, from `hello` / `nonce`) and, as the LAST member of its
  line, `"mac"`: HMAC-SHA256(unit key, the line's bytes without that member). Each nonce is good for one attempt.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path

from .shared import codes

KEY_FILE_ENV = "PICOSTIM_KEY_FILE"
LOCK_KEY_LABEL = "picostim-unit-key:"       # unit key = HMAC-SHA256(line secret, LOCK_KEY_LABEL + uid hex)
LOCK_KEY_ID_LABEL = "picostim-key-id:"      # key id = HMAC-SHA256(line secret, LOCK_KEY_ID_LABEL)[:4].hex()


class KeyFileError(ValueError):
    pass


def keygen(path, force: bool = False) -> str:
    """Write a new line secret to `path` (mode 0600; an existing file is kept unless force). Returns its key id."""
    p = Path(path)
    if p.exists() and not force:
        raise KeyFileError(f"{p}: exists (a line secret is never overwritten by accident; --force replaces it)")
    secret = secrets.token_bytes(32)
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")
    os.replace(tmp, p)
    return key_id(secret)


def read_line_secret(path) -> bytes:
    p = Path(path)
    try:
        text = p.read_text().strip()
    except OSError as e:
        raise KeyFileError(f"{p}: {e.strerror or e}") from None
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise KeyFileError(f"{p}: not a picostim key file (one line of 64 hex digits)") from None
    if len(secret) != 32:
        raise KeyFileError(f"{p}: the line secret must be 32 bytes (64 hex digits), found {len(secret)}")
    try:
        if p.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            import logging
            logging.getLogger("picostim.auth").warning("%s: readable by others (chmod 600)", p)
    except OSError:
        pass
    return secret


def key_file_from_env(path=None):
    """The key file given (option) or $PICOSTIM_KEY_FILE, else None."""
    return path or os.environ.get(KEY_FILE_ENV) or None


def key_id(line_secret: bytes) -> str:
    return hmac.new(line_secret, LOCK_KEY_ID_LABEL.encode(), hashlib.sha256).hexdigest()[:8]


def unit_key(line_secret: bytes, uid: str) -> bytes:
    """The per-device key the station stores on the unit with this uid (hex, as `hello` reports it)."""
    return hmac.new(line_secret, (LOCK_KEY_LABEL + uid.lower()).encode(), hashlib.sha256).digest()


def sign_line(key: bytes, request: dict, nonce: str) -> bytes:
    """The request line (without its newline) carrying `nonce` and, last, its mac."""
    body = json.dumps({**{k: v for k, v in request.items() if k not in ("nonce", "mac")}, "nonce": nonce},
                      separators=(",", ":")).encode()
    mac = hmac.new(key, body, hashlib.sha256).hexdigest()
    return body[:-1] + b',"mac":"' + mac.encode() + b'"}'


class Signer:
    """Signs requests for any unit of one line secret (the unit key follows the uid `hello` reports)."""

    def __init__(self, line_secret: bytes):
        self.secret = line_secret
        self.key_id = key_id(line_secret)

    @classmethod
    def from_file(cls, path) -> "Signer":
        return cls(read_line_secret(path))

    @classmethod
    def from_env(cls, path=None) -> "Signer | None":
        p = key_file_from_env(path)
        return cls.from_file(p) if p else None

    def unit_key(self, uid: str) -> bytes:
        return unit_key(self.secret, uid)

    def sign_line(self, uid: str, request: dict, nonce: str) -> bytes:
        return sign_line(self.unit_key(uid), request, nonce)

    def mac_fn(self, uid: str, nonce: str):
        """request dict -> mac hex, for callers that add the mac member themselves (it must go last, and the
        line must be json.dumps(request, separators=(",", ":")) with nonce set)."""
        def fn(request: dict) -> str:
            line = self.sign_line(uid, request, nonce)
            return json.loads(line)["mac"]
        return fn


def needs_signature(cmd: str, args: dict) -> bool:
    """Is this request privileged on a locked unit? (pscodes.LOCK_GATED, plus a trial amplitude and audit clear)"""
    if cmd in codes.LOCK_GATED:
        return True
    if cmd == "set_level" and args.get("ua") is not None:
        return True
    if cmd == "audit" and args.get("clear"):
        return True
    return False
