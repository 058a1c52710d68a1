"""The rig protocol: JSON lines between a test host and a rig (the virtual rig over TCP on 127.0.0.1, or the rig
firmware on a second Pico over a serial port — the same lines either way).

Request:  {"id": 7, "op": "capture", "kw": {"duration_s": 1.0}}
Reply:    {"id": 7, "ok": true, "result": ...}
          {"id": 7, "ok": false, "error": "<code>", "detail": "..."}
Codes: bad_json, line_too_long, bad_request, unknown_op, rig_error, internal. A bad line gets an error reply and
changes nothing; the connection stays usable.
"""
from __future__ import annotations

import json
import math
import socket
import socketserver
import threading

from .rig import Capture, RigError

PROTOCOL_VERSION = 1
MAX_REQUEST = 64 * 1024

# op -> keyword arguments it accepts (every op takes keywords only)
OPS = {
    "ping": (),
    "info": (),
    "capture": ("duration_s", "start_s", "trace_bins", "keep_pieces"),
    "current_ua": (),
    "set_load": ("spec", "at_s"),
    "load": (),
    "inject": None,                # "fault", optional "at_s", plus that fault's own keywords (checked by the rig)
    "faults": (),
    "press": ("button", "ms"),
    "leds": (),
    "iset_log": ("since_ns",),
    "now_s": (),
    "wait": ("seconds",),
}


def _reply_error(rid, code, detail):
    return {"id": rid, "ok": False, "error": code, "detail": str(detail)[:500]}


def handle_line(rig, line: bytes) -> dict:
    """One request line -> one reply object (never raises)."""
    try:
        req = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        return _reply_error(None, "bad_json", e)
    if not isinstance(req, dict):
        return _reply_error(None, "bad_request", "request must be a JSON object")
    rid = req.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, (int, str))):
        return _reply_error(None, "bad_request", "id must be an int or a string")
    op = req.get("op")
    if not isinstance(op, str):
        return _reply_error(rid, "bad_request", "op (string) missing")
    if op not in OPS:
        return _reply_error(rid, "unknown_op", f"unknown op {op!r}; known: {', '.join(sorted(OPS))}")
    kw = req.get("kw", {})
    if not isinstance(kw, dict) or not all(isinstance(k, str) for k in kw):
        return _reply_error(rid, "bad_request", "kw must be an object")
    allowed = OPS[op]
    if allowed is not None:
        extra = set(kw) - set(allowed)
        if extra:
            return _reply_error(rid, "bad_request", f"{op} takes {list(allowed)}, got {sorted(extra)}")
    try:
        if op == "ping":
            result = {"proto": PROTOCOL_VERSION}
        elif op == "inject":
            kw = dict(kw)
            fault = kw.pop("fault", None)
            if not isinstance(fault, str):
                return _reply_error(rid, "bad_request", "inject needs fault (string)")
            result = rig.inject(fault, **kw)
        elif op == "set_load":
            if "spec" not in kw:
                return _reply_error(rid, "bad_request", "set_load needs spec")
            result = rig.set_load(kw["spec"], at_s=kw.get("at_s"))
        elif op == "press":
            if "button" not in kw:
                return _reply_error(rid, "bad_request", "press needs button")
            result = rig.press(**kw)
        elif op == "capture":
            if "duration_s" not in kw:
                return _reply_error(rid, "bad_request", "capture needs duration_s")
            result = rig.capture(**kw).to_dict()
        else:
            result = getattr(rig, op)(**kw)
    except RigError as e:
        return _reply_error(rid, "rig_error", e)
    except (TypeError, ValueError, KeyError) as e:
        return _reply_error(rid, "bad_request", e)
    except Exception as e:  # noqa: BLE001 - the server must survive anything a rig method raises
        return _reply_error(rid, "internal", f"{type(e).__name__}: {e}")
    return {"id": rid, "ok": True, "result": result}


def _dumps(obj) -> bytes:
    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o
    try:
        return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode() + b"\n"
    except ValueError:
        return json.dumps(clean(obj), separators=(",", ":")).encode() + b"\n"


def serve_stream(rig, rfile, wfile, lock=None) -> None:
    """Serve requests from a byte stream until EOF (a TCP connection or a serial port)."""
    while True:
        line = rfile.readline(MAX_REQUEST + 1)
        if not line:
            return
        if len(line) > MAX_REQUEST and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):       # discard the rest of the oversized line
                line = rfile.readline(MAX_REQUEST + 1)
            reply = _reply_error(None, "line_too_long", f"request lines are limited to {MAX_REQUEST} bytes")
        else:
            line = line.strip()
            if not line:
                continue
            reply = handle_line(rig, line)
        wfile.write(_dumps(reply))
        wfile.flush()


