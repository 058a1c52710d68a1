"""The REPL as rp2 MicroPython serves it over USB CDC (shared/runtime/pyexec.c behaviour).

Friendly REPL, paste mode, raw REPL and raw paste with its flow control; Ctrl-C interrupts running code; Ctrl-D at
an empty prompt soft-resets. Code is executed by the MicroPython child process; this class only speaks the byte
protocol a host (mpremote, pyserial, a terminal) sees.
"""
from __future__ import annotations

CTRL_A, CTRL_B, CTRL_C, CTRL_D, CTRL_E = 1, 2, 3, 4, 5
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
PASTE_BANNER = b"paste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== "
RAW_PASTE_WINDOW = 128  # MICROPY_REPL_STDIN_BUFFER_MAX / 2


class UsbRepl:
    """Byte-level REPL state machine. `board` provides out(bytes), execute(src, kind), soft_reset(), interrupt(),
    forward_stdin(bytes) and banner (bytes)."""

    def __init__(self, board, mode="friendly"):
        self.board = board
        self.mode = mode          # friendly | raw (persists across soft reset, like pyexec_mode_kind)
        self.sub = None           # None | "paste" | "rawpaste"
        self.busy = True          # code (boot.py/main.py or a request) is running in the child
        self.line = bytearray()
        self.cont = bytearray()   # friendly REPL: lines of an unfinished compound statement
        self.window = 0
        self.exec_kind = None
        self.intr_char = CTRL_C   # micropython.kbd_intr() changes it while code runs

    # --- called by the board ---------------------------------------------------------------------------------
    def booting(self):
        """A (soft or hard) reset: code runs (boot.py, main.py) until the child reaches the REPL."""
        self.busy = True
        self.sub = None
        self.exec_kind = None
        self.line.clear()
        self.cont.clear()
        self.intr_char = CTRL_C

    def prompt(self):
        """The child is idle at the REPL (after boot or after an exec)."""
        self.busy = False
        self.intr_char = CTRL_C
        self.line.clear()
        self.cont.clear()
        self.sub = None
        if self.mode == "raw":
            self.board.out(RAW_BANNER + b">")
        else:
            self.board.out(self.board.banner + b">>> ")

    def exec_done(self, exc_text: str | None):
        kind = self.exec_kind
        self.busy = False
        self.exec_kind = None
        self.line.clear()
        if kind in ("raw", "rawpaste"):
            self.board.out(b"\x04" + (exc_text or "").encode() + b"\x04>")
        else:
            if exc_text:
                self.board.out(exc_text.encode())
            self.board.out(b">>> ")

    def feed(self, data: bytes):
        i = 0
        n = len(data)
        while i < n:           # a loop, not recursion: a run of thousands of Ctrl-C is one write away
            c = data[i]
            if self.busy:
                # While code runs, bytes go to its stdin; Ctrl-C raises KeyboardInterrupt in it.
                rest = data[i:]
                j = rest.find(self.intr_char) if self.intr_char >= 0 else -1
                if j < 0:
                    self.board.forward_stdin(bytes(rest))
                    return
                if j:
                    self.board.forward_stdin(bytes(rest[:j]))
                if not self.board.interrupt():
                    self.board.forward_stdin(bytes([self.intr_char]))
                i += j + 1
                continue
            i += 1
            if self.sub == "rawpaste":
                self._rawpaste(c)
            elif self.sub == "paste":
                self._paste(c)
            elif self.mode == "raw":
                self._raw(c)
            else:
                self._friendly(c)

    # --- modes -------------------------------------------------------------------------------------------------
    def _start(self, src: bytes, kind: str):
        self.busy = True
        self.intr_char = CTRL_C
        self.exec_kind = kind
        self.board.execute(src.decode("utf-8", "replace"), "single" if kind == "single" else "exec")

    def _raw(self, c):
        if c == CTRL_A:
            if len(self.line) == 2 and self.line[0] == CTRL_E:
                if self.line[1] == ord("A"):
                    self.line.clear()
                    self.sub = "rawpaste"
                    self.window = RAW_PASTE_WINDOW
                    self.board.out(b"R\x01" + RAW_PASTE_WINDOW.to_bytes(2, "little") + b"\x01")
                    return
                self.line.clear()
                self.board.out(b"R\x00")
                return
            self.line.clear()
            self.board.out(RAW_BANNER + b">")
        elif c == CTRL_B:
            self.mode = "friendly"
            self.line.clear()
            self.board.out(b"\r\n" + self.board.banner + b">>> ")
        elif c == CTRL_C:
            self.line.clear()
        elif c == CTRL_D:
            self.board.out(b"OK")
            if not self.line:
                self.board.out(b"\r\n")
                self.board.soft_reset()
                return
            src = bytes(self.line)
            self.line.clear()
            self._start(src, "raw")
        else:
            self.line.append(c)

    def _rawpaste(self, c):
        if c in (CTRL_C, CTRL_D):
            self.sub = None
            self.board.out(b"\x04")
            src = bytes(self.line)
            self.line.clear()
            if c == CTRL_C:
                self.busy = False
                self.board.out(b"\x04Traceback (most recent call last):\r\nKeyboardInterrupt: \r\n\x04>")
                return
            self._start(src, "rawpaste")
            return
        self.line.append(c)
        self.window -= 1
        if self.window == 0:
            self.window = RAW_PASTE_WINDOW
            self.board.out(b"\x01")

    def _paste(self, c):
        if c == CTRL_C:
            self.sub = None
            self.line.clear()
            self.board.out(b"\r\n>>> ")
        elif c == CTRL_D:
            self.sub = None
            self.board.out(b"\r\n")
            src = bytes(self.line)
            self.line.clear()
            self._start(src, "paste")
        else:
            self.line.append(c)
            self.board.out(b"\r\n=== " if c == 13 else bytes([c]))

    def _friendly(self, c):
        if c == CTRL_A:
            self.mode = "raw"
            self.line.clear()
            self.cont.clear()
            self.board.out(b"\r\n" + RAW_BANNER + b">")
        elif c == CTRL_B:
            self.line.clear()
            self.cont.clear()
            self.board.out(b"\r\n" + self.board.banner + b">>> ")
        elif c == CTRL_C:
            self.line.clear()
            self.cont.clear()
            self.board.out(b"\r\n>>> ")
        elif c == CTRL_D:
            if not self.line and not self.cont:
                self.board.out(b"\r\n")
                self.board.soft_reset()
        elif c == CTRL_E:
            self.line.clear()
            self.cont.clear()
            self.sub = "paste"
            self.board.out(b"\r\n" + PASTE_BANNER)
        elif c in (8, 127):
            if self.line:
                self.line.pop()
                self.board.out(b"\x08 \x08")
        elif c == 13:
            self.board.out(b"\r\n")
            line = bytes(self.line)
            self.line.clear()
            if self.cont:
                if line.strip():
                    self.cont += line + b"\n"
                    self.board.out(b"... ")
                    return
                src = bytes(self.cont)
                self.cont.clear()
                self._start(src, "single")
                return
            if not line.strip():
                self.board.out(b">>> ")
                return
            if _needs_more(line):
                self.cont += line + b"\n"
                self.board.out(b"... ")
                return
            self._start(line, "single")
        elif c == 10:
            pass  # terminals send \r; a stray \n after it is ignored as MicroPython's readline does
        elif c >= 32 or c == 9:
            self.line.append(c)
            self.board.out(bytes([c]))


def _needs_more(line: bytes) -> bool:
    """MicroPython continues a REPL line after a compound-statement header or inside open brackets."""
    s = line.rstrip()
    if s.endswith(b":") or s.endswith(b"\\"):
        return True
    depth = 0
    quote = None
    for ch in s.decode("utf-8", "replace"):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
    return depth > 0
