"""GPIO pins, input drives and IRQ events, watchdog, reset/soft reset, ADC conversion and the system clock."""
import pytest
from hypothesis import given, settings, strategies as st

from picostim.boards import load
from picostim.sim.chip import Chip, regs
from picostim.sim.chip.adc import raw_to_u16, volts_to_raw

MS = 1_000_000
IN, OUT, OD = 0, 1, 2
PULL_UP, PULL_DOWN = 1, 2
RISE, FALL = 8, 4


@pytest.fixture
def chip():
    c = Chip(load("handheld-home"))
    c.advance_to(1000)
    return c


def test_pin_modes_pulls_and_open_drain(chip):
    t = chip.now_ns
    assert chip.pin_level(10, t) == 0                           # reset: function NULL, pull-down
    chip.rpc_pin_init(10, IN, PULL_UP, None, None)
    assert chip.rpc_pin_v(10) == 1
    chip.rpc_pin_init(10, IN, None, None, None)                 # pull omitted -> pulls cleared (rp2 init)
    assert chip.rpc_pin_v(10) == 0
    chip.rpc_pin_init(3, OUT, None, 1, None)
    assert chip.rpc_pin_v(3) == 1 and chip.pin_level(3, chip.now_ns) == 1
    chip.rpc_pin_v(3, -1)                                        # toggle
    assert chip.rpc_pin_v(3) == 0
    chip.rpc_pin_init(7, OD, PULL_UP, None, None)               # open drain, value defaults to 1 = released
    assert chip.rpc_pin_v(7) == 1
    chip.rpc_pin_v(7, 0)
    assert chip.rpc_pin_v(7) == 0                                # driven low
    chip.drive_input(7, 0, chip.now_ns)
    chip.rpc_pin_v(7, 1)
    assert chip.rpc_pin_v(7) == 0                                # released, but the outside holds it low
    with pytest.raises(ValueError):
        chip.rpc_pin_init(30, OUT, None, 0, None)
    with pytest.raises(ValueError, match="invalid pin af"):
        chip.rpc_pin_init(5, 3, None, None, 12)


def test_sio_registers_drive_pins(chip):
    for g in (3, 13):
        chip.rpc_pin_init(g, OUT, None, 0, None)
    chip.rpc_mem_w(regs.SIO_BASE + regs.SIO_GPIO_OUT_SET, 32, (1 << 3) | (1 << 13))
    t = chip.now_ns
    assert chip.pin_level(3, t) == chip.pin_level(13, t) == 1
    assert chip.rpc_mem_r(regs.SIO_BASE + regs.SIO_GPIO_IN, 32) & (1 << 13)
    chip.rpc_mem_w(regs.SIO_BASE + regs.SIO_GPIO_OUT_CLR, 32, 1 << 3)
    assert chip.pin_level(3, chip.now_ns) == 0


def test_input_edges_raise_irq_events_with_flags_and_trigger_filter(chip):
    chip.rpc_pin_init(4, IN, PULL_UP, None, None)
    chip.rpc_pin_irq(4, FALL, True)
    t = chip.now_ns
    chip.advance_to(t + 100)                                     # the front end reports edges after the fact
    chip.drive_input(4, 0, t)
    chip.drive_input(4, 1, t + 10)                               # rising: not armed
    assert chip.pop_events() == [["irq", 4, FALL]]
    chip.drive_input(4, 0, t + 20)
    chip.drive_input(4, 1, t + 30)
    chip.drive_input(4, 0, t + 40)                               # latched once until the CPU takes it
    assert chip.pop_events() == [["irq", 4, FALL]]
    chip.rpc_pin_irq(4, None, None)
    chip.drive_input(4, 1, t + 50)
    chip.drive_input(4, 0, t + 60)
    assert chip.pop_events() == []
    lv, edges = chip.pin_edges(4, t + 5, t + 100)
    assert lv == 0 and edges == [(t + 10, 1), (t + 20, 0), (t + 30, 1), (t + 40, 0), (t + 50, 1), (t + 60, 0)]


def test_future_drive_is_applied_at_its_time_and_bounds_next_event(chip):
    chip.rpc_pin_init(11, IN, PULL_UP, None, None)
    chip.rpc_pin_irq(11, FALL | RISE, False)
    t = chip.now_ns
    chip.drive_input(11, 0, t + 5 * MS)
    assert chip.next_event_ns() == t + 5 * MS
    assert not chip.has_events()
    chip.advance_to(t + 6 * MS)
    assert chip.pop_events() == [["irq", 11, FALL]]
    assert chip.pin_level(11, t + 5 * MS - 1) == 1 and chip.pin_level(11, t + 5 * MS) == 0


