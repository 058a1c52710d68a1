"""The machine/rp2 shims under the real MicroPython child of a virtual board, measured at the chip.

Code runs through stock mpremote, as on a Pico; the assertions are on the chip's pin timeline and on what the
MicroPython code printed.
"""
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from picostim.sim import VirtualBoard

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))


@pytest.fixture(scope="module")
def vb(tmp_path_factory):
    flash = tmp_path_factory.mktemp("flash")
    with VirtualBoard(board="handheld-home", flash_dir=flash, rig_port=None, clock="model") as board:
        yield board


def run(vb, code, timeout=90):
    r = subprocess.run([MPREMOTE, "connect", vb.port, "resume", "exec", code], capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.replace("\r\n", "\n")


def result(out):
    line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[7:])


def test_machine_api_basics(vb):
    out = run(vb, r'''
import machine, json
from machine import Pin, PWM, ADC, mem32, Signal
r = {}
r["uid"] = "".join("%02x" % b for b in machine.unique_id())
r["freq"] = machine.freq()
r["cause"] = machine.reset_cause()
a = PWM(Pin(16), freq=2000, duty_u16=0)
r["alias"] = PWM(0) is a and Pin(3) is Pin(3)
r["top"] = mem32[0x40050010]
mem32[0x4005000C] = 0x927C61A8
r["cc_signed"] = mem32[0x4005000C]
o = Pin(3, Pin.OUT, value=1)
r["out"] = o.value()
o.toggle()
r["toggled"] = o()
s = Signal(Pin(13, Pin.OUT), invert=True)
s.on()
r["sig"] = Pin(13).value()
r["btn"] = Pin(10, Pin.IN, Pin.PULL_UP).value()
r["adc"] = ADC(Pin(26)).read_u16()
try:
    PWM(0, freq=7)
except ValueError as e:
    r["err"] = str(e)
try:
    mem32[0x40050002]
except ValueError as e:
    r["align"] = str(e)
print("RESULT", json.dumps(r))
''')
    r = result(out)
    assert r["uid"] == vb.chip.rpc_uid()
    assert r["freq"] == 125_000_000 and r["cause"] == 1
    assert r["alias"] is True
    assert r["top"] == 62499
    assert r["cc_signed"] == 0x927C61A8 - 2**32                # rp2 mem32 reads are signed 32-bit
    assert (r["out"], r["toggled"], r["sig"], r["btn"]) == (1, 0, 0, 1)
    assert r["adc"] & 0xF == r["adc"] >> 12                     # read_u16 = raw << 4 | raw >> 8
    assert r["err"] == "freq too small"
    assert "not aligned" in r["align"]


def test_single_cc_word_from_micropython_gives_balanced_pairs_at_the_pins(vb):
    run(vb, r'''
from machine import mem32, Pin
for g in (0, 1):
    mem32[0x40014004 + 8 * g] = 4          # FUNCSEL PWM
mem32[0x40050000 + 0x3000] = 1             # CLR EN
mem32[0x40050010] = 62499
mem32[0x4005000C] = 0x927C61A8
mem32[0x40050008] = 0
mem32[0x40050000] = 0x9                    # EN | B_INV
''')
    chip = vb.chip
    t1 = chip.now_ns
    t0 = t1 - 3_000_000
    lv_a, ea = chip.pin_edges(0, t0, t1)
    lv_b, eb = chip.pin_edges(1, t0, t1)
    wa = [y[0] - x[0] for x, y in zip(ea, ea[1:]) if x[1] == 1]
    wb = [y[0] - x[0] for x, y in zip(eb, eb[1:]) if x[1] == 1]
    assert wa and wb and set(wa) == set(wb) == {200_000}
    run(vb, "from machine import mem32\nmem32[0x4005000C] = 0xF4240000\nmem32[0x40053000] = 1\n")


def test_hard_timer_rules_and_drift_free_soft_timer(vb):
    out = run(vb, r'''
import time, json
from machine import Timer, mem32
n = [0, 0]
def soft(t):
    n[0] += 1
t0 = time.ticks_us()
ts = Timer(period=10, callback=soft)
time.sleep_ms(1005)
ts.deinit()
mem32[0x4005000C] = 0x927C61A8             # reads as a long int on rp2
def hard(t):
    n[1] += 1
    x = mem32[0x4005000C]
th = Timer(period=5, callback=hard, hard=True)
time.sleep_ms(50)
th.deinit()
mem32[0x4005000C] = 0xF4240000
print("RESULT", json.dumps(n))
''')
    soft_n, hard_n = result(out)
    assert soft_n == 100                        # 10 ms period over 1.005 s: re-armed without drift
    assert hard_n == 1                          # MemoryError in a hard callback stops the timer
    assert "Uncaught exception in IRQ callback handler" in out and "MemoryError" in out


def test_pin_irq_reports_the_edge(vb):
    def press():
        while vb._child_state != "sleeping":
            time.sleep(0.001)
        with vb._cond:
            t = vb.chip.now_ns
            vb.chip.drive_input(11, 0, t + 10_000_000)
            vb.chip.drive_input(11, 1, t + 30_000_000)
    th = threading.Thread(target=press, daemon=True)
    code = r'''
import time, json
from machine import Pin
got = []
b = Pin(11, Pin.IN, Pin.PULL_UP)
b.irq(lambda p: got.append(p.irq().flags()), Pin.IRQ_FALLING | Pin.IRQ_RISING)
time.sleep_ms(200)
b.irq(None)
print("RESULT", json.dumps(got))
'''
    th.start()
    got = result(run(vb, code))
    vb.chip.drive_input(11, None)
    assert got == [4, 8]


def test_rp2_dma_chain_gates_pairs_without_the_cpu(vb):
    out = run(vb, r'''
import rp2, json, time
from array import array
from machine import mem32
CC = 0x4005000C
for g in (0, 1):
    mem32[0x40014004 + 8 * g] = 4          # FUNCSEL PWM
mem32[0x40053000] = 1
mem32[0x40050010] = 62499
mem32[CC] = 0xF4240000
a = rp2.DMA()
b = rp2.DMA()
act = array("I", [0x927C61A8])
idle = array("I", [0xF4240000])
cb = b.pack_ctrl(inc_read=False, inc_write=False, treq_sel=24, chain_to=a.channel)
ca = a.pack_ctrl(inc_read=False, inc_write=False, treq_sel=24, chain_to=b.channel)
b.config(read=idle, write=CC, count=9, ctrl=cb)
a.config(read=act, write=CC, count=1, ctrl=ca, trigger=True)
t0 = time.time_ns()
mem32[0x40050000] = 0x9
time.sleep_ms(60)
r = {"busy": a.active() or b.active(), "ctrl": rp2.DMA.unpack_ctrl(ca)["treq_sel"], "ch": [a.channel, b.channel],
     "t0": t0, "t1": time.time_ns()}
a.ctrl = ca & ~1
b.ctrl = cb & ~1
a.active(0)
b.active(0)
mem32[CC] = 0xF4240000
a.close()
b.close()
print("RESULT", json.dumps(r))
''')
    r = result(out)
    assert r["busy"] is True and r["ctrl"] == 24
    chip = vb.chip
    lv, ea = chip.pin_edges(0, r["t0"], r["t1"])           # virtual times from the board's own clock
    rises = [t for t, v in ea if v]
    assert len(rises) >= 8
    assert {y - x for x, y in zip(rises, rises[1:])} == {10 * 500_000}    # 1 pair every 10 periods, exact
