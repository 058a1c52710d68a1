"""DMA paced by DREQ_PWM_WRAP: CC gating chains, TRANS_COUNT reload, CHAIN_TO, INCR_READ, register aliases."""
import time

import pytest

from picostim.boards import load
from picostim.sim.chip import Chip, regs

CC0 = regs.pwm_reg(0, regs.PWM_CC)
TOP0 = regs.pwm_reg(0, regs.PWM_TOP)
CSR0 = regs.pwm_reg(0, regs.PWM_CSR)
ACTIVE = 0x927C61A8
IDLE = 0xF4240000
PERIOD = 500_000
TREQ0 = regs.TREQ_PWM_WRAP0


def ctrl(chain_to, treq=TREQ0, inc_read=False, inc_write=False, size=2, enable=True):
    return ((1 if enable else 0) | (size << 2) | ((1 if inc_read else 0) << 4) | ((1 if inc_write else 0) << 5)
            | (chain_to << 11) | (treq << 15) | (1 << 21))


@pytest.fixture
def chip():
    c = Chip(load("handheld-home"))
    c.advance_to(1000)
    for g in (0, 1):
        c.rpc_mem_w(regs.IO_BANK0_BASE + 4 + 8 * g, 32, regs.FUNC_PWM)
    c.rpc_mem_w(TOP0, 32, 62499)
    c.rpc_mem_w(CC0, 32, IDLE)
    return c


def start(c):
    c.rpc_mem_w(CSR0, 32, regs.CSR_B_INV | regs.CSR_EN)


def gating_chain(c, n_idle):
    a = c.rpc_dma_new()
    b = c.rpc_dma_new()
    c.rpc_dma_config(b, {"read": "buf", "read_words": [IDLE], "write": CC0, "count": n_idle, "ctrl": ctrl(a)})
    c.rpc_dma_config(a, {"read": "buf", "read_words": [ACTIVE], "write": CC0, "count": 1, "ctrl": ctrl(b),
                         "trigger": True})
    return a, b


def rises(c, g, t0, t1):
    lv, edges = c.pin_edges(g, t0, t1)
    return [t for t, v in edges if v]


@pytest.mark.parametrize("n_idle,step_ns", [(3, 37_000), (199, 1_000_000), (3999, 250_000_000)])
def test_chain_gives_one_pair_every_n_plus_1_periods_with_zero_jitter(chip, n_idle, step_ns):
    gating_chain(chip, n_idle)
    start(chip)
    t0 = chip.now_ns
    t_end = t0 + 12 * (n_idle + 1) * PERIOD
    t = t0
    while t < t_end:                                   # arbitrary RPC-like steps must not matter
        t = min(t + step_ns, t_end)
        chip.advance_to(t)
    ra = rises(chip, 0, t0, t_end)
    rb = rises(chip, 1, t0, t_end)
    assert len(ra) >= 10
    assert {y - x for x, y in zip(ra, ra[1:])} == {(n_idle + 1) * PERIOD}   # exact repetition, no jitter
    # triggered while the slice was stopped: A's word is written at wrap 1 and latched at wrap 2, so the first
    # pair is the 3rd period
    assert ra[0] == t0 + 2 * PERIOD
    assert [x - y for x, y in zip(rb, ra)] == [300_000] * len(rb)           # every pair whole and balanced


def test_pin_edges_fast_with_half_hertz_gating(chip):
    gating_chain(chip, 3999)
    start(chip)
    t0 = chip.now_ns
    s = time.perf_counter()
    chip.advance_to(t0 + 10_000_000_000)
    adv = time.perf_counter() - s
    s = time.perf_counter()
    lv, edges = chip.pin_edges(0, t0, t0 + 10_000_000_000)
    q = time.perf_counter() - s
    assert len(edges) == 10
    assert q < 0.1 and adv < 1.0                     # brief: "well under 100 ms" (measured ~0.1 ms and ~5 ms)


def test_trans_count_reloads_on_each_trigger_and_reads_remaining(chip):
    ch = chip.rpc_dma_new()
    chip.rpc_dma_config(ch, {"read": "buf", "read_words": [ACTIVE], "write": CC0, "count": 5, "ctrl": ctrl(ch)})
    assert chip.rpc_dma_reg(ch, "count") == 0            # TRANS_COUNT write sets the reload value only
    chip.rpc_dma_active(ch, 1)
    assert chip.rpc_dma_reg(ch, "count") == 5
    start(chip)
    chip.advance_to(chip.now_ns + 2 * PERIOD + 1000)
    assert chip.rpc_dma_reg(ch, "count") == 3
    assert chip.rpc_dma_active(ch) is True
    chip.advance_to(chip.now_ns + 3 * PERIOD)
    assert chip.rpc_dma_active(ch) is False
    chip.rpc_dma_active(ch, 1)                              # re-trigger reloads 5
    assert chip.rpc_dma_reg(ch, "count") == 5
    chip.rpc_dma_active(ch, 0)                              # abort
    assert chip.rpc_dma_active(ch) is False


def test_incr_read_walks_a_buffer_one_word_per_wrap(chip):
    words = [IDLE, ACTIVE, IDLE, IDLE, ACTIVE, IDLE]
    ch = chip.rpc_dma_new()
    chip.rpc_dma_config(ch, {"read": "buf", "read_words": words, "write": CC0, "count": len(words),
                             "ctrl": ctrl(ch, inc_read=True), "trigger": True})
    base = chip.rpc_dma_reg(ch, "read")
    start(chip)
    t0 = chip.now_ns
    chip.advance_to(t0 + 10 * PERIOD)
    # word i is written at wrap i+1 and is live in period i+2
    assert rises(chip, 0, t0, t0 + 10 * PERIOD) == [t0 + 3 * PERIOD, t0 + 6 * PERIOD]
    assert chip.rpc_dma_reg(ch, "read") == base + 4 * len(words)


