# Tiny harness for tests that run under the MicroPython unix port: each check prints one PASS/FAIL line and
# the pytest wrapper (firmware/tests/test_fw_micropython.py) asserts on them.
import sys

_fails = [0]


def check(name, cond, detail=""):
    if cond:
        print("PASS", name)
    else:
        _fails[0] += 1
        print("FAIL", name, detail)


def raises(name, exc, fn, *args):
    try:
        fn(*args)
    except exc as e:
        print("PASS", name)
        return e
    except Exception as e:
        _fails[0] += 1
        print("FAIL", name, "raised", repr(e))
        return None
    _fails[0] += 1
    print("FAIL", name, "did not raise")
    return None


def app_sandbox(prefix):
    """Point the firmware's config, levels and audit files into a fresh /tmp directory, load the programs and the
    handheld-home profile from the repository; returns (directory, board profile). Import app after this."""
    import json
    import os
    import time
    import audit
    import board
    import calib
    import config
    import zonectl
    import lock
    d = "/tmp/%s_%d" % (prefix, time.ticks_us() & 0xFFFFFF)
    try:
        os.mkdir(d)
    except OSError:
        pass
    for n in ("config.bin", "levels.bin", "audit.bin", "session.bin", "lock.bin", "calib.bin"):
        try:
            os.remove(d + "/" + n)
        except OSError:
            pass
    config.CONFIG_PATH = d + "/config.bin"
    config.LEVELS_PATH = d + "/levels.bin"
    audit.AUDIT_PATH = d + "/audit.bin"
    zonectl.SESSION_PATH = d + "/session.bin"
    lock.LOCK_PATH = d + "/lock.bin"
    calib.CAL_PATH = d + "/calib.bin"
    board.PROGRAMS_PATH = "boards/programs.json"
    with open("boards/handheld-home.json") as f:
        return d, json.load(f)


def done():
    print("DONE", _fails[0])


class Out:
    """The app's output stream: collects what it writes; lines() parses the JSON lines and clears."""
    def __init__(self):
        self.buf = []

    def write(self, s):
        self.buf.append(s)

    def lines(self):
        import json
        txt = "".join(self.buf)
        self.buf = []
        return [json.loads(x) for x in txt.split("\n") if x.strip()]


def app_with_output(board):
    """An App (after app_sandbox) writing to an Out, its audit trail at the sandbox's path: (app, out)."""
    import app
    import audit
    out = Out()
    a = app.App(board, out)
    a.audit = audit.Audit(audit.AUDIT_PATH)
    return a, out
