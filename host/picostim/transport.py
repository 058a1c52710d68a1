"""Serial transport: one open port (a Pico's USB CDC, a UART adapter or the virtual board's pty).

Thin wrapper over pyserial that adds what every layer above needs:
- clear errors for a missing, busy or permission-denied port (the three things users hit most);
- byte-exact reads with a deadline (`read_exact`, `read_until`, `read_line`) over an internal buffer;
- `reconnect()`: wait for the port to come back after a reset or re-enumeration and reopen it.
"""
from __future__ import annotations

import errno
import logging
import os
import time

import serial

DEFAULT_BAUD = 115200


trace = logging.getLogger("picostim.serial")   # every byte in and out at DEBUG (`picostim -v`, `--log FILE`)
TRACE_MAX = 512                                 # bytes of one read/write shown in the trace

class TransportError(Exception):
    """The serial link failed (closed, vanished, timed out)."""


class PortNotFoundError(TransportError):
    pass


class PortBusyError(TransportError):
    pass


class PortPermissionError(TransportError):
    pass


class TransportTimeout(TransportError):
    def __init__(self, msg, partial=b""):
        super().__init__(msg)
        self.partial = partial


def _explain_open_error(port: str, exc: Exception) -> TransportError:
    err = getattr(exc, "errno", None)
    text = str(exc)
    if err == errno.ENOENT or "No such file" in text or "could not open port" in text and "[Errno 2]" in text:
        return PortNotFoundError(f"{port}: no such serial port (is the board plugged in? `picostim info --list` "
                                 f"shows what is attached)")
    if err in (errno.EACCES, errno.EPERM) or "Permission denied" in text or "[Errno 13]" in text:
        return PortPermissionError(
            f"{port}: permission denied. On Linux add yourself to the port's group "
            f"(usually `sudo usermod -aG dialout $USER`, then log in again) or add a udev rule for 2e8a:0005")
    if err == errno.EBUSY or "exclusively lock" in text or "Device or resource busy" in text or "[Errno 16]" in text:
        return PortBusyError(f"{port}: port is busy: another program (mpremote, a serial monitor, Thonny, another "
                             f"picostim) has it open; close it and retry")
    return TransportError(f"{port}: cannot open: {text}")


