# Runs the application; whatever ends it (Ctrl-C from mpremote, a soft reset, any exception) leaves the
# output idle first (S14). A locked unit (issue 14) never returns to the REPL: Ctrl-C is data, and whatever ends the
# application resets the unit.
import micropython
micropython.kbd_intr(-1)
import machine


def _locked():
    try:
        import os
        os.stat("/lock.bin")
        return True
    except OSError:
        return False


if not _locked():
    micropython.kbd_intr(3)    # unlocked: Ctrl-C stops the application (development, deploys)


def _force_idle():
    # Independent of the app's objects (they may not exist): the same safe levels as boot.py.
    try:
        import json
        with open("/board.json") as f:
            p = json.load(f)["pins"]
        s = (p["BRIDGE_A"] >> 1) & 7
        machine.mem32[0x4005000C + 0x14 * s] = 0xFFFF0000      # idle CC word: both bridge inputs low
        for n in ("BRIDGE_A", "BRIDGE_B", "HV_EN", "ISET"):
            machine.Pin(p[n], machine.Pin.OUT, value=0)
    except Exception:
        for g in range(26):
            machine.mem32[0x40014004 + 8 * g] = (2 << 8) | 31


def _watchdog_off():
    # The RP2040 watchdog cannot be stopped from MicroPython and survives a soft reset, so a REPL session or
    # an mpremote deploy after Ctrl-C would be reset mid-transfer. Only here, on a deliberate exit to the REPL
    # with the output already idle, clear WATCHDOG CTRL.ENABLE (bit 30). A hang never gets here, so S11 holds.
    machine.mem32[0x40058000] = machine.mem32[0x40058000] & ~(1 << 30)


def _safe_exit(app_obj, deliberate):
    # mpremote may send Ctrl-C twice, so another KeyboardInterrupt can land inside this clean-up: start it over
    # (a Ctrl-C here is deliberate too) until the output is idle and, on a deliberate exit, the watchdog is off.
    for _ in range(20):
        try:
            if app_obj is not None:
                try:
                    app_obj.idle_output()
                except Exception:
                    pass
            _force_idle()
            if deliberate:
                _watchdog_off()
            return
        except KeyboardInterrupt:
            deliberate = True


_app = None
try:
    import board
    import app
    _app = app.App(board.load())
    _app.run()
except KeyboardInterrupt:
    _safe_exit(_app, not _locked())
    if not _locked():
        print("picostim: stopped, output idle (REPL)")
except Exception as e:
    _safe_exit(_app, False)
    if not _locked():
        import sys
        print("picostim: application error, output idle:")
        sys.print_exception(e)
finally:
    _safe_exit(None, False)
    # locked: never fall through to the REPL; a fresh start instead (the output is idle)
    while _locked():
        try:
            machine.reset()
        except BaseException:
            pass
