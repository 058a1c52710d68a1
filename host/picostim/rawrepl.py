"""A raw-REPL client (MicroPython's machine-to-machine REPL), written for picostim.

- `enter()` works while main.py runs: Ctrl-C (twice, spaced) breaks the application, Ctrl-A enters the raw REPL;
  it retries because a busy application may swallow the first interrupt.
- `exec()` sends code with raw-paste (flow-controlled by the device's window credits) and falls back to the
  plain raw REPL (chunked writes) on firmware without raw-paste.
- `eval()` returns a Python value printed with repr; `exec_json()` a value the device prints as JSON.
- `soft_reset()` from the raw REPL (boot.py runs, main.py does not, as on rp2) or `soft_reset(run_main=True)` from
  the friendly REPL (boot.py and main.py run: the application starts again).
"""
from __future__ import annotations

import ast
import json
import struct
import time

from .transport import SerialTransport, TransportError, TransportTimeout

CTRL_A, CTRL_B, CTRL_C, CTRL_D, CTRL_E = b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
RAW_PASTE_REQUEST = b"\x05A\x01"
FALLBACK_CHUNK = 256       # plain raw REPL: bytes per write, with a pause so a UART device's buffer keeps up
FALLBACK_PAUSE_S = 0.01


class ReplError(TransportError):
    """The raw REPL did not respond as MicroPython's does."""


class DeviceException(Exception):
    """Code run on the device raised; `.device_traceback` holds the device's text."""

    def __init__(self, traceback_text: str):
        self.device_traceback = traceback_text
        last = traceback_text.strip().splitlines()[-1] if traceback_text.strip() else "exception"
        super().__init__(f"device raised: {last}")