class SerialTransport:
    """An open serial port with deadline-based reads.

    `url` may be a device path or any pyserial URL (`rfc2217://`, `socket://`, `loop://`).
    """

    def __init__(self, port: str, baudrate: int = DEFAULT_BAUD, open_timeout: float = 0.0):
        self.port = port
        self.baudrate = baudrate
        self._ser: serial.Serial | None = None
        self._buf = bytearray()
        self.bytes_out = 0
        self.bytes_in = 0
        self.open(open_timeout)

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def open(self, wait_s: float = 0.0) -> None:
        """Open the port; if `wait_s` > 0 keep retrying a missing port until it appears (re-enumeration)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self._ser = self._open_once()
                self._buf.clear()
                return
            except PortNotFoundError:
                if time.monotonic() >= deadline:
                    raise
            except TransportError as e:
                # A port that just re-enumerated can briefly refuse (udev still setting permissions).
                if time.monotonic() >= deadline or isinstance(e, PortBusyError):
                    raise
            time.sleep(0.1)

    def _open_once(self) -> serial.Serial:
        try:
            if "://" in self.port:
                # pyserial's rfc2217 client refuses a write timeout (its writes wait on the socket instead)
                wt = None if self.port.startswith("rfc2217://") else 5
                return serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=0, write_timeout=wt)
            if not os.path.exists(self.port):
                raise PortNotFoundError(f"{self.port}: no such serial port (is the board plugged in?)")
            return serial.Serial(self.port, baudrate=self.baudrate, timeout=0, write_timeout=5, exclusive=True)
        except serial.SerialException as e:
            raise _explain_open_error(self.port, e) from e
        except OSError as e:
            raise _explain_open_error(self.port, e) from e
        except Exception as e:   # termios.error: the tty vanished between open() and its configuration
            if type(e).__name__ == "error" and type(e).__module__ == "termios":
                raise TransportError(f"{self.port}: port went away while opening ({e}); board resetting?") from e
            raise

    def close(self) -> None:
        if self._ser is not None:
            try:
                self._ser.close()
            except (OSError, serial.SerialException):
                pass
            self._ser = None

    @property
    def is_open(self) -> bool:
        return self._ser is not None

    def reconnect(self, wait_s: float = 10.0) -> None:
        """Close and reopen, waiting up to `wait_s` for the port to re-appear (board reset / re-enumerated)."""
        self.close()
        time.sleep(0.05)
        self.open(wait_s)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- I/O ---------------------------------------------------------------------------------------------------
    def _need_open(self) -> serial.Serial:
        if self._ser is None:
            raise TransportError(f"{self.port}: port is closed")
        return self._ser

    def write(self, data: bytes) -> None:
        ser = self._need_open()
        try:
            ser.write(data)
            ser.flush()
        except (OSError, serial.SerialException) as e:
            raise TransportError(f"{self.port}: write failed ({e}); was the board reset or unplugged?") from e
        self.bytes_out += len(data)
        if trace.isEnabledFor(logging.DEBUG):
            trace.debug("%s > %r", self.port, data[:TRACE_MAX])

    def _fill(self, timeout: float) -> bool:
        """Read whatever arrives within `timeout` into the buffer; True if anything came."""
        ser = self._need_open()
        try:
            ser.timeout = max(0.0, timeout)
            n = ser.in_waiting
            chunk = ser.read(n if n > 0 else 1)
            if chunk:
                more = ser.in_waiting
                if more:
                    ser.timeout = 0
                    chunk += ser.read(more)
        except (OSError, serial.SerialException) as e:
            raise TransportError(f"{self.port}: read failed ({e}); was the board reset or unplugged?") from e
        if chunk:
            self._buf += chunk
            self.bytes_in += len(chunk)
            if trace.isEnabledFor(logging.DEBUG):
                trace.debug("%s < %r", self.port, chunk[:TRACE_MAX])
            return True
        return False

    def read_available(self, timeout: float = 0.0) -> bytes:
        """Everything buffered or arriving within `timeout` (possibly b"")."""
        if not self._buf:
            self._fill(timeout)
        else:
            self._fill(0)
        out = bytes(self._buf)
        self._buf.clear()
        return out

    def read_exact(self, n: int, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self._buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransportTimeout(f"{self.port}: timed out waiting for {n} bytes", bytes(self._buf))
            self._fill(min(left, 0.5))
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def read_until(self, marker: bytes, timeout: float, max_bytes: int = 1 << 24) -> bytes:
        """Bytes up to and including `marker`; TransportTimeout (with the partial data) if it doesn't arrive."""
        deadline = time.monotonic() + timeout
        start = 0
        while True:
            i = self._buf.find(marker, start)
            if i >= 0:
                end = i + len(marker)
                out = bytes(self._buf[:end])
                del self._buf[:end]
                return out
            if len(self._buf) > max_bytes:
                raise TransportError(f"{self.port}: no {marker!r} within {max_bytes} bytes")
            start = max(0, len(self._buf) - len(marker) + 1)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransportTimeout(f"{self.port}: timed out waiting for {marker!r}", bytes(self._buf))
            self._fill(min(left, 0.5))

    def read_line(self, timeout: float) -> bytes | None:
        """One line (without the line end), or None if no complete line arrives within `timeout`."""
        try:
            line = self.read_until(b"\n", timeout)
        except TransportTimeout:
            return None
        return line.rstrip(b"\r\n")

    def drain(self, quiet_s: float = 0.05, max_s: float = 2.0) -> bytes:
        """Discard input until the line has been quiet for `quiet_s` (or `max_s` passed); returns what was dropped."""
        dropped = bytearray(self._buf)
        self._buf.clear()
        end = time.monotonic() + max_s
        while time.monotonic() < end:
            if not self._fill(quiet_s):
                break
            dropped += self._buf
            self._buf.clear()
        return bytes(dropped)

    def unread(self, data: bytes) -> None:
        """Put bytes back in front of the buffer (a layer peeked too far)."""
        self._buf[:0] = data


def list_ports() -> list[dict]:
    """Attached MicroPython-looking ports (RP2040 MicroPython enumerates as 2E8A:0005)."""
    from serial.tools import list_ports as lp

    out = []
    for p in lp.comports():
        out.append({"port": p.device, "vid": p.vid, "pid": p.pid, "serial": p.serial_number,
                    "description": p.description, "micropython": (p.vid, p.pid) == (0x2E8A, 0x0005)})
    return out
