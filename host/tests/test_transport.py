"""Transport: clear errors for missing / busy / permission-denied ports, deadline reads, reconnect."""
import errno
import os
import time

import pytest

from picostim.transport import (PortBusyError, PortNotFoundError, PortPermissionError, SerialTransport,
                                TransportTimeout, _explain_open_error)
from upyport import UpyPort


@pytest.fixture
def upy():
    with UpyPort() as u:
        time.sleep(0.2)
        yield u


def test_missing_port_is_named_clearly(tmp_path):
    with pytest.raises(PortNotFoundError, match="no such serial port"):
        SerialTransport(str(tmp_path / "ttyACM9"))


def test_missing_port_waits_for_reappearance(upy, tmp_path):
    link = tmp_path / "ttyACM0"
    t0 = time.monotonic()
    import threading
    threading.Timer(0.4, lambda: os.symlink(upy.port, link)).start()
    t = SerialTransport(str(link), open_timeout=5)
    assert time.monotonic() - t0 >= 0.35
    t.close()


def test_busy_port_is_refused_with_reason(upy):
    a = SerialTransport(upy.port)
    try:
        with pytest.raises(PortBusyError, match="another program"):
            SerialTransport(upy.port)
    finally:
        a.close()
    SerialTransport(upy.port).close()   # free again once closed


def test_permission_error_message_names_the_fix():
    e = _explain_open_error("/dev/ttyACM0", OSError(errno.EACCES, "Permission denied"))
    assert isinstance(e, PortPermissionError)
    assert "dialout" in str(e)


def test_read_until_timeout_keeps_partial(upy):
    with SerialTransport(upy.port) as t:
        t.write(b"\r\n")
        with pytest.raises(TransportTimeout) as ei:
            t.read_until(b"never-printed-marker", 0.5)
        assert b">>>" in ei.value.partial


def test_reconnect_reopens_and_talks(upy):
    with SerialTransport(upy.port) as t:
        t.write(b"print(6*7)\r\n")
        assert t.read_until(b"42", 3).endswith(b"42")
        t.reconnect(wait_s=3)
        t.write(b"print(6*8)\r\n")
        assert t.read_until(b"48", 3).endswith(b"48")