class _Handler(socketserver.StreamRequestHandler):
    def handle(self):
        try:
            serve_stream(self.server.rig, self.rfile, self.wfile)
        except (ConnectionError, OSError):
            pass


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class RigServer:
    """A running rig protocol server (TCP). `address` is what RigClient takes."""

    def __init__(self, rig, host="127.0.0.1", port=0):
        self._srv = _Server((host, port), _Handler)
        self._srv.rig = rig
        self.host, self.port = self._srv.server_address[:2]
        self.address = f"tcp://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._srv.serve_forever, args=(0.05,), name="rig-server",
                                        daemon=True)
        self._thread.start()

    def close(self):
        self._srv.shutdown()
        self._srv.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def serve_rig(rig, host="127.0.0.1", port=0) -> RigServer:
    """Serve `rig` on host:port (port 0: any free port) in a background thread."""
    return RigServer(rig, host, port)


class RigClient:
    """Talks to a rig at `address`: "tcp://127.0.0.1:PORT", a serial device path or a pyserial URL
    (socket://, rfc2217://). Same methods and return values as VirtualRig (a Capture comes back rebuilt)."""

    def __init__(self, address: str, timeout: float = 600.0):
        self.address = address
        self._lock = threading.Lock()
        self._next_id = 0
        if address.startswith("tcp://"):
            host, _, port = address[6:].rpartition(":")
            if not host or not port.isdigit():
                raise RigError(f"rig address {address!r}: expected tcp://HOST:PORT")
            self._sock = socket.create_connection((host, int(port)), timeout=timeout)
            self._r = self._sock.makefile("rb")
            self._w = self._sock.makefile("wb")
            self._serial = None
        else:
            import serial           # a serial device path, or a pyserial URL (socket://, rfc2217://)
            if "://" in address:
                self._serial = serial.serial_for_url(address, baudrate=115200, timeout=timeout)
            else:
                self._serial = serial.Serial(address, 115200, timeout=timeout)
            self._sock = None
            self._r = self._w = self._serial

    def close(self):
        if self._sock is not None:
            for f in (self._r, self._w):
                try:
                    f.close()
                except OSError:
                    pass
            self._sock.close()
        if self._serial is not None:
            self._serial.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def call(self, op: str, **kw):
        with self._lock:
            self._next_id += 1
            rid = self._next_id
            self._w.write(_dumps({"id": rid, "op": op, "kw": kw}))
            self._w.flush()
            while True:
                line = self._r.readline()
                if not line:
                    raise RigError(f"rig at {self.address} closed the connection or timed out")
                try:
                    reply = json.loads(line)
                except ValueError:
                    continue                    # noise on a serial line
                if isinstance(reply, dict) and reply.get("id") == rid:
                    break
        if not reply.get("ok"):
            err = RigError(f"{reply.get('error')}: {reply.get('detail')}")
            err.code = reply.get("error")
            raise err
        return reply.get("result")

    # -- the VirtualRig methods --------------------------------------------------------------------------------
    def ping(self):
        return self.call("ping")

    def info(self):
        return self.call("info")

    def capture(self, duration_s, start_s=None, *, trace_bins: int = 2000, keep_pieces: bool = True) -> Capture:
        kw = {"duration_s": duration_s, "trace_bins": trace_bins, "keep_pieces": keep_pieces}
        if start_s is not None:
            kw["start_s"] = start_s
        return Capture.from_dict(self.call("capture", **kw))

    def current_ua(self):
        return self.call("current_ua")

    def set_load(self, spec, at_s=None):
        if at_s is None:
            return self.call("set_load", spec=spec)
        return self.call("set_load", spec=spec, at_s=at_s)

    def load(self):
        return self.call("load")

    def inject(self, fault, at_s=None, **kw):
        if at_s is not None:
            kw["at_s"] = at_s
        return self.call("inject", fault=fault, **kw)

    def faults(self):
        return self.call("faults")

    def press(self, button, ms=100):
        return self.call("press", button=button, ms=ms)

    def leds(self):
        return self.call("leds")

    def iset_log(self, since_ns=0):
        return self.call("iset_log", since_ns=since_ns)

    def now_s(self):
        return self.call("now_s")

    def wait(self, seconds):
        return self.call("wait", seconds=seconds)
