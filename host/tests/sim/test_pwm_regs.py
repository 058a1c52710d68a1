"""PWM register file and timeline: reset values, aliases, double buffering, biphasic pair timing to the tick."""

import pytest

from picostim.boards import load
from picostim.sim.chip import Chip, regs

CC0 = regs.pwm_reg(0, regs.PWM_CC)
TOP0 = regs.pwm_reg(0, regs.PWM_TOP)
CSR0 = regs.pwm_reg(0, regs.PWM_CSR)
DIV0 = regs.pwm_reg(0, regs.PWM_DIV)
CTR0 = regs.pwm_reg(0, regs.PWM_CTR)
EN = regs.PWM_BASE + regs.PWM_EN
INTR = regs.PWM_BASE + regs.PWM_INTR
ACTIVE = 0x927C61A8    # CC_A 25000 (+200 us), CC_B 37500: gap 100 us, -200 us; TOP 62499 = 500 us
IDLE = 0xF4240000      # CC_A 0, CC_B 62500 = TOP+1: both low


def w(c, addr, v):
    c.rpc_mem_w(addr, 32, v)


def r(c, addr):
    return c.rpc_mem_r(addr, 32)


@pytest.fixture
def chip():
    c = Chip(load("handheld-home"))
    c.advance_to(1000)
    for g in (0, 1):
        w(c, regs.IO_BANK0_BASE + 4 + 8 * g, regs.FUNC_PWM)
    return c


def bridge(c, word=IDLE, top=62499):
    """The firmware's layout: stopped slice, TOP, CC word, B inverted, then enabled."""
    w(c, TOP0, top)
    w(c, CC0, word)
    w(c, CSR0, regs.CSR_B_INV | regs.CSR_EN)


def highs(c, g, t0, t1):
    """[(rise, fall), ...] of pin g in [t0, t1) from the chip's edge timeline."""
    lv, edges = c.pin_edges(g, t0, t1)
    out, start = [], (t0 if lv else None)
    for t, v in edges:
        if v:
            start = t
        elif start is not None:
            out.append((start, t))
            start = None
    return out


def test_reset_values_and_aliases(chip):
    s = regs.pwm_reg(3, 0)
    assert [r(chip, s + o) for o in (0, 4, 8, 12, 16)] == [0, 0x10, 0, 0, 0xFFFF]
    w(chip, s + regs.ALIAS_SET, regs.CSR_A_INV | regs.CSR_B_INV)
    assert r(chip, s) == 0xC
    w(chip, s + regs.ALIAS_CLR, regs.CSR_A_INV)
    assert r(chip, s) == 0x8
    w(chip, s + regs.ALIAS_XOR, 0xC)
    assert r(chip, s) == 0x4
    w(chip, EN + regs.ALIAS_SET, 0b1001000)                  # EN aliases every CSR.EN
    assert r(chip, s) & 1 and r(chip, regs.pwm_reg(6, 0)) & 1
    assert r(chip, EN) == 0b1001000
    w(chip, EN + regs.ALIAS_CLR, 0b1000)
    assert r(chip, s) & 1 == 0


def test_narrow_write_is_replicated_across_the_word(chip):
    chip.rpc_mem_w(CC0, 16, 0x1234)                           # APB: a 16-bit write lands in both halves
    assert r(chip, CC0) == 0x12341234
    assert chip.rpc_mem_r(CC0 + 2, 16) == 0x1234


def test_misaligned_and_bad_width_rejected(chip):
    with pytest.raises(ValueError, match="not aligned to 4 bytes"):
        chip.rpc_mem_r(CC0 + 2, 32)
    with pytest.raises(ValueError):
        chip.rpc_mem_w(CC0, 12, 1)
    with pytest.raises(TypeError):
        chip.rpc_mem_w(CC0, 32, 1.5)


def test_biphasic_pair_from_one_cc_word_has_equal_phases_to_the_tick(chip):
    bridge(chip, ACTIVE)
    t0 = chip.now_ns
    chip.advance_to(t0 + 5_000_000)
    a = highs(chip, 0, t0, t0 + 5_000_001)
    b = highs(chip, 1, t0, t0 + 5_000_001)
    assert len(a) == len(b) == 10
    for (ar, af), (br, bf) in zip(a, b):
        assert af - ar == bf - br == 200_000                   # 25000 counts x 8 ns, exactly
        assert br - af == 100_000                              # gap
        assert bf - ar == 500_000                              # the pair fills the period
    assert all(y[0] - x[0] == 500_000 for x, y in zip(a, a[1:]))


