# S1 safe boot: these are the first statements that run after every reset. Only `machine` and `micropython` (built
# in, cannot fail) are imported before the stimulator outputs are driven to their safe levels.
import machine
import micropython

# Issue 14: no Ctrl-C during boot (a KeyboardInterrupt here would skip what follows); given back below unless locked.
micropython.kbd_intr(-1)

try:
    f = open("/board.json")
    try:
        import json
        _p = json.load(f)["pins"]
    finally:
        f.close()
    # H-bridge inputs low (electrodes tied to ground), compliance supply off, amplitude DAC at 0. Pin() in
    # output mode takes the pad away from PWM, so a slice frozen high by a soft reset cannot reach the pin.
    for _n in ("BRIDGE_A", "BRIDGE_B", "HV_EN", "ISET"):
        machine.Pin(_p[_n], machine.Pin.OUT, value=0)
    del _p, _n
except Exception:
    # No readable profile, so we do not know which GPIO is which. Take every user GPIO (0..25; 26..29 are
    # ADC inputs) off its peripheral (FUNCSEL NULL) with the output override set to LOW: nothing can drive a
    # bridge input or HV_EN high, and no input is fought by a driven output. The front end's pull-downs hold
    # the bridge and HV_EN low. main.py then refuses to stimulate without a valid profile.
    for _g in range(26):
        machine.mem32[0x40014004 + 8 * _g] = (2 << 8) | 31
# Production lock (issue 14): Ctrl-C stays off on a locked unit; main.py (which a locked unit always runs: a hard
# reset starts in the friendly REPL mode and the raw REPL cannot be reached) turns it off again as its first
# statement and never returns. The application cannot run from here: MicroPython brings USB up only after boot.py.
try:
    import os
    os.stat("/lock.bin")
except OSError:
    micropython.kbd_intr(3)