def test_unpaced_transfer_happens_at_trigger(chip):
    ch = chip.rpc_dma_new()
    chip.rpc_dma_config(ch, {"read": "buf", "read_words": [ACTIVE], "write": CC0, "count": 1,
                             "ctrl": ctrl(ch, treq=regs.TREQ_PERMANENT), "trigger": True})
    assert chip.rpc_mem_r(CC0, 32) == ACTIVE


def test_dma_registers_through_mem32_and_trigger_alias(chip):
    ch = chip.rpc_dma_new()
    chip.rpc_dma_config(ch, {"read": "buf", "read_words": [ACTIVE]})
    base = regs.DMA_BASE + regs.DMA_CH_STRIDE * ch
    chip.rpc_mem_w(base + 0x04, 32, CC0)                    # WRITE_ADDR
    chip.rpc_mem_w(base + 0x08, 32, 1)                      # TRANS_COUNT
    chip.rpc_mem_w(base + 0x10, 32, ctrl(ch, treq=regs.TREQ_PERMANENT))   # AL1_CTRL: no trigger
    assert chip.rpc_mem_r(CC0, 32) == IDLE
    chip.rpc_mem_w(base + 0x3C, 32, chip.rpc_dma_reg(ch, "read"))         # AL3_READ_ADDR_TRIG
    assert chip.rpc_mem_r(CC0, 32) == ACTIVE
    assert chip.rpc_mem_r(base + 0x10, 32) & regs.CTRL_BUSY == 0


def test_close_unclaims_but_keeps_running_and_claim_exhaustion(chip):
    a, b = gating_chain(chip, 3)
    start(chip)
    chip.rpc_dma_close(a)
    chip.rpc_dma_close(b)
    t0 = chip.now_ns
    chip.advance_to(t0 + 20 * PERIOD)
    assert len(rises(chip, 0, t0, t0 + 20 * PERIOD)) == 5     # rp2 close() does not abort
    got = [chip.rpc_dma_new() for _ in range(12)]
    assert sorted(got) == list(range(12))
    with pytest.raises(OSError):
        chip.rpc_dma_new()


def test_cc_and_top_chains_in_lockstep_give_an_exact_long_repetition(chip):
    """The firmware's layout for low rates: CC chain [active x1, idle x M] and TOP chain [pair TOP x1,
    filler TOP x M], both paced by the same slice's wraps. The idle word needs CC_B above every TOP (0xFFFF):
    with CC_B = 62500 a filler TOP of 64999 would let inverted B drive for 2500 counts each filler period."""
    pair_top, filler_top, m = 62499, 64999, 7
    idle = 0xFFFF0000
    period = (pair_top + 1) * 8 + m * (filler_top + 1) * 8
    cc_a, cc_b = chip.rpc_dma_new(), chip.rpc_dma_new()
    top_a, top_b = chip.rpc_dma_new(), chip.rpc_dma_new()
    chip.rpc_mem_w(CC0, 32, idle)
    chip.rpc_dma_config(cc_b, {"read": "buf", "read_words": [idle], "write": CC0, "count": m, "ctrl": ctrl(cc_a)})
    chip.rpc_dma_config(top_b, {"read": "buf", "read_words": [filler_top], "write": TOP0, "count": m,
                                "ctrl": ctrl(top_a)})
    chip.rpc_dma_config(cc_a, {"read": "buf", "read_words": [ACTIVE], "write": CC0, "count": 1,
                               "ctrl": ctrl(cc_b), "trigger": True})
    chip.rpc_dma_config(top_a, {"read": "buf", "read_words": [pair_top], "write": TOP0, "count": 1,
                                "ctrl": ctrl(top_b), "trigger": True})
    start(chip)
    t0 = chip.now_ns
    t_end = t0 + 6 * period + PERIOD
    t = t0
    while t < t_end:
        t = min(t + 1_234_567, t_end)
        chip.advance_to(t)
    ra = rises(chip, 0, t0, t_end)
    assert {y - x for x, y in zip(ra, ra[1:])} == {period}
    lv, ea = chip.pin_edges(0, t0, t_end)
    lv, eb = chip.pin_edges(1, t0, t_end)
    widths_a = [y[0] - x[0] for x, y in zip(ea[::2], ea[1::2])]
    widths_b = [y[0] - x[0] for x, y in zip(eb[::2], eb[1::2])]
    assert set(widths_a) == set(widths_b) == {200_000}


def test_ring_wraps_the_read_address(chip):
    words = [ACTIVE, IDLE]
    ch = chip.rpc_dma_new()
    c = ctrl(ch, inc_read=True) | (3 << regs.CTRL_RING_SIZE_SHIFT)      # 8-byte ring on the read side
    chip.rpc_dma_config(ch, {"read": "buf", "read_words": words, "write": CC0, "count": 8, "ctrl": c,
                             "trigger": True})
    base = chip.rpc_dma_reg(ch, "read")
    start(chip)
    t0 = chip.now_ns
    chip.advance_to(t0 + 12 * PERIOD)
    assert rises(chip, 0, t0, t0 + 12 * PERIOD) == [t0 + k * PERIOD for k in (2, 4, 6, 8)]
    assert chip.rpc_dma_reg(ch, "read") == base                 # wrapped back onto the 2-word ring