def test_cc_write_mid_period_takes_effect_at_next_wrap_and_at_once_when_halted(chip):
    bridge(chip, IDLE)
    t_start = chip.now_ns
    chip.advance_to(t_start + 1_250_000)                       # 2.5 periods in
    w(chip, CC0, ACTIVE)
    chip.advance_to(t_start + 3_000_000)
    a = highs(chip, 0, t_start, t_start + 3_000_000)
    assert a[0][0] == t_start + 1_500_000                      # first pair at the next wrap, whole
    assert a[0][1] - a[0][0] == 200_000
    assert r(chip, CC0) == ACTIVE
    w(chip, EN + regs.ALIAS_CLR, 1)                            # halted: write latches immediately
    w(chip, TOP0, 999)
    w(chip, CC0, (600 << 16) | 400)
    w(chip, CTR0, 0)
    t1 = chip.now_ns
    w(chip, EN + regs.ALIAS_SET, 1)
    chip.advance_to(t1 + 100_000)
    a = highs(chip, 0, t1, t1 + 100_000)
    assert a[0] == (t1, t1 + 400 * 8)
    assert a[1][0] - a[0][0] == 1000 * 8


def test_two_separate_cc_writes_straddling_a_wrap_give_an_unbalanced_period(chip):
    bridge(chip, IDLE)
    t_start = chip.now_ns
    chip.advance_to(t_start + 1_000_000 - 2_000)              # 2 us before a wrap
    w(chip, CC0, (62500 << 16) | 25000)                       # A half first (as duty_u16 on A would)
    chip.advance_to(t_start + 1_000_000 + 2_000)              # ... the wrap passes ...
    w(chip, CC0, ACTIVE)                                      # B half second
    chip.advance_to(t_start + 3_000_001)
    a = highs(chip, 0, t_start, t_start + 3_000_001)
    b = highs(chip, 1, t_start, t_start + 3_000_001)
    # period starting at 1.0 ms: + phase only (DC); from 1.5 ms balanced pairs
    assert a[0] == (t_start + 1_000_000, t_start + 1_200_000)
    assert not any(t_start + 1_000_000 <= x < t_start + 1_500_000 for x, _ in b)
    assert len(a) == len(b) + 1


def test_top_is_double_buffered(chip):
    bridge(chip, ACTIVE)
    t0 = chip.now_ns
    chip.advance_to(t0 + 100_000)
    w(chip, TOP0, 64999)                                      # 520 us period from the next wrap
    chip.advance_to(t0 + 3_000_000)
    a = highs(chip, 0, t0, t0 + 3_000_000)
    starts = [x for x, _ in a]
    assert starts[1] - starts[0] == 500_000
    assert starts[2] - starts[1] == 520_000
    w(chip, TOP0, 124999)                                     # TOP is 16 bits: 124999 keeps 59463
    assert r(chip, TOP0) == 59463


def test_phase_correct_doubles_the_period_and_centres_the_pulse(chip):
    w(chip, TOP0, 999)
    w(chip, CC0, 250)
    w(chip, CSR0, regs.CSR_PH_CORRECT | regs.CSR_EN)
    t0 = chip.now_ns
    chip.advance_to(t0 + 100_000)
    a = highs(chip, 0, t0 + 1, t0 + 100_000)[1:]             # skip the pulse cut by the window start
    assert a[1][0] - a[0][0] == 2 * 1000 * 8                  # period doubles
    assert all(f - s == 2 * 250 * 8 for s, f in a)            # high for 2*CC counts, centred on CTR = 0
    assert a[0][0] == t0 + (2 * 1000 - 250) * 8               # centred on the 0 -> 0 turnaround


def test_intr_set_at_wrap_and_cleared_by_write_one(chip):
    bridge(chip, IDLE)
    t0 = chip.now_ns
    assert r(chip, INTR) & 1 == 0
    chip.advance_to(t0 + 400_000)
    assert r(chip, INTR) & 1 == 0
    chip.advance_to(t0 + 600_000)
    assert r(chip, INTR) & 1
    w(chip, INTR, 1)
    assert r(chip, INTR) & 1 == 0
    chip.advance_to(t0 + 1_000_001)
    assert r(chip, INTR) & 1


def test_ctr_readable_at_time_and_fractional_div(chip):
    bridge(chip, IDLE)
    t0 = chip.now_ns
    chip.advance_to(t0 + 80_000)
    assert r(chip, CTR0) == 10_000
    w(chip, DIV0, (2 << 4) | 8)                               # DIV 2.5: counts take 2 or 3 clocks (sigma-delta)
    t1 = chip.now_ns
    chip.advance_to(t1 + 20 * 2 * 8 + 20 * 3 * 8)
    assert r(chip, CTR0) == 10_000 + 40


def test_outover_force_low_acts_at_once_and_set_function_clears_it(chip):
    bridge(chip, (62500 << 16) | 62500)                       # A constant high, B constant low (inverted)
    chip.advance_to(chip.now_ns + 600_000)
    assert chip.pin_level(0, chip.now_ns) == 1
    t = chip.now_ns
    w(chip, regs.IO_BANK0_BASE + 4, (regs.OVER_LOW << 8) | regs.FUNC_PWM)
    assert chip.pin_level(0, t) == 0 and chip.pin_level(0, t - 1) == 1
    chip.rpc_pwm_new(0, {})                                   # gpio_set_function rewrites CTRL: override gone
    assert chip.pin_level(0, chip.now_ns) == 1


