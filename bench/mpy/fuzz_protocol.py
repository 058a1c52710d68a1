# Protocol fuzz harness, run by the MicroPython unix port (bench/sections/fuzz_mpy.py starts it).
# The thing under test is the firmware's real request path: protocol.LineReader -> App.handle_line -> the
# App's command handlers, with the recording machine/rp2 stand-ins of firmware/tests/mpy/fakes in place of the
# silicon. argv: board.json path, programs.json path, flash dir, inputs file (one hex-encoded input per line),
# step_every. Prints one JSON summary line starting with "RESULT ".
import sys
import json
import gc
import time

board_path, programs_path, flash_dir, inputs_path, step_every = sys.argv[1:6]
step_every = int(step_every)
DEBUG = len(sys.argv) > 6

# Inputs are streamed from a file of length-prefixed records and fed in 256-byte chunks, as USB delivers them,
# so a campaign's size or an over-long input never needs a large buffer in the harness itself.
INPUTS_FILE = open(inputs_path, "rb")
CHUNK = 256


def next_input():
    """Return the input's length (or -1 at the end); its bytes are then read with chunks()."""
    h = INPUTS_FILE.read(4)
    if len(h) < 4:
        return -1
    return h[0] | (h[1] << 8) | (h[2] << 16) | (h[3] << 24)


def feed_input(reader, n):
    lines = []
    while n > 0:
        c = INPUTS_FILE.read(CHUNK if n > CHUNK else n)
        n -= len(c)
        lines.extend(reader.feed(c))
    lines.extend(reader.feed(b"\n"))
    return lines


with open(board_path) as f:
    BOARD = json.load(f)

import machine  # the recording stand-in
import rp2
import app as APP  # noqa: E402  (imports every firmware module before the flash is mounted at /)
import pscodes as C  # noqa: E402

