# `micropython` for the virtual board: the real module, except that kbd_intr() must tell the board's USB side
# (where Ctrl-C is recognised) rather than the unix terminal.
from micropython import *  # noqa: F401,F403
import _vblink


def kbd_intr(chr):
    _vblink.call("kbd_intr", chr)
