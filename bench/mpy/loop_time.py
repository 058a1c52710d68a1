# Control-loop cost on the MicroPython unix port: the App's per-iteration work (buttons, step, LEDs, telemetry)
# timed while a session runs, plus the reference loop the virtual board uses to map host time to RP2040 time.
# argv: board.json, programs.json, flash dir, iterations. Prints "RESULT {json}".
import sys
import json
import time

board_path, programs_path, flash_dir, iters = sys.argv[1:5]
iters = int(iters)

class StopLoop(Exception):
    pass


from array import array
import machine
import rp2

TIMES = array("l", [0] * (iters + 2))      # preallocated: the measurement must not crowd the heap
N = [0]


class _Poll:
    """select.poll stand-in: no host input; each end-of-iteration wait (timeout > 0) records the time the
    iteration took and returns at once, so only the loop's own work is timed."""

    def __init__(self):
        self.t = None

    def register(self, *a):
        pass

    def poll(self, timeout=-1):
        if timeout:
            now = time.ticks_us()
            if self.t is not None:
                TIMES[N[0]] = time.ticks_diff(now, self.t)
                N[0] += 1
            if N[0] > iters:
                raise StopLoop()
            del machine.log[:]        # the stand-ins' write logs would grow without bound
            del rp2.made[:]
            self.t = time.ticks_us()
        return []


class _Select:
    POLLIN = 1

    @staticmethod
    def poll():
        return _Poll()


sys.modules["select"] = _Select
import board as B
import config as CFG
import audit as AUD
import app as APP

B.BOARD_PATH = board_path
B.PROGRAMS_PATH = programs_path
CFG.CONFIG_PATH = flash_dir + "/config.bin"
CFG.LEVELS_PATH = flash_dir + "/levels.bin"
AUD.AUDIT_PATH = flash_dir + "/audit.bin"


class Out:
    def write(self, s):
        pass


class Out2:
    def __init__(self):
        self.first = []

    def write(self, s):
        if len(self.first) < 4:
            self.first.append(s)


def ref_loop(n):
    s = 0
    for i in range(n):
        s += i
    return s


best = None
for _ in range(7):
    t0 = time.ticks_us()
    ref_loop(4000)
    dt = time.ticks_diff(time.ticks_us(), t0)
    best = dt if best is None or dt < best else best

import rp2regs as R
_b = B.load()
# Pin levels the loop reads in one SIO read: buttons released (pulled up), FAULT_N high, not charging.
machine.mem32[R.SIO_GPIO_IN] = 0x3FFFFFFF & ~(1 << _b["pins"]["CHARGING"])
a = APP.App(_b, out=Out())
a.audit = AUD.Audit(path=AUD.AUDIT_PATH)
a.out = START = Out2()
a.handle_line(b'{"id":1,"cmd":"start","level":3,"phase_us":200,"gap_us":50,"rate_hz":100,"duration_s":600}',
              time.ticks_ms())
a.handle_line(b'{"id":2,"cmd":"telemetry","on":true,"rate_hz":200}', time.ticks_ms())
try:
    a.run()          # the real main loop; the select stand-in ends it after `iters` iterations
except StopLoop:
    pass
for i in range(1, N[0]):
    print("T", TIMES[i])          # the host computes the distribution (no big sort on a full heap)
print("RESULT " + json.dumps({"ref_loop_us": best, "state": a.state, "start_reply": START.first[0][:300]}))
