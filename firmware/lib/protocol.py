# JSON-lines protocol: framing, parsing and argument checks. Pure functions (no hardware) so the same code is
# fuzzed under CPython/hypothesis and run on the device. Every failure is a ProtoError carrying a pscodes code.
import json

from pscodes import (MAX_LINE, E_BAD_JSON, E_LINE_TOO_LONG, E_BAD_REQUEST, E_BAD_TYPE, E_OUT_OF_RANGE)


class ProtoError(ValueError):
    def __init__(self, code, detail, rid=None):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.rid = rid


class LineReader:
    """Accumulates bytes into lines of at most max_line bytes, in one buffer allocated up front. An over-long line
    is dropped whole (up to its newline, however long that takes to arrive) and reported once, so a flood cannot
    grow memory and nothing inside an over-long line is ever parsed."""

    def __init__(self, max_line=MAX_LINE):
        self.max_line = max_line
        self.buf = bytearray(max_line)
        self.n = 0
        self.overflow = False

    def feed_byte(self, b):
        """One byte (int): a complete line (bytes), a ProtoError for an over-long one, or None (line not over)."""
        if b == 10 or b == 13:
            if self.overflow:
                self.overflow = False
                return ProtoError(E_LINE_TOO_LONG, "line longer than %d bytes" % self.max_line)
            n = self.n
            if n:
                self.n = 0
                return bytes(memoryview(self.buf)[:n])
            return None
        if self.overflow:
            return None
        n = self.n
        if n >= self.max_line:
            self.overflow = True
            self.n = 0
            return None
        self.buf[n] = b
        self.n = n + 1
        return None

    def feed(self, data):
        """Feed bytes; return a list of complete lines (bytes) or ProtoError instances for over-long ones."""
        out = []
        for b in data:
            r = self.feed_byte(b)
            if r is not None:
                out.append(r)
        return out


def _valid_id(v):
    return v is None or (isinstance(v, int) and not isinstance(v, bool) and -(1 << 29) <= v < (1 << 29)) or \
        (isinstance(v, str) and len(v) <= 64)


# _separators_ok states: what may come next outside a string
_VALUE = 0          # a value
_AFTER = 1          # ',' or the closer (a value just ended)
_KEY = 2            # a member's key (after ',' in an object)
_COLON = 3          # ':' (a key just ended)
_KEY_OR_END = 4     # a key or '}' (right after '{')
_VALUE_OR_END = 5   # a value or ']' (right after '[')


def _separators_ok(t):
    """MicroPython's json.loads reads ',' and ':' as white space ({"cmd" "x"}, [1 2], {"a":1,} and [1,,2] all
    load), so a line a JSON parser would refuse could act. Check the separators as JSON has them; json.loads has
    already checked the rest (strings, numbers, nesting)."""
    stack = []
    st = _VALUE
    i = 0
    n = len(t)
    while i < n:
        c = t[i]
        if c in " \t\r\n":
            i += 1
            continue
        if c == '"':
            if st == _KEY or st == _KEY_OR_END:
                st = _COLON
            elif st == _VALUE or st == _VALUE_OR_END:
                st = _AFTER
            else:
                return False
            i += 1
            while i < n and t[i] != '"':
                i += 2 if t[i] == "\\" else 1
        elif c == "{" or c == "[":
            if st != _VALUE and st != _VALUE_OR_END:
                return False
            stack.append(c)
            st = _KEY_OR_END if c == "{" else _VALUE_OR_END
        elif c == "}" or c == "]":
            if not stack or stack.pop() != ("{" if c == "}" else "["):
                return False
            if st != _AFTER and st != (_KEY_OR_END if c == "}" else _VALUE_OR_END):
                return False
            st = _AFTER
        elif c == ":":
            if st != _COLON:
                return False
            st = _VALUE
        elif c == ",":
            if st != _AFTER or not stack:
                return False
            st = _KEY if stack[-1] == "{" else _VALUE
        else:
            # a number, true, false or null: one run of characters
            if st != _VALUE and st != _VALUE_OR_END:
                return False
            while i < n and t[i] not in ' \t\r\n,:[]{}"':
                i += 1
            st = _AFTER
            continue
        i += 1
    return st == _AFTER and not stack


