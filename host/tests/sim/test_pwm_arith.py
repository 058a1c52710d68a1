"""machine.PWM integer arithmetic (ports/rp2/machine_pwm.c) and the machine.PWM state rules, on the virtual chip.

Vectors from reference/rp2040-micropython.md section 1 (integer model of the C code at 125 MHz).
"""
import pytest
from hypothesis import given, settings, strategies as st

from picostim.boards import load
from picostim.sim.chip import Chip, regs
from picostim.sim.chip import mp_pwm as M

F = 125_000_000


@pytest.mark.parametrize("freq,div16,top", [
    (8, 3815, 65530), (10, 3052, 65530), (100, 306, 65358), (1000, 31, 64515), (1907, 17, 61691),
    (1908, 16, 65513), (2000, 16, 62499), (62_500_000, 16, 1), (125_000_000, 16, 0), (250_000_000, 16, 0),
])
def test_freq_table(freq, div16, top):
    assert M.freq_to_div_top(freq, F) == (div16, top)


def test_freq_too_small_and_above_2f_silently_0xffff():
    with pytest.raises(ValueError, match="freq too small"):
        M.freq_to_div_top(7, F)
    # f > 2F: TOP = 0xFFFFFFFF, the 16-bit register keeps 0xFFFF -> about 1907 Hz
    div16, top = M.freq_to_div_top(300_000_000, F)
    assert (div16, top) == (16, 0xFFFF)
    assert M.freq_get(div16, top, F) == 1907


def test_duty_u16_full_scale_is_top_plus_one_and_0xffff_truncates():
    assert M.duty_u16_to_cc(65535, 62499) == 62500          # 100 % = CC = TOP+1, glitch-free high
    assert M.duty_u16_to_cc(0, 62499) == 0
    assert M.duty_u16_to_cc(70000, 62499) == 62500          # clamped to 65535
    assert M.duty_u16_to_cc(65535, 0xFFFF) == 0             # TOP = 0xFFFF: 65536 truncates to 0 (PR #11336)
    assert M.duty_u16_to_cc(32768, 62499) == 31250


def test_getters_round_like_c():
    assert M.cc_to_duty_u16(62500, 62499) == 65535
    assert M.cc_to_duty_u16(25000, 62499) == (25000 * 65535 + 31250) // 62500
    assert M.cc_to_duty_ns(25000, 16, F) == 200000           # 8 ns per count
    assert M.duty_ns_to_cc(200000, 16, 62499, F) == 25000
    assert M.duty_ns_to_cc(10**9, 16, 62499, F) == 62500     # clamped to TOP+1
    assert M.duty_ns_to_cc(-5, 16, 62499, F) == 62500        # negative wraps as uint64 -> clamped: 100 %


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=8, max_value=62_500_000))
def test_freq_set_properties(freq):
    div16, top = M.freq_to_div_top(freq, F)
    assert 16 <= div16 < 4096
    assert top <= M.TOP_MAX - 1
    achieved = 16 * F / (div16 * (top + 1))
    assert abs(achieved - freq) / freq < 0.02 or freq > 1_000_000   # high freqs quantise coarsely


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=65535), st.integers(min_value=0, max_value=65533))
def test_duty_u16_round_trip(d, top):
    cc = M.duty_u16_to_cc(d, top)
    assert 0 <= cc <= top + 1
    back = M.cc_to_duty_u16(cc, top)
    assert abs(back - d) <= 65535 / (top + 1) / 2 + 1


@pytest.fixture
def chip():
    c = Chip(load("handheld-home"))
    c.advance_to(1000)
    return c


def slice_regs(c, s):
    return {name: c.rpc_mem_r(regs.pwm_reg(s, off), 32)
            for name, off in (("csr", 0), ("div", 4), ("cc", 12), ("top", 16))}


def test_constructor_writes_registers_and_starts_only_when_freq_and_duty_set(chip):
    chip.rpc_pwm_new(0, {"freq": 2000})
    r = slice_regs(chip, 0)
    assert r["csr"] & 1 == 0                     # no duty yet: not started
    assert (r["div"], r["top"]) == (16, 62499)
    chip.rpc_pwm_duty_u16(0, 65535)
    r = slice_regs(chip, 0)
    assert r["csr"] & 1 == 1
    assert r["cc"] & 0xFFFF == 62500
    assert chip.rpc_pwm_freq(0, None) == 2000
    assert chip.rpc_pwm_duty_u16(0, None) == 65535


