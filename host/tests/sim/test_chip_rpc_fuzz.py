"""Every Chip RPC op against arbitrary JSON-shaped arguments: only the exception types the device would raise
(which the link maps back into the firmware), never an internal error, and a refused call changes no register."""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from picostim.boards import load
from picostim.sim.chip import Chip, regs

ALLOWED = (ValueError, TypeError, OverflowError, OSError, AttributeError)

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                        st.integers(min_value=-3, max_value=40), st.floats(allow_nan=False), st.text(max_size=6),
                        st.sampled_from(["buf", "ch", "pin", "read", "ctrl", "count"]))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                               st.dictionaries(st.sampled_from(
                                                                   ["freq", "duty_u16", "duty_ns", "invert", "read",
                                                                    "write", "count", "ctrl", "trigger",
                                                                    "read_words", "read_b64", "x"]), inner,
                                                                   max_size=4)), max_leaves=8)

OPS = {"mem_r": 2, "mem_w": 3, "pin_init": 5, "pin_v": 2, "pin_irq": 3, "pwm_new": 2, "pwm_init": 2,
       "pwm_freq": 2, "pwm_duty_u16": 2, "pwm_duty_ns": 2, "pwm_deinit": 1, "adc_new": 1, "adc_r": 1,
       "dma_new": 0, "dma_config": 2, "dma_reg": 3, "dma_active": 2, "dma_close": 1, "wdt_new": 1, "wdt_feed": 0,
       "uid": 0, "reset_cause": 0, "freq": 1}


def snapshot(c):
    t = c.now_ns
    pwm = [c.pwm.read(off, t) for off in range(0, 0xB4, 4)]
    gp = (list(c.gpio.ctrl), list(c.gpio.pad), c.gpio.out, c.gpio.oe)
    dma = [(ch.read, ch.write, ch.count, ch.reload, ch.ctrl, ch.busy) for ch in c.dma.ch]
    return pwm, gp, dma, c.wdt.enabled, c.wdt.deadline, c.sys_hz


@pytest.fixture(scope="module")
def chip():
    c = Chip(load("handheld-home"))
    c.advance_to(1000)
    return c


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(op=st.sampled_from(sorted(OPS)), args=st.lists(json_value, min_size=0, max_size=5))
def test_rpc_ops_fail_cleanly(chip, op, args):
    fn = getattr(chip, "rpc_" + op)
    args = args[:OPS[op]]
    before = snapshot(chip)
    try:
        fn(*args)
    except ALLOWED:
        if op not in ("pwm_new", "pwm_init", "pwm_freq"):   # C parity: PWM() resets invert before parsing
            assert snapshot(chip) == before
    chip.advance_to(chip.now_ns + 1000)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(addr=st.integers(min_value=0, max_value=0xFFFFFFFF), width=st.sampled_from([8, 16, 32]),
       value=st.integers(min_value=-2**40, max_value=2**40))
def test_any_bus_access_is_answered(chip, addr, width, value):
    addr &= ~(width // 8 - 1)
    if regs.WATCHDOG_BASE <= addr < regs.WATCHDOG_BASE + 0x4000:
        return      # a watchdog TRIGGER write legitimately resets the chip
    chip.rpc_mem_w(addr, width, value)
    v = chip.rpc_mem_r(addr, width)
    assert 0 <= v < (1 << width)