ISET = BOARD["pins"]["ISET"]
I_FS = BOARD["analog"]["i_fs_ua"]
CAP = BOARD["limits"]["cap_ua"]
# TOP that rp2's machine.PWM picks for the ISET frequency (DIV 1): what the silicon would use
ISET_TOP = (machine.freq() + BOARD["analog"]["iset_pwm_hz"] // 2) // BOARD["analog"]["iset_pwm_hz"] - 1

# Record every ISET duty write at the peripheral boundary (the firmware cannot see or skip this).
iset_writes = [0, 0]          # count, worst uA
_orig_duty = machine.PWM.duty_u16


def _duty_u16(self, d=None):
    if d is not None and self.pin.n == ISET:
        cc = (d * (ISET_TOP + 1) + 32767) // 65535
        ua = cc * I_FS / (ISET_TOP + 1)
        iset_writes[0] += 1
        if ua > iset_writes[1]:
            iset_writes[1] = ua
    return _orig_duty(self, d)


machine.PWM.duty_u16 = _duty_u16

import os  # noqa: E402
import board as B  # noqa: E402
import config as CFG  # noqa: E402
import audit as AUD  # noqa: E402

# The firmware's flash paths point into a temp dir (the unix port's VfsPosix cannot rename absolute paths on a
# mount at /, so the flash is not mounted; only the file names change, the code paths do not).
FLASH = flash_dir.rstrip("/")
B.BOARD_PATH = board_path
B.PROGRAMS_PATH = programs_path
CFG.CONFIG_PATH = FLASH + "/config.bin"
CFG.LEVELS_PATH = FLASH + "/levels.bin"
AUD.AUDIT_PATH = FLASH + "/audit.bin"


class Out:
    def __init__(self):
        self.buf = []

    def write(self, s):
        self.buf.append(s)


_fbuf = bytearray(256)


def files_state():
    """name -> CRC32 of every stored record (read in small chunks: the harness must not crowd the heap)."""
    from binascii import crc32
    out = {}
    for name in os.listdir(FLASH):
        if name.endswith(".bin") or name.endswith(".tmp"):
            c = 0
            with open(FLASH + "/" + name, "rb") as f:
                while True:
                    n = f.readinto(_fbuf)
                    if not n:
                        break
                    c = crc32(memoryview(_fbuf)[:n], c)
            out[name] = c
    return out


def pin_state():
    return dict(machine.Pin.levels)


def outputs(a):
    """Everything that reaches the electrodes or persists: registers, pin levels, ISET duty, HV, the app's
    session state, the stored files."""
    return (dict(machine._regs), pin_state(), a.amp.pwm.d, a.state, a.level, a.target_ua,
            list(a.settings.levels), json.dumps(a.settings.config), files_state(), a.engine.running
            if hasattr(a.engine, "running") else None)


def main():
    a = APP.App(B.load(), out=Out())
    a.audit = AUD.Audit(path=AUD.AUDIT_PATH)
    gc.collect()
    print("HEAP after App", gc.mem_alloc(), gc.mem_free())
    n_lines = n_ok = n_err = 0
    codes = {}
    violations = []
    crashes = 0
    heap_peak = 0
    t0 = time.ticks_ms()
    now = 0        # the harness's clock: 25 ms per input, so ramps, bursts and sessions progress
    n_inputs = 0
    k = -1
    while True:
        size = next_input()
        if size < 0:
            break
        k += 1
        n_inputs += 1
        now = time.ticks_add(now, 25)
        del machine.log[:]      # the stand-ins' logs would otherwise grow without bound
        del rp2.made[:]
        before = outputs(a)
        a.out.buf = []
        iset_before = iset_writes[0]
        lines = feed_input(a.reader, size)
        replies = []
        try:
            for line in lines:
                n_lines += 1
                a.handle_line(line, now)
        except Exception as e:
            crashes += 1
            violations.append({"input": k, "kind": "crash", "detail": repr(e)})
            continue
        if DEBUG:
            print("IN", k, "OUT", a.out.buf[:1])
        # App.send writes each message, then "\n"; take the messages as written (no joined copy)
        for ln in a.out.buf:
            if not ln or ln == "\n":
                continue
            try:
                r = json.loads(ln)
            except ValueError:
                violations.append({"input": k, "kind": "reply_not_json", "detail": ln[:200]})
                continue
            if "ev" in r:
                continue
            replies.append(r)
        if len(replies) != len(lines):
            violations.append({"input": k, "kind": "reply_count", "detail": "%d lines, %d replies" %
                               (len(lines), len(replies))})
        rejected = replies and all(r.get("ok") is False for r in replies)
        for r in replies:
            if r.get("ok") is True:
                n_ok += 1
            else:
                n_err += 1
                c = r.get("error")
                codes[c] = codes.get(c, 0) + 1
                if c not in C.ERROR_CODES:
                    violations.append({"input": k, "kind": "unknown_error_code", "detail": str(c)})
        if rejected:
            after = outputs(a)
            if after != before or iset_writes[0] != iset_before:
                diff = [i for i in range(len(after)) if after[i] != before[i]]
                violations.append({"input": k, "kind": "rejected_changed_output", "detail": str(diff),
                                   "replies": [r.get("error") for r in replies]})
        if getattr(a, "pending", None):
            # reset/bootloader accepted: the device would reset into safe boot; the harness just goes on
            a.idle_output()
            a.pending = None
        if step_every and k % step_every == 0:
            try:
                a.step(now)
            except Exception as e:
                crashes += 1
                violations.append({"input": k, "kind": "crash_in_step", "detail": repr(e)})
        if iset_writes[1] > CAP:
            violations.append({"input": k, "kind": "iset_above_cap", "detail": str(iset_writes[1])})
            iset_writes[1] = 0
        if DEBUG and k % 500 == 0:
            gc.collect()
            print("GC", k, gc.mem_alloc(), len(machine.log), len(rp2.made), len(violations))
        if k % 64 == 0:
            gc.collect()              # live data only: what the heap must hold, not garbage awaiting a GC
            used = gc.mem_alloc()
            if used > heap_peak:
                heap_peak = used
    wall_ms = time.ticks_diff(time.ticks_ms(), t0)
    gc.collect()
    res = {"inputs": n_inputs, "lines": n_lines, "replies_ok": n_ok, "replies_err": n_err, "codes": codes,
           "crashes": crashes, "n_violations": len(violations), "violations": violations[:20],
           "iset_writes": iset_writes[0], "max_iset_ua": iset_writes[1], "heap_peak_sampled": heap_peak,
           "heap_after_gc": gc.mem_alloc(), "heap_free_after_gc": gc.mem_free(), "wall_ms": wall_ms}
    print("RESULT " + json.dumps(res))


main()