def test_duty_ns_is_rescaled_on_freq_change_and_u16_keeps_ratio(chip):
    chip.rpc_pwm_new(0, {"freq": 2000, "duty_ns": 200000})
    chip.rpc_pwm_new(1, {"freq": 2000, "duty_u16": 32768})
    assert slice_regs(chip, 0)["cc"] == (31250 << 16) | 25000
    chip.rpc_pwm_freq(0, 1000)                   # DIV 31/16, TOP 64515; both channels recomputed
    r = slice_regs(chip, 0)
    assert (r["div"], r["top"]) == (31, 64515)
    slice_hz = M.get_slice_hz_round(31, F)
    assert r["cc"] & 0xFFFF == (200000 * slice_hz + 500000000) // 10**9   # width in ns kept
    assert r["cc"] >> 16 == M.duty_u16_to_cc(32768, 64515)               # ratio kept
    assert abs(chip.rpc_pwm_duty_ns(0, None) - 200000) < 300


def test_constructor_resets_invert_and_polarity_is_written_for_both_channels(chip):
    chip.rpc_pwm_new(1, {"freq": 2000, "duty_u16": 0, "invert": 1})
    assert slice_regs(chip, 0)["csr"] & regs.CSR_B_INV
    chip.rpc_pwm_new(0, {"freq": 2000, "duty_u16": 0})      # A started: polarity rewritten for A and B
    assert slice_regs(chip, 0)["csr"] & regs.CSR_B_INV
    chip.rpc_pwm_new(1, {"duty_u16": 0})                     # re-created B: invert silently cleared
    assert not slice_regs(chip, 0)["csr"] & regs.CSR_B_INV


def test_deinit_halts_whole_slice_with_pins_frozen(chip):
    chip.rpc_pwm_new(0, {"freq": 2000, "duty_u16": 65535})   # A constant high
    chip.rpc_pwm_new(1, {"freq": 2000, "duty_u16": 32768})
    chip.advance_to(2_000_000)
    chip.rpc_pwm_deinit(1)                                   # deinit on B stops A too
    assert slice_regs(chip, 0)["csr"] & 1 == 0
    t = chip.now_ns
    chip.advance_to(t + 5_000_000)
    level_a, edges_a = chip.pin_edges(0, t + 10_000, t + 5_000_000)
    assert level_a == 1 and edges_a == []                   # frozen HIGH: the trap the firmware must avoid
    assert chip.rpc_pwm_freq(0, None) == 2000                # stored freq kept; a duty call restarts
    chip.rpc_pwm_duty_u16(0, 0)
    assert slice_regs(chip, 0)["csr"] & 1


def test_gpio_g_and_g_plus_16_share_the_channel(chip):
    chip.rpc_pwm_new(21, {"freq": 2000, "duty_u16": 65535})  # GPIO21 = slice 2 B, as GPIO5 (issue #14210)
    assert slice_regs(chip, 2)["cc"] >> 16 == 62500
    chip.rpc_pwm_new(5, {"freq": 2000, "duty_u16": 0})       # same static object, same register
    assert slice_regs(chip, 2)["cc"] >> 16 == 0
    chip.rpc_mem_w(regs.IO_BANK0_BASE + 4 + 8 * 21, 32, regs.FUNC_PWM)
    chip.advance_to(chip.now_ns + 2_000_000)
    t = chip.now_ns - 100_000
    assert chip.pin_level(5, t) == chip.pin_level(21, t) == 0


def test_failed_constructor_leaves_defer_start_set_like_the_c_code(chip):
    with pytest.raises(ValueError, match="freq too small"):
        chip.rpc_pwm_new(0, {"freq": 7, "duty_u16": 100})
    chip.rpc_pwm_freq(0, 2000)
    chip.rpc_pwm_duty_u16(0, 30000)                          # machine_pwm_start() sees defer_start: no start
    assert slice_regs(chip, 0)["csr"] & 1 == 0
    chip.rpc_pwm_init(0, {"duty_u16": 30000})                # a completed init clears it and starts
    assert slice_regs(chip, 0)["csr"] & 1 == 1


@pytest.mark.parametrize("kw,exc", [({"freq": 2000.5}, TypeError), ({"fre": 1}, TypeError),
                                    ({"freq": "x"}, TypeError), ({"freq": 2**40}, OverflowError)])
def test_bad_arguments_are_rejected_and_change_nothing(chip, kw, exc):
    before = slice_regs(chip, 0)
    with pytest.raises(exc):
        chip.rpc_pwm_new(0, kw)
    assert slice_regs(chip, 0) == before


def test_soft_reset_halts_slices_0_to_3_only_and_clears_freq_set(chip):
    for g in (0, 8):                                          # slice 0 and slice 4
        chip.rpc_pwm_new(g, {"freq": 2000, "duty_u16": 30000})
    chip.soft_reset()
    assert slice_regs(chip, 0)["csr"] & 1 == 0
    assert slice_regs(chip, 4)["csr"] & 1 == 1               # slices 4-7 keep running (by code reading)
    assert chip.rpc_pwm_freq(0, None) == 0                    # slice_freq_set cleared
    assert chip.rpc_pwm_duty_u16(8, None) == 0
