"""The emu engine: the official MicroPython image in rp2040js, with each rp2040js gap handled by our harness.

Needs the image: set PICOSTIM_MICROPYTHON_UF2 to the RPI_PICO v1.28.0 UF2 (micropython.org). Each test boots its
own emulated board (~0.3 s) and talks to it through its pty with stock mpremote, as a user would a Pico.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

UF2 = os.environ.get("PICOSTIM_MICROPYTHON_UF2")
pytestmark = [
    pytest.mark.skipif(not UF2, reason="emu engine: set PICOSTIM_MICROPYTHON_UF2 to the MicroPython v1.28.0 "
                                       "RPI_PICO UF2 (micropython.org)"),
    pytest.mark.skipif(shutil.which("node") is None, reason="emu engine: Node.js not installed"),
]

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))


@pytest.fixture
def emu():
    from picostim.sim import VirtualBoard
    with VirtualBoard(board="pico-devkit", engine="emu", micropython=UF2, rig_port=None) as vb:
        yield vb


def mpr(vb, *args, timeout=60):
    r = subprocess.run([MPREMOTE, "connect", vb.port, *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip()


def ex(vb, code, timeout=60):
    return mpr(vb, "exec", code, timeout=timeout)


def wait_port(vb, timeout=30):
    from picostim.target import wait_alive
    wait_alive(vb.port, timeout=timeout)


def test_boots_the_image_and_reports_its_identity(emu):
    out = ex(emu, "import sys, machine; print(sys.version); print(machine.unique_id().hex(), machine.freq())")
    assert "MicroPython v1.28.0" in out
    uid, freq = out.splitlines()[-1].split()
    assert uid == emu.uid and uid != "00" * 8          # rp2040js alone reads zeros
    assert int(freq) == 125_000_000


def test_flash_writes_survive_a_chip_reset(emu):
    # littlefs writes go through the ROM's flash_range_erase/program (stubs in rp2040js): they must reach the flash
    ex(emu, "f = open('/persist.txt', 'w'); f.write('kept %d' % 4242); f.close()")
    emu.reset()                               # power cycle: a new chip, the same flash
    wait_port(emu)
    assert ex(emu, "print(open('/persist.txt').read())") == "kept 4242"


def test_watchdog_expiry_resets_the_chip_with_wdt_cause(emu):
    n = len(emu.resets)
    ex(emu, "from machine import WDT; w = WDT(timeout=200)")      # never fed
    deadline = time.monotonic() + 30
    while len(emu.resets) == n and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(emu.resets) > n, "the watchdog never reset the chip"
    wait_port(emu)
    assert ex(emu, "import machine; print(machine.reset_cause())") == "3"      # WDT_RESET
    n = len(emu.resets)
    # the port vanishes under mpremote, as on a Pico: its exit status says nothing here
    subprocess.run([MPREMOTE, "connect", emu.port, "exec", "import machine; machine.reset()"], capture_output=True,
                   timeout=30)
    deadline = time.monotonic() + 30
    while len(emu.resets) == n and time.monotonic() < deadline:
        time.sleep(0.05)
    wait_port(emu)
    assert ex(emu, "import machine; print(machine.reset_cause())") == "3"      # machine.reset() -> WDT_RESET


PACED = """
import rp2, time, array
from machine import PWM, Pin, mem32
pwm = PWM(Pin(6), freq=10000, duty_u16=32768)      # slice 3: wraps every 100 us
src = array.array('I', [0])
dst = array.array('I', [0])
d = rp2.DMA()
d.config(read=src, write=dst, count=1000, ctrl=d.pack_ctrl(size=2, inc_read=False, inc_write=False, treq_sel=24 + 3),
         trigger=True)