def test_iset_log_records_amplitude_writes():
    c = Chip(load("handheld-home"))
    c.advance_to(1000)
    g = c.iset_gpio
    c.rpc_pwm_new(g, {"freq": 100_000, "duty_u16": 0})
    c.advance_to(2000)
    c.rpc_pwm_duty_u16(g, 65535 * 4 // 10)
    c.rpc_pwm_duty_u16(g, 65535 * 4 // 10)                    # same value: no new entry
    log = c.iset_log
    assert [e["cc"] for e in log][-2:] == [0, round(0.4 * 1250)]
    assert log[-1]["t_ns"] == 2000 and log[-1]["top"] == 1249
    assert abs(log[-1]["duty"] - 0.4) < 1e-3
    c.advance_to(10_000_000)
    tl = c.pwm_duty_timeline(g, 0, 10_000_000)
    assert tl[-1][0] == 1000 + 1250 * 8                       # latched at the first wrap after the write
    assert abs(tl[-1][1] - 0.4) < 1e-3 and tl[0][0] == 0


def test_pin_edges_of_a_one_second_train_are_all_there_and_periodic(chip):
    # (how fast the timeline is built is a benchmark figure, bench/sections/vbspeed.py, not a test)
    bridge(chip, ACTIVE, top=62499)                            # 2000 pairs/s: 4000 edges per pin
    t0 = chip.now_ns
    chip.advance_to(t0 + 1_000_000_000)
    lv, edges = chip.pin_edges(0, t0 - 1, t0 + 1_000_000_000)
    assert len(edges) == 4000
    rises = [t for t, level in edges if level]
    assert len(rises) == 2000
    assert {b - a for a, b in zip(rises, rises[1:])} == {500_000}     # one pair every 62500 ticks of 8 ns


def test_halted_slice_pins_change_only_when_it_counts(chip):
    # power-on, never started: B_INV and the idle word written while halted leave both bridge inputs low
    w(chip, TOP0, 62499)
    w(chip, CC0, 0xFFFF0000)
    w(chip, CSR0, regs.CSR_B_INV)
    t = chip.now_ns
    assert chip.pin_level(0, t) == chip.pin_level(1, t) == 0
    # running with A constant high, then halted: A stays high even after CC = 0 (pico-sdk pwm_set_enabled notes)
    w(chip, CC0, (62500 << 16) | 62500)
    w(chip, CSR0, regs.CSR_B_INV | regs.CSR_EN)
    chip.advance_to(chip.now_ns + 100_000)
    w(chip, CSR0, regs.CSR_B_INV)
    w(chip, CC0, 0xFFFF0000)
    t = chip.now_ns
    chip.advance_to(t + 1_000_000)
    assert chip.pin_level(0, t + 500_000) == 1
    # one counted cycle with the idle word forces it low
    w(chip, CSR0, regs.CSR_B_INV | regs.CSR_EN)
    chip.advance_to(chip.now_ns + 100)
    w(chip, CSR0, regs.CSR_B_INV)
    t = chip.now_ns
    chip.advance_to(t + 1_000_000)
    assert chip.pin_level(0, t + 500_000) == chip.pin_level(1, t + 500_000) == 0


def test_inverted_channel_duty_zero_is_constant_high(chip):
    chip.rpc_pwm_new(1, {"freq": 2000, "duty_u16": 0, "invert": 1})
    t0 = chip.now_ns
    chip.advance_to(t0 + 2_000_000)
    lv, edges = chip.pin_edges(1, t0 + 1, t0 + 2_000_000)
    assert lv == 1 and edges == []                            # the trap: "off" on an inverted channel drives HIGH
    chip.rpc_pwm_duty_u16(1, 65535)                           # idle state of an inverted channel
    chip.advance_to(chip.now_ns + 1_000_000)
    assert chip.pin_level(1, chip.now_ns) == 0


def test_en_register_starts_slices_in_phase_and_ph_adv_steps_one_count(chip):
    for s in (0, 1):
        w(chip, regs.pwm_reg(s, regs.PWM_TOP), 999)
        w(chip, regs.pwm_reg(s, regs.PWM_CC), 500)
    w(chip, regs.IO_BANK0_BASE + 4 + 8 * 2, regs.FUNC_PWM)   # GPIO2 = slice 1 A
    w(chip, EN + regs.ALIAS_SET, 0b11)
    t0 = chip.now_ns
    chip.advance_to(t0 + 40_000)
    assert highs(chip, 0, t0 - 1, t0 + 40_000) == highs(chip, 2, t0 - 1, t0 + 40_000)
    w(chip, regs.pwm_reg(1, 0), regs.CSR_EN | regs.CSR_PH_ADV)   # slice 1 one count ahead
    assert r(chip, regs.pwm_reg(1, 0)) & regs.CSR_PH_ADV == 0     # self-clearing
    t1 = chip.now_ns
    chip.advance_to(t1 + 40_000)
    a = highs(chip, 0, t1 + 13_000, t1 + 40_000)             # window starts where both outputs are low
    b = highs(chip, 2, t1 + 13_000, t1 + 40_000)
    assert [x - y for (x, _), (y, _) in zip(a, b)] == [8] * len(a)
