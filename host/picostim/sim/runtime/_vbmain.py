# Entry point of the MicroPython child process: the "CPU" of the virtual board.
# argv: socket-path flash-dir clock-mode vclock-json repl-mode(friendly|raw)
import sys
import _vb_rt
import binascii
import io
import os
import socket
import vfs
import _vblink

_sock_path, _flash, _mode, _vclock, _repl = sys.argv[1:6]
_s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
_s.connect(b"\x01\x00" + _sock_path.encode() + b"\x00")
import json  # noqa: E402

_factor = _vblink.init(_s, _vb_rt, _mode, json.loads(_vclock))

import _vb_time
import _vb_select

sys.modules["time"] = _vb_time
sys.modules["utime"] = _vb_time
sys.modules["select"] = _vb_select
sys.modules["uselect"] = _vb_select
import _vb_micropython  # noqa: E402

sys.modules["micropython"] = _vb_micropython
import machine  # noqa: E402  (runtime/machine.py: the RP2040 peripheral shims)
import rp2  # noqa: E402,F401

if _mode == "cpu":
    # GPIO29 is unused by every board profile; reading it has no side effect.
    _vblink.measure_overhead(machine.Pin(29).value)
_vblink.call("vclock", _factor, _vblink._overhead_us)

import _vbfs  # noqa: E402

vfs.mount(_vbfs.FlashFS(vfs.VfsPosix(_flash), _flash), "/")
os.chdir("/")
sys.path[:] = ["", ".frozen", "/lib"]

import builtins  # noqa: E402

_print = builtins.print
_stdout = sys.stdout


def _cooked_print(*args, sep=" ", end="\n", file=None):
    # rp2 sends print() output "cooked": every \n goes out as \r\n.
    if file is not None and file is not _stdout:
        return _print(*args, sep=sep, end=end, file=file)
    buf = io.StringIO()
    _print(*args, sep=sep, end=end, file=buf)
    _stdout.write(buf.getvalue().replace("\n", "\r\n"))


builtins.print = _cooked_print
_globals = {"__name__": "__main__"}


_RT_DIR = __file__.rsplit("/", 1)[0]


def _exc_text(e):
    # A Pico's traceback shows no frames of the board's own machinery (those are C code there).
    buf = io.StringIO()
    sys.print_exception(e, buf)
    lines = [ln for ln in buf.getvalue().split("\n") if _RT_DIR not in ln]
    return "\r\n".join(lines)


def _run(src, kind, name):
    # Returns (exception text or None, forced exit).
    try:
        if kind == "single":
            try:
                code = compile(src, name, "eval")
            except SyntaxError:
                code = None
            if code is not None:
                v = eval(code, _globals)
                if v is not None:
                    _cooked_print(repr(v))
                return None, False
        exec(compile(src, name, "exec"), _globals)
        return None, False
    except SystemExit:
        return None, True
    except BaseException as e:  # noqa: B036 - a REPL reports everything, KeyboardInterrupt included
        return _exc_text(e), False


def _run_file(name):
    try:
        with open(name) as f:
            src = f.read()
    except OSError:
        return False
    exc, forced = _run(src, "exec", name)
    if exc:
        _stdout.write(exc)
    return forced


def _leftover_stdin():
    # Bytes the host sent while code ran that the code never read: on a Pico they wait in the USB ring buffer for
    # the REPL, so hand them back to the board. The board ends them with a sentinel so none can slip past.
    sentinel = _vblink.call("repl_enter")
    if not sentinel:
        return ""
    sentinel = binascii.unhexlify(sentinel)
    out = bytearray()
    inp = sys.stdin.buffer
    while not out.endswith(sentinel):
        b = inp.read(1)
        if not b:
            break
        out += b
    return binascii.hexlify(out[: len(out) - len(sentinel)]).decode()


def _boot():
    if _run_file("boot.py"):
        return True
    if _repl == "friendly":
        return _run_file("main.py")
    return False


def _main():
    result = None
    forced = False
    try:
        _vblink.call("boot")
        forced = _boot()
    except KeyboardInterrupt as e:
        _stdout.write(_exc_text(e))
    while True:
        try:
            req = _vblink.call("repl_wait", result, forced, _leftover_stdin())
            result = None
            forced = False
            exc, forced = _run(req["src"], req["kind"], "<stdin>")
            result = [req["id"], exc]
        except KeyboardInterrupt:
            # Ctrl-C landed between two requests; the board ignores a result it has already seen.
            pass


_main()