t0 = time.ticks_us()
time.sleep_ms(20)
left = d.count
dt = time.ticks_diff(time.ticks_us(), t0)
print(1000 - left, dt, (mem32[0x400500A0] >> 3) & 1)
d.close()
"""


def test_pwm_wrap_paces_dma_one_transfer_per_wrap_and_en_reads_back(emu):
    done, dt_us, en = map(int, ex(emu, PACED).split())
    wraps = dt_us / 100
    assert abs(done - wraps) <= 2, f"{done} transfers in {dt_us} us (~{wraps:.0f} wraps): DMA not paced by the wrap"
    assert en == 1, "PWM EN (0x400500A0) does not read back the running slice"


STOPPED_SLICE = """
import time
from machine import mem32
b = 0x40050000 + 0x14 * 3                  # slice 3 (GPIO 6 = channel A)
mem32[0x40014000 + 8 * 6 + 4] = 4          # GPIO 6 on the PWM
mem32[b] = 0                               # CSR: stopped
mem32[b + 8] = 0                           # CTR
mem32[b + 16] = 999                        # TOP
mem32[b + 12] = 0                          # CC
mem32[0x400500A4] = 1 << 3                 # clear the wrap flag
mem32[b + 4] = 2 << 4                      # DIV: must not start the stopped slice
time.sleep_ms(5)
ctr, wrapped = mem32[b + 8], (mem32[0x400500A4] >> 3) & 1
mem32[b + 12] = 500                        # CC of a stopped slice latches at once: counter 0 < 500, A high
hi = (mem32[0x40014030] >> 9) & 1          # GPIO6_STATUS.OUTTOPAD
mem32[b + 12] = 0
lo = (mem32[0x40014030] >> 9) & 1
print(ctr, wrapped, hi, lo)
"""


def test_stopped_pwm_slice_stays_stopped_and_latches_cc_at_once(emu):
    # rp2040js starts a stopped slice's counter on a DIV write (then wraps and DMA requests come while "stopped")
    # and latches CC only at a wrap/enable; on the chip a stopped slice holds and takes CC/TOP writes at once.
    ctr, wrapped, hi, lo = map(int, ex(emu, STOPPED_SLICE).split())
    assert (ctr, wrapped) == (0, 0), f"stopped slice counted to {ctr} (wrap flag {wrapped}) after a DIV write"
    assert (hi, lo) == (1, 0), f"pin A {hi}/{lo} after CC 500/0 on a stopped slice at count 0 (expected 1/0)"


ADC_DREQ = """
import rp2, time, array
from machine import ADC, Pin, mem32
CS = 0x4004C000
FCS = CS + 8
FIFO = CS + 12
ADC(Pin(26))
mem32[FCS] = 1 | 8 | (1 << 24)             # FIFO on, DREQ on, threshold 1
for _ in range(3):
    mem32[CS] = 1 | 4                      # START_ONCE, channel 0: the FIFO fills, DREQ_ADC asserted
    time.sleep_us(20)
mem32[FCS] = 0                             # FIFO and its DREQ off
while mem32[FCS] & (0xF << 16):
    mem32[FIFO]
mem32[FCS] = 0xC00                         # clear OVER/UNDER
dst = array.array('H', [0])
d = rp2.DMA()
d.config(read=FIFO, write=dst, count=1000, ctrl=d.pack_ctrl(size=1, inc_read=False, inc_write=False, treq_sel=36),
         trigger=True)
