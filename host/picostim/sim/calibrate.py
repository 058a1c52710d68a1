"""Virtual-time calibration: run the same MicroPython workloads whose RP2040 timings are published, and compare.

The same script runs on a real Pico (`calibrate_port(port)`) to recalibrate: put the Pico's figures in
`RP2040_FIGURES` (or the board profile's `mcu.vclock`) and adjust `ref_loop_ns` / `call_cost_us` until the virtual
board's figures match.
"""
from __future__ import annotations

import statistics

# Published RP2040 (125 MHz, MicroPython) figures the virtual board is calibrated against, in µs.
RP2040_FIGURES = {
    "gpio_toggle_loop_us": 31.0,      # one iteration of `p.value(1); p.value(0)`
    "poll_button_to_led_us": 18.0,    # `while True: led.value(not btn.value())`, button edge -> LED edge
}
# How close the virtual board must come (virtual / published): the model clock is held to it by the tests, and the
# bench reports both clocks against it.
TOLERANCE = (0.6, 1.6)

TOGGLE_LOOP = """
import machine, time
p = machine.Pin({pin}, machine.Pin.OUT)
def loop(n):
    for _ in range(n):
        p.value(1)
        p.value(0)
loop(10)
t0 = time.ticks_us()
loop({n})
print(time.ticks_diff(time.ticks_us(), t0) / {n})
"""

POLL_LOOP = """
import machine
btn = machine.Pin({btn}, machine.Pin.IN, machine.Pin.PULL_UP)
led = machine.Pin({led}, machine.Pin.OUT, value=0)
def loop():
    while True:
        led.value(not btn.value())
loop()
"""

REF_LOOP = """
import time
def work(n):
    s = 0
    for i in range(n):
        s += i
    return s
t0 = time.ticks_us()
work({n})
print(time.ticks_diff(time.ticks_us(), t0) / {n})
"""


def _exec(repl, code, timeout=60.0) -> str:
    return repl.exec(code, timeout=timeout).decode().strip()


def measure(vb, toggles: int = 2000, presses: int = 20) -> dict:
    """Figures in virtual µs on a running VirtualBoard (its firmware is interrupted; nothing is flashed)."""
    from ..rawrepl import RawRepl
    from ..transport import SerialTransport

    pins = vb.profile["pins"]
    t = SerialTransport(vb.port)
    try:
        repl = RawRepl(t)
        repl.enter()
        toggle = float(_exec(repl, TOGGLE_LOOP.format(pin=pins["LED_STATUS"], n=toggles)))
        # host noise only ever adds time (cpu clock): the fastest of a few runs is the figure
        ref = min(float(_exec(repl, REF_LOOP.format(n=20000))) for _ in range(3 if vb.clock == "cpu" else 1))
        # The polling loop runs forever: start it, then press the button from the rig and time the LED edge.
        _start_no_wait(repl, POLL_LOOP.format(btn=pins["BTN_UP"], led=pins["LED_STATUS"]))
        lat = _press_latencies(vb, pins["BTN_UP"], pins["LED_STATUS"], presses)
        repl.enter()
    finally:
        t.close()
    return {
        "clock": vb.clock,
        "cpu_factor": vb.cpu_factor,
        "ref_loop_us": ref,
        "gpio_toggle_loop_us": toggle,
        "poll_button_to_led_us": statistics.median(lat),
        "poll_button_to_led_us_p90": sorted(lat)[int(0.9 * (len(lat) - 1))],
        "poll_button_to_led_us_all": lat,
    }


def _start_no_wait(repl, code: str):
    # Raw REPL: send the code and Ctrl-D, read "OK", and leave it running.
    t = repl.t
    t.write(b"\r\x03\x03")
    t.drain(0.05)
    t.write(b"\x01")
    t.read_until(b"raw REPL; CTRL-B to exit\r\n>", timeout=5)
    t.write(code.encode() + b"\x04")
    t.read_until(b"OK", timeout=5)


def _press_latencies(vb, btn: int, led: int, presses: int) -> list[float]:
    # Each edge lands at a different phase of the polling loop (offsets spread over 0..40 µs after a sync).
    chip = vb.chip
    out = []
    vb.wait_until(chip.now_ns + 5_000_000)
    for i in range(2 * presses):
        with vb._cond:
            t0 = chip.now_ns + (i * 7919) % 40_000
            chip.drive_input(btn, 0 if i % 2 == 0 else 1, t0)
        vb.wait_until(t0 + 3_000_000)
        _, edges = chip.pin_edges(led, t0, t0 + 3_000_000)
        if edges:
            out.append((edges[0][0] - t0) / 1000.0)
    return out


def compare(figures: dict) -> dict:
    """Ratio virtual / published for each calibrated figure."""
    return {k: figures[k] / v for k, v in RP2040_FIGURES.items() if k in figures}
