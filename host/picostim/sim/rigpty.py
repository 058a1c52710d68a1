"""The virtual rig as a serial port: the rig protocol (rigproto) served on a pty, the way the rig Pico serves it on
its USB serial port. A virtual bench can then be exported by labgrid (ser2net serves /dev/pts/N over RFC 2217)
exactly like a real one, and reached with the same `rfc2217://` URL.

Like the board's own USB port, no slave fd stays open here: a client is connected while it has the port open;
a request cut short when it closes is dropped, never glued to the next client's first line.
"""
from __future__ import annotations

import errno
import os
import select
import termios
import threading
import tty

from . import rigproto


class RigSerialPort:
    """Serve `rig` on a fresh pty; `path` is its /dev/pts/N. `link` (optional) is kept as a symlink to it."""

    def __init__(self, rig, link: str | None = None):
        self.rig = rig
        self._master, slave = os.openpty()
        tty.setraw(slave)
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        self.path = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(self._master, False)
        self.link = link
        if link:
            tmp = link + ".new"
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(self.path, tmp)
            os.replace(tmp, link)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="rig-pty", daemon=True)
        self._thread.start()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._master, view)
            except BlockingIOError:
                if self._stop.is_set():
                    return
                select.select([], [self._master], [], 0.05)
                continue
            except OSError:
                return          # the client closed the port: its reply goes nowhere, as on a real serial line
            view = view[n:]

    def _serve(self) -> None:
        buf = bytearray()
        discarding = False      # inside an over-long line: drop up to its end
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._master], [], [], 0.1)
                if not ready:
                    continue
                chunk = os.read(self._master, 65536)
            except BlockingIOError:
                continue
            except OSError as e:
                if e.errno != errno.EIO:
                    return      # master closed (shutdown)
                buf.clear()     # EIO: nobody has the port open; a cut-off request dies with its client
                discarding = False
                self._stop.wait(0.05)
                continue
            if not chunk:
                self._stop.wait(0.05)
                continue
            buf += chunk
            while True:
                nl = buf.find(b"\n")
                if nl < 0:
                    if len(buf) > rigproto.MAX_REQUEST:
                        buf.clear()
                        if not discarding:
                            discarding = True
                            self._write(rigproto._dumps(rigproto._reply_error(
                                None, "line_too_long", f"request lines are limited to {rigproto.MAX_REQUEST} bytes")))
                    break
                line = bytes(buf[:nl]).strip()
                del buf[:nl + 1]
                if discarding:
                    discarding = False
                    continue
                if len(line) > rigproto.MAX_REQUEST:
                    reply = rigproto._reply_error(None, "line_too_long",
                                                  f"request lines are limited to {rigproto.MAX_REQUEST} bytes")
                elif not line:
                    continue
                else:
                    reply = rigproto.handle_line(self.rig, line)
                self._write(rigproto._dumps(reply))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        if self.link:
            try:
                if os.path.islink(self.link) and os.readlink(self.link) == self.path:
                    os.unlink(self.link)
            except OSError:
                pass
        try:
            os.close(self._master)
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
