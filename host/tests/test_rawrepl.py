"""Raw-REPL client against the real MicroPython REPL code (unix port on a pty)."""
import base64
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from picostim.rawrepl import DeviceException, RawRepl
from picostim.transport import SerialTransport
from upyport import UpyPort


@pytest.fixture(scope="module")
def repl():
    with UpyPort() as u:
        time.sleep(0.2)
        with SerialTransport(u.port) as t:
            r = RawRepl(t)
            r.enter()
            yield r


def test_exec_eval_and_device_exception(repl):
    assert repl.exec("print(1+2)") == b"3\n"
    assert repl.eval("[1, 'a', b'\\x00\\xff']") == [1, "a", b"\x00\xff"]
    with pytest.raises(DeviceException, match="ZeroDivisionError"):
        repl.exec("1/0")
    assert repl.eval("7*6") == 42            # still usable after an exception


def test_raw_paste_flow_control_large_program(repl):
    code = "s=0\n" + "".join(f"s+={i}\n" for i in range(4000)) + "print(s)"
    assert len(code) > 30000                 # many windows of 128 bytes
    assert repl.exec(code) == f"{sum(range(4000))}\n".encode()
    assert repl.raw_paste_supported is True


def test_fallback_without_raw_paste_gives_same_result(repl):
    code = "s=0\n" + "".join(f"s+={i}\n" for i in range(300)) + "print(s)"
    fast = repl.exec(code)
    repl.use_raw_paste = False
    try:
        assert repl.exec(code) == fast
    finally:
        repl.use_raw_paste = True


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=0, max_size=3000))
def test_binary_roundtrip_via_base64(repl, data):
    b64 = base64.b64encode(data).decode()
    out = repl.eval(f"__import__('binascii').a2b_base64({b64!r})")
    assert out == data
