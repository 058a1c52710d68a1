"""Test helper: a plain unix MicroPython REPL reachable as a serial port path (two ptys bridged by a thread).

The unix port supports the raw REPL and raw paste on a tty, so the transport and raw-REPL client can be tested
against the real MicroPython REPL code without the virtual board. (Ctrl-D on an empty line exits it.)
"""
from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import threading
import tty
from pathlib import Path

MICROPYTHON = Path(sys.executable).with_name("micropython")


class UpyPort:
    def __init__(self, cwd=None, args=()):
        self._mA, sA = pty.openpty()           # MicroPython's terminal
        self._mB, sB = pty.openpty()           # the host's "serial port"
        tty.setraw(sA)
        tty.setraw(sB)
        self.port = os.ttyname(sB)
        self._sB = sB                           # keep the slave open so the master never sees EIO between opens
        self.proc = subprocess.Popen([str(MICROPYTHON), *args], stdin=sA, stdout=sA, stderr=sA, cwd=cwd,
                                     start_new_session=True)
        os.close(sA)
        self.log = bytearray()
        self._stop = False
        self._th = threading.Thread(target=self._pump, daemon=True)
        self._th.start()

    def _pump(self):
        fds = [self._mA, self._mB]
        while not self._stop:
            try:
                r, _, _ = select.select(fds, [], [], 0.1)
            except (OSError, ValueError):
                return
            for fd in r:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    if fd == self._mA:
                        return
                    continue
                if not data:
                    continue
                other = self._mB if fd == self._mA else self._mA
                if fd == self._mA:
                    self.log += data
                try:
                    os.write(other, data)
                except OSError:
                    pass

    def close(self):
        self._stop = True
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        self._th.join(2)
        for fd in (self._mA, self._mB, self._sB):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
