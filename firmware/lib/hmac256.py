# HMAC-SHA256 (RFC 2104) on hashlib.sha256, which MicroPython's rp2 and unix ports have built in: the production
# lock verifies request MACs with it. Small and allocation-light: two 64-byte pads per call.
from hashlib import sha256

BLOCK = 64


def hmac_sha256(key, msg):
    if len(key) > BLOCK:
        key = sha256(key).digest()
    ipad = bytearray(BLOCK)
    opad = bytearray(BLOCK)
    for i in range(BLOCK):
        k = key[i] if i < len(key) else 0
        ipad[i] = k ^ 0x36
        opad[i] = k ^ 0x5C
    h = sha256(ipad)
    h.update(msg)
    inner = h.digest()
    h = sha256(opad)
    h.update(inner)
    return h.digest()


def equal(a, b):
    """Constant-time comparison (the time does not tell an attacker how many leading bytes of a guess match)."""
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0
