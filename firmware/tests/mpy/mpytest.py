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


def done():
    print("DONE", _fails[0])