class RawRepl:
    def __init__(self, transport: SerialTransport, use_raw_paste: bool = True):
        self.t = transport
        self.in_raw = False
        self.use_raw_paste = use_raw_paste
        self.raw_paste_supported: bool | None = None  # learnt at first exec
        self.execs = 0

    # -- entering / leaving ------------------------------------------------------------------------------------
    def enter(self, timeout: float = 12.0, attempts: int = 4, reconnect_s: float = 10.0) -> None:
        """Interrupt whatever runs and enter the raw REPL."""
        last = b""
        heard = sent_eot = False
        for attempt in range(attempts):
            try:
                if attempt >= 2 and not heard and not sent_eot:
                    # Silent through two tries: most likely a host died mid raw-paste and the device is still
                    # collecting code. Ctrl-D ends that input (the fragment fails to compile; back at the raw
                    # prompt). Not earlier: at a prompt Ctrl-D soft-resets the board.
                    self.t.write(CTRL_D)
                    sent_eot = True
                    time.sleep(0.1)
                elif attempt == attempts - 1 and not heard:
                    self.t.reconnect(wait_s=reconnect_s)    # last resort: a fresh open of a silent port
                self.t.write(b"\r" + CTRL_C)
                time.sleep(0.05)
                self.t.write(CTRL_C)
                time.sleep(0.05)
                last = self.t.drain(quiet_s=0.1, max_s=1.0)
                heard = heard or bool(last)
                self.t.write(b"\r" + CTRL_A)
                self.t.read_until(RAW_BANNER + b">", timeout / attempts + 0.5)
                self.in_raw = True
                return
            except TransportTimeout as e:
                last += e.partial
                heard = heard or bool(e.partial)
            except TransportError:
                # The board reset / re-enumerated under us: wait for its port and try again.
                self.t.reconnect(wait_s=reconnect_s)
        raise ReplError(f"{self.t.port}: could not enter the raw REPL (last output {last[-200:]!r}); "
                        f"is this a MicroPython board?")

    def exit(self) -> None:
        """Back to the friendly REPL."""
        self.t.write(b"\r" + CTRL_B)
        self.in_raw = False

    def soft_reset(self, run_main: bool = False, timeout: float = 30.0) -> None:
        """Soft reset. run_main=False: stay in the raw REPL (main.py is skipped, as rp2 does in raw mode).
        run_main=True: reset from the friendly REPL so boot.py and main.py run (the application starts)."""
        if run_main:
            if self.in_raw:
                self.exit()
                time.sleep(0.05)
            self.t.drain(quiet_s=0.05, max_s=0.5)
            self.t.write(CTRL_D)
            self.t.read_until(b"soft reboot\r\n", timeout)
            self.in_raw = False
            return
        if not self.in_raw:
            self.enter()
        self.t.write(CTRL_D)
        self.t.read_until(b"soft reboot\r\n", timeout)
        self.t.read_until(RAW_BANNER + b">", timeout)

    # -- running code ------------------------------------------------------------------------------------------
    def exec_raw(self, code: str | bytes, timeout: float = 10.0) -> tuple[bytes, bytes]:
        """Run `code`; return (stdout, exception text). Requires the raw REPL."""
        if not self.in_raw:
            self.enter()
        if isinstance(code, str):
            code = code.encode()
        self.execs += 1
        if self.use_raw_paste and self.raw_paste_supported is not False:
            self.t.write(RAW_PASTE_REQUEST)
            head = self.t.read_exact(2, timeout)
            if head == b"R\x01":
                self.raw_paste_supported = True
                self._raw_paste_send(code, timeout)
            elif head == b"R\x00":
                self.raw_paste_supported = False   # device understood but refused: still in the raw REPL
                self._plain_send(code, timeout)
            else:
                # Older firmware: the request is a no-op and the raw prompt is re-printed.
                self.raw_paste_supported = False
                self.t.read_until(b">", timeout)
                self._plain_send(code, timeout)
        else:
            self._plain_send(code, timeout)
        out = self.t.read_until(CTRL_D, timeout)[:-1]
        err = self.t.read_until(CTRL_D, timeout)[:-1]
        self.t.read_until(b">", timeout)
        return out, err

    def _raw_paste_send(self, code: bytes, timeout: float) -> None:
        window = struct.unpack("<H", self.t.read_exact(2, timeout))[0]
        credit = window
        pos = 0
        while pos < len(code):
            # Take any credit (0x01) or abort (0x04) the device has sent; block only when out of credit.
            while True:
                waiting = credit == 0
                try:
                    b = self.t.read_exact(1, timeout if waiting else 0.0)
                except TransportTimeout:
                    if waiting:
                        raise ReplError(f"{self.t.port}: raw paste stalled (no flow-control credit)")
                    break
                if b == b"\x01":
                    credit += window
                elif b == CTRL_D:
                    self.t.write(CTRL_D)
                    raise ReplError(f"{self.t.port}: device aborted the raw paste (out of memory or syntax error?)")
                else:
                    raise ReplError(f"{self.t.port}: unexpected byte {b!r} during raw paste")
            n = min(credit, len(code) - pos)
            self.t.write(code[pos:pos + n])
            pos += n
            credit -= n
        self.t.write(CTRL_D)
        ack = self.t.read_until(CTRL_D, timeout)
        if ack.strip(b"\x01") != CTRL_D:   # late window credits may precede the end acknowledgement
            # Compile errors are reported after the echo; anything before it is unexpected.
            raise ReplError(f"{self.t.port}: raw paste not acknowledged: {ack[-100:]!r}")

    def _plain_send(self, code: bytes, timeout: float) -> None:
        for i in range(0, len(code), FALLBACK_CHUNK):
            self.t.write(code[i:i + FALLBACK_CHUNK])
            time.sleep(FALLBACK_PAUSE_S)
        self.t.write(CTRL_D)
        ok = self.t.read_exact(2, timeout)
        if ok != b"OK":
            raise ReplError(f"{self.t.port}: raw REPL did not accept the code: {ok!r}")

    def exec(self, code: str | bytes, timeout: float = 10.0) -> bytes:
        """Run `code`; return its stdout; raise DeviceException if it raised."""
        out, err = self.exec_raw(code, timeout)
        if err:
            raise DeviceException(err.decode(errors="replace"))
        return out

    def eval(self, expr: str, timeout: float = 10.0):
        """Evaluate `expr` on the device; the value must round-trip through repr (ints, strs, bytes, lists...)."""
        out = self.exec(f"print(repr({expr}))", timeout).decode().strip()
        return ast.literal_eval(out)

    def exec_json(self, code: str, timeout: float = 10.0):
        """Run code whose last output line is JSON; return the parsed value."""
        out = self.exec(code, timeout).decode(errors="replace").strip()
        line = out.splitlines()[-1] if out else ""
        try:
            return json.loads(line)
        except ValueError as e:
            raise ReplError(f"{self.t.port}: expected JSON from the device, got {out[-200:]!r}") from e
