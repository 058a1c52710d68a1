"""Regression (virtual board): a Ctrl-C that lands while the board is (re)booting must not kill the board.

On a Pico a host may send Ctrl-C at any moment (mpremote does on connect; a host killed mid-flash leaves the
board soft-resetting); the board then still comes up and enters the raw REPL. picostim deploy relies on this.
"""
import time

import pytest

from picostim.rawrepl import RawRepl
from picostim.sim import VirtualBoard
from picostim.transport import SerialTransport
from simhelp import vb_ready

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("delay_s", [0.0, 0.05, 0.3])
def test_ctrl_c_right_after_soft_reset_leaves_board_usable(delay_s):
    with VirtualBoard(board="handheld-home", rig_port=None) as vb:
        vb_ready(vb)
        with SerialTransport(vb.port) as t:
            r = RawRepl(t)
            r.enter()
            t.write(b"\x04")                 # soft reset from the raw REPL, don't wait for it
            time.sleep(delay_s)
            t.write(b"\r\x03\x03")           # a host connecting (or retrying) right now
            time.sleep(0.5)
            r2 = RawRepl(t)
            r2.enter(timeout=15)
            assert r2.eval("1+1") == 2