def test_soft_reset_disables_pin_irqs(chip):
    chip.rpc_pin_init(12, IN, PULL_UP, None, None)
    chip.rpc_pin_irq(12, FALL, False)
    chip.soft_reset()
    chip.drive_input(12, 0, chip.now_ns)
    assert chip.pop_events() == []


def test_watchdog_expiry_resets_the_chip_at_the_exact_time(chip):
    chip.rpc_pwm_new(0, {"freq": 2000, "duty_u16": 65535})      # bridge A driven high
    chip.rpc_wdt_new(500)
    t_feed = chip.now_ns + 200 * MS
    chip.advance_to(t_feed)
    chip.rpc_wdt_feed()
    assert chip.next_event_ns() == t_feed + 500 * MS
    chip.advance_to(t_feed + 499 * MS)
    assert not chip.wdt_expired
    chip.advance_to(t_feed + 600 * MS)
    assert chip.wdt_expired and chip.wdt_expired_at == t_feed + 500 * MS
    assert chip.pin_level(0, t_feed + 500 * MS - 1) == 1
    assert chip.pin_level(0, t_feed + 500 * MS) == 0             # reset: pins back to their reset state
    assert chip.rpc_reset_cause() == 3
    chip.reset(3)                                                # what the board does when it restarts the CPU
    assert not chip.wdt_expired and chip.rpc_reset_cause() == 3
    chip.reset(1)
    assert chip.rpc_reset_cause() == 1


def test_watchdog_enable_bit_clear_stops_it_and_it_survives_soft_reset(chip):
    chip.rpc_wdt_new(100)
    chip.soft_reset()                                            # the watchdog keeps running
    chip.advance_to(chip.now_ns + 50 * MS)
    ctrl = chip.rpc_mem_r(regs.WATCHDOG_BASE, 32)
    assert ctrl & regs.WDT_CTRL_ENABLE
    assert abs((ctrl & 0xFFFFFF) - 50_000 * 2) <= 2              # TIME counts down twice per microsecond
    chip.rpc_mem_w(regs.WATCHDOG_BASE, 32, ctrl & ~regs.WDT_CTRL_ENABLE)
    assert chip.next_event_ns() is None
    chip.advance_to(chip.now_ns + 10_000 * MS)
    assert not chip.wdt_expired


def test_watchdog_limits_and_scratch(chip):
    with pytest.raises(ValueError, match="8388"):
        chip.rpc_wdt_new(8389)
    with pytest.raises(TypeError):
        chip.rpc_wdt_new(1.5)
    chip.rpc_wdt_new(8388)
    chip.rpc_mem_w(regs.WATCHDOG_BASE + regs.WDT_SCRATCH0, 32, 0xC0FFEE)
    chip.advance_to(chip.now_ns + 9000 * MS)
    assert chip.wdt_expired
    assert chip.rpc_mem_r(regs.WATCHDOG_BASE + regs.WDT_SCRATCH0, 32) == 0xC0FFEE   # survives a WDT reset
    chip.reset(1)
    assert chip.rpc_mem_r(regs.WATCHDOG_BASE + regs.WDT_SCRATCH0, 32) == 0


class Volts:
    """Stand-in voltage source (the analog front end is another module); the ADC under test is the chip's."""

    def __init__(self, fn):
        self.fn = fn
        self.advances = []

    def adc_volts(self, ch, t):
        return self.fn(ch, t)

    def on_advance(self, t0, t1):
        self.advances.append((t0, t1))


def test_adc_scaling_channels_and_instant(chip):
    assert chip.rpc_adc_r(0) == 0                                 # no front end: 0 V
    chip.analog = Volts(lambda ch, t: 1.65 if ch == 0 else (t / 1e9 if ch == 1 else 5.0))
    assert chip.rpc_adc_new(["pin", 26]) == 0
    assert chip.pin_level(26, chip.now_ns) == 0 and chip.rpc_pin_v(26) == 0   # digital input disabled
    assert chip.rpc_adc_new(["ch", 27]) == 1                      # ADC(27): not a channel -> the pin
    assert chip.rpc_adc_new(["ch", 4]) == 4
    with pytest.raises(ValueError, match="ADC capabilities"):
        chip.rpc_adc_new(["pin", 5])
    assert chip.rpc_adc_r(0) == raw_to_u16(2048) == 0x8008
    assert chip.rpc_adc_r(2) == 0xFFFF                            # clamped at 4095
    chip.advance_to(2 * 10**9)
    assert chip.rpc_adc_r(1) == raw_to_u16(volts_to_raw(2.0, 3.3))   # value at the instant of the read
    assert chip.analog.advances[-1] == (1000, 2 * 10**9)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=4095))