time.sleep_ms(2)
idle, under = 1000 - d.count, (mem32[FCS] >> 10) & 1
mem32[FCS] = 1 | 8 | (1 << 24)
mem32[CS] = 1 | 4                          # one conversion: one transfer
time.sleep_ms(2)
one = 1000 - d.count
d.close()
print(idle, under, one)
"""


def test_adc_dreq_follows_the_fifo(emu):
    # on the chip DREQ_ADC is asserted while DREQ_EN is set and the FIFO holds data; rp2040js left it asserted after
    # DREQ_EN was cleared, and a channel started on it later read the empty FIFO 2^30 times at one emulated instant
    # (the firmware's second `start` after a stop then stood still for minutes)
    idle, under, one = map(int, ex(emu, ADC_DREQ).split())
    assert (idle, under) == (0, 0), f"{idle} transfers from an empty FIFO (UNDER {under}) with no DREQ"
    assert one == 1, f"{one} transfers for one conversion"


def test_uart_tx_raises_no_interrupt_storm(emu):
    out = ex(emu, "from machine import UART; import time\n"
                  "u = UART(0, 115200); u.write(b'x' * 200); time.sleep_ms(50)\n"
                  "t = time.ticks_us()\nfor i in range(1000): pass\nprint(time.ticks_diff(time.ticks_us(), t))")
    loop_us = int(out.splitlines()[-1])
    assert loop_us < 20_000, f"1000 empty iterations took {loop_us} us: the CPU is stuck in the UART IRQ"


def test_idle_time_follows_wall_time_and_mpremote_mount_works(emu, tmp_path):
    t_emu = emu.now_ns()
    for _ in range(20):
        time.sleep(0.05)
        assert emu.ahead_of_wall_ns() <= 1_000_000, "emulated time ran ahead of wall time while idle"
    assert emu.now_ns() - t_emu >= 0.5e9, "emulated time did not follow wall time"
    (tmp_path / "hello_mount.py").write_text("print('mounted ok', 6 * 7)\n")
    out = mpr(emu, "mount", str(tmp_path), "exec", "import hello_mount", timeout=60)
    assert "mounted ok 42" in out


def test_adc_reads_the_front_end_at_the_conversion_instant(emu):
    # V_BAT through its divider: battery_v / v_bat_divider on the pico-devkit profile
    a = emu.profile["analog"]
    pin = emu.profile["pins"]["V_BAT"]
    out = ex(emu, f"from machine import ADC, Pin\nprint(sum(ADC(Pin({pin})).read_u16() >> 4 for _ in range(32)) // 32)")
    expect = a["battery_v"] / a["v_bat_divider"] / a["adc_vref_v"] * 4096
    assert abs(int(out) - expect) <= 8, (out, expect)
    assert emu.rpc_counts["adc"] >= 32


def test_picostim_flash_writes_and_verifies_the_app_on_the_emulated_chip(emu):
    # what a user does with a fresh Pico: `picostim flash` through the port (files hashed back from the chip's own
    # littlefs, written by the ROM flash calls the harness implements), then the app answers `hello`
    exe = str(Path(sys.executable).with_name("picostim"))
    r = subprocess.run([exe, "flash", "--board", "pico-devkit", "--port", emu.port, "--json"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = subprocess.run([exe, "flash", "--board", "pico-devkit", "--port", emu.port, "--verify", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    from picostim.device import Device
    with Device(emu.port) as dev:
        assert dev.hello(timeout=30)["board"] == "pico-devkit"


def test_a_rig_action_lands_at_the_instant_now_ns_returned(emu):
    # `t = rig.now_s(); rig.inject(...)`: the emulator must not have run past t (a grant in flight, up to 2 ms)
    # when the fault arrives, or every latency the HIL suite measures from t includes the grant (S5 read 2.1 ms)
    gpio = emu.profile["pins"]["FAULT_N"]
    lags = []
    for _ in range(5):
        time.sleep(0.05)                     # paced: the emulator runs grants meanwhile
        t = emu.now_ns()
        emu.rig.inject("fault_n", ms=1.0)
        emu.wait_until(t + 3_000_000)
        _, edges = emu.chip.pin_edges(gpio, t - 1, t + 3_000_000)
        falls = [te for te, lvl in edges if lvl == 0]
        assert falls, "FAULT_N never fell"
        lags.append(falls[0] - t)
    assert max(lags) <= 1000, f"FAULT_N fell {max(lags)} ns after the instant now_ns() returned"


def test_time_moves_on_at_once_after_a_fast_forward(emu):
    # A wait on emulated time runs the emulator ahead of wall time; then pacing restarts from there at once. Before,
    # the engine could go on sleeping on the pacing line from before the wait until wall time caught up (~20 s
    # after a 25 s wait) and a reply the host asked for meanwhile waited with it (the "held reply").
    t = emu.chip.now_ns
    emu.wait_until(t + 30_000_000_000)
    t1 = emu.chip.now_ns
    t0 = time.monotonic()
    assert ex(emu, "print(6 * 7)", timeout=20).splitlines()[-1] == "42"
    took = time.monotonic() - t0
    moved_s = (emu.chip.now_ns - t1) / 1e9
    assert took < 5, f"the REPL answered {took:.1f} s after a 30 s fast-forward"
    assert moved_s >= 0.3 * took * emu.speed, f"emulated time moved {moved_s:.2f} s in {took:.1f} s of wall time"
