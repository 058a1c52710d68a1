# S1 safe boot: these are the first statements that run after every reset. Only `machine` (built in, cannot
# fail) is imported before the stimulator outputs are driven to their safe levels.
import machine

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
# Issue 14: a locked unit takes no Ctrl-C from here on (main.py turns it off again as its first statement:
# MicroPython re-arms it before main.py; on an RP2040 USB comes up only after boot.py). An unlocked unit keeps it: a
# host's Ctrl-C during boot still reaches the REPL (deploys rely on it).
try:
    import os
    os.stat("/lock.bin")
    import micropython
    micropython.kbd_intr(-1)
except OSError:
    pass