def parse(line):
    """bytes -> (id, cmd, request dict). Raises ProtoError (with the id when one could be read)."""
    try:
        text = line.decode()
    except (UnicodeError, ValueError):
        raise ProtoError(E_BAD_JSON, "line is not UTF-8")
    try:
        req = json.loads(text)
    except MemoryError:
        raise          # not the line's fault: the caller reports it as internal
    except Exception:  # ValueError, or RuntimeError/MemoryError for deep nesting (no RecursionError on MicroPython)
        raise ProtoError(E_BAD_JSON, "line is not JSON")
    if not _separators_ok(text):
        raise ProtoError(E_BAD_JSON, "line is not JSON (a ',' or ':' missing or out of place)")
    if not isinstance(req, dict):
        raise ProtoError(E_BAD_REQUEST, "request must be a JSON object")
    rid = req.get("id")
    if not _valid_id(rid):
        raise ProtoError(E_BAD_REQUEST, "id must be an integer or a short string")
    cmd = req.get("cmd")
    if not isinstance(cmd, str):
        raise ProtoError(E_BAD_REQUEST, "cmd missing or not a string", rid)
    return rid, cmd, req


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def get_int(req, name, lo, hi, default=None, required=False):
    if name not in req or req[name] is None:
        if required:
            raise ProtoError(E_BAD_REQUEST, "%s is required" % name)
        return default
    v = req[name]
    if not _is_int(v):
        raise ProtoError(E_BAD_TYPE, "%s must be an integer" % name)
    if v < lo or v > hi:
        raise ProtoError(E_OUT_OF_RANGE, "%s must be %d..%d" % (name, lo, hi))
    return v


def get_num_milli(req, name, lo_milli, hi_milli, default=None, required=False):
    """A number (int or float) returned as an integer in thousandths, range-checked in thousandths."""
    if name not in req or req[name] is None:
        if required:
            raise ProtoError(E_BAD_REQUEST, "%s is required" % name)
        return default
    v = req[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ProtoError(E_BAD_TYPE, "%s must be a number" % name)
    if v != v or v > 1e7 or v < -1e7:      # NaN / inf / absurd
        raise ProtoError(E_OUT_OF_RANGE, "%s out of range" % name)
    m = int(v * 1000 + (0.5 if v >= 0 else -0.5))
    if m < lo_milli or m > hi_milli:
        raise ProtoError(E_OUT_OF_RANGE, "%s must be %g..%g" % (name, lo_milli / 1000, hi_milli / 1000))
    return m


def get_bool(req, name, default=None):
    if name not in req or req[name] is None:
        return default
    v = req[name]
    if not isinstance(v, bool):
        raise ProtoError(E_BAD_TYPE, "%s must be true or false" % name)
    return v


def get_str(req, name, max_len, default=None, required=False):
    if name not in req or req[name] is None:
        if required:
            raise ProtoError(E_BAD_REQUEST, "%s is required" % name)
        return default
    v = req[name]
    if not isinstance(v, str):
        raise ProtoError(E_BAD_TYPE, "%s must be a string" % name)
    if not 0 < len(v) <= max_len:
        raise ProtoError(E_OUT_OF_RANGE, "%s must be 1..%d characters" % (name, max_len))
    return v


def check_keys(req, allowed):
    for k in req:
        # nonce + mac: any request may be signed (issue 14); the commands that need it say so (App.authorize)
        if k != "id" and k != "cmd" and k != "nonce" and k != "mac" and k not in allowed:
            raise ProtoError(E_BAD_REQUEST, "unknown argument %s" % k)


def reply_ok(rid, fields):
    d = {"id": rid, "ok": True}
    for k in fields:
        d[k] = fields[k]
    return json.dumps(d)


def reply_err(rid, code, detail):
    return json.dumps({"id": rid, "ok": False, "error": code, "detail": detail})


def event(name, t_ms, fields):
    d = {"ev": name, "t_ms": t_ms}
    for k in fields:
        d[k] = fields[k]
    return json.dumps(d)