def test_read_u16_scaling(raw):
    v = raw_to_u16(raw)
    assert v >> 4 == raw and (raw == 0) == (v == 0) and (raw == 4095) == (v == 65535)


def test_machine_freq_scales_pwm_timing(chip):
    chip.rpc_pwm_new(0, {"freq": 2000, "duty_u16": 32768})
    assert chip.rpc_freq() == 125_000_000
    with pytest.raises(ValueError, match="cannot change frequency"):
        chip.rpc_freq(123_456_789)
    chip.advance_to(chip.now_ns + 10 * MS)
    chip.rpc_freq(250_000_000)                                    # DIV/TOP unchanged: everything twice as fast
    t0 = chip.now_ns + 1 * MS
    chip.advance_to(t0 + 10 * MS)
    lv, edges = chip.pin_edges(0, t0, t0 + 10 * MS)
    rises = [t for t, v in edges if v]
    assert {b - a for a, b in zip(rises, rises[1:])} == {250_000}
    assert chip.rpc_pwm_freq(0, None) == 4000


def test_uid_is_8_bytes_and_seeded():
    a = Chip(load("handheld-home"), seed=1).rpc_uid()
    b = Chip(load("handheld-home"), seed=2).rpc_uid()
    assert len(bytes.fromhex(a)) == 8 and a != b
    assert Chip(load("handheld-home"), seed=1).rpc_uid() == a


def test_unmodelled_registers_read_back_and_are_noted(chip):
    chip.rpc_mem_w(0x40060000, 32, 0x1234)
    assert chip.rpc_mem_r(0x40060000, 32) == 0x1234
    assert any("0x40060000" in n for n in chip.notes)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["in_up", "in", "out1", "out0", "drive0", "drive1", "release", "pwm",
                                            "pwm_inv", "inover", "advance"]),
                          st.integers(0, 7), st.integers(1, 3_000_000)), min_size=1, max_size=30))
def test_gpio_in_word_cache_matches_the_pin_by_pin_levels(ops):
    # GPIO_IN is cached between recorded changes (read once per CPU wake-up); whatever happens to the pins, the
    # cached word must equal the pad levels read one pin at a time, including pins driven by a running PWM slice.
    c = Chip(load("handheld-home"))
    c.advance_to(1000)
    c.rpc_mem_w(regs.pwm_reg(0, regs.PWM_TOP), 32, 999)
    c.rpc_mem_w(regs.pwm_reg(0, regs.PWM_CC), 32, (700 << 16) | 300)
    c.rpc_mem_w(regs.pwm_reg(0, regs.PWM_CSR), 32, regs.CSR_EN)
    for op, g, dt in ops:
        if op == "in_up":
            c.rpc_pin_init(g, IN, PULL_UP, None, None)
        elif op == "in":
            c.rpc_pin_init(g, IN, None, None, None)
        elif op in ("out1", "out0"):
            c.rpc_pin_init(g, OUT, None, 1 if op == "out1" else 0, None)
        elif op.startswith("drive"):
            c.drive_input(g, int(op[-1]), c.now_ns)
        elif op == "release":
            c.drive_input(g, None, c.now_ns)
        elif op == "pwm":
            c.rpc_mem_w(regs.IO_BANK0_BASE + 4 + 8 * g, 32, regs.FUNC_PWM)
        elif op == "pwm_inv":
            c.rpc_mem_w(regs.IO_BANK0_BASE + 4 + 8 * g, 32, regs.FUNC_PWM | (1 << regs.CTRL_INOVER_SHIFT))
        elif op == "inover":
            c.rpc_mem_w(regs.IO_BANK0_BASE + 4 + 8 * g, 32, regs.FUNC_SIO | (1 << regs.CTRL_INOVER_SHIFT))
        else:
            c.advance_to(c.now_ns + dt)
        for t in (c.now_ns, c.now_ns + dt // 3):
            c.advance_to(t)
            want = sum(c.gpio.sio_in(p, t) << p for p in range(regs.NUM_GPIO))
            assert c.rpc_mem_r(regs.SIO_BASE + regs.SIO_GPIO_IN, 32) == want
