# Persistent records written atomically (S12): the payload goes to <path>.tmp, then rename() replaces the old
# file in one step, so a power cut leaves either the old or the new record, never a half-written one.
# Layout (explicit little-endian): MAGIC(4) | version u16 | length u32 | crc32 u32 | payload (JSON, UTF-8)
import json
import os
import struct
from binascii import crc32

from pscodes import CONFIG_VERSION

MAGIC = b"PSC1"
HEADER = "<4sHII"
HEADER_LEN = 14
MAX_PAYLOAD = 8192


class StoreError(ValueError):
    pass


def encode(obj, version=CONFIG_VERSION):
    payload = json.dumps(obj).encode()
    if len(payload) > MAX_PAYLOAD:
        raise StoreError("record too large")
    return struct.pack(HEADER, MAGIC, version, len(payload), crc32(payload) & 0xFFFFFFFF) + payload


def decode(data, version=CONFIG_VERSION):
    """Return the stored object or raise StoreError (bad magic/version/length/CRC/JSON)."""
    if len(data) < HEADER_LEN:
        raise StoreError("truncated header")
    magic, ver, n, crc = struct.unpack(HEADER, data[:HEADER_LEN])
    if magic != MAGIC:
        raise StoreError("bad magic")
    if ver != version:
        raise StoreError("unsupported version %d" % ver)
    payload = data[HEADER_LEN:]
    if n != len(payload) or n > MAX_PAYLOAD:
        raise StoreError("length mismatch")
    if crc32(payload) & 0xFFFFFFFF != crc:
        raise StoreError("crc mismatch")
    try:
        return json.loads(payload)
    except ValueError:
        raise StoreError("payload is not JSON")


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _discard(path):
    try:
        os.remove(path)
    except OSError:
        pass


def commit(path, data):
    """Make an encoded record current: write <path>.tmp, then rename it over <path> (atomic on LittleFS and POSIX).
    Returns only once the new record is current; raises (OSError, MemoryError, ...) only while the old one still is,
    so a caller can build everything it will report before calling and apply the change after it returns."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
    except BaseException:
        _discard(tmp)
        raise
    try:
        os.rename(tmp, path)
    except BaseException:
        # rename itself failed on its way out (e.g. MemoryError): the new record is current iff the temp file is gone
        if _exists(tmp):
            _discard(tmp)
            raise


def write_atomic(path, obj):
    commit(path, encode(obj))


def read(path, version=CONFIG_VERSION):
    """Return the object, None if there is no record, or raise StoreError if it is corrupt."""
    if _exists(path + ".tmp"):
        # a power cut before the rename: the temp file may be partial; the old record is still intact
        try:
            os.remove(path + ".tmp")
        except OSError:
            pass
    try:
        size = os.stat(path)[6]
    except OSError:
        return None
    if size > HEADER_LEN + MAX_PAYLOAD:
        raise StoreError("record too large")
    with open(path, "rb") as f:
        data = f.read(size)
    return decode(data, version)
