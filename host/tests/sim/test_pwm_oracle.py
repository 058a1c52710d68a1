"""The closed-form PWM timeline against a count-by-count reference stepper (same datasheet rules, no shortcuts).

Random register writes (CC, TOP, A_INV/B_INV, PH_CORRECT, DIV, EN) at arbitrary ns; both models
must give the same pin transitions on A and B to the nanosecond.
Rules both follow: CC/TOP go to a shadow and latch at the next wrap (phase-correct: the 0 -> 0 turnaround);
CSR/DIV act from the next count boundary; a count's output is (CTR < CC) XOR INV.
"""
from hypothesis import given, settings, strategies as st

from picostim.boards import load
from picostim.sim.chip import Chip, regs

TICK = 8   # ns per system clock at 125 MHz


class Stepper:
    def __init__(self, top, cc, d, ph, inv_a, inv_b):
        self.top_l = self.top_s = top
        self.cc_l = self.cc_s = cc
        self.d, self.ph, self.inv_a, self.inv_b = d, ph, inv_a, inv_b
        self.ctr, self.down = 0, False
        self.trans = {0: [], 1: []}
        self.level = {0: 0, 1: 0}

    def out(self, t):
        a = int(self.ctr < (self.cc_l & 0xFFFF)) ^ self.inv_a
        b = int(self.ctr < (self.cc_l >> 16)) ^ self.inv_b
        for ch, v in ((0, a), (1, b)):
            if v != self.level[ch]:
                self.level[ch] = v
                self.trans[ch].append((t, v))

    def step(self):
        wrap = False
        if not self.ph:
            if self.ctr == self.top_l or self.ctr == 0xFFFF:
                self.ctr, wrap = 0, True
            else:
                self.ctr += 1
        elif not self.down:
            if self.ctr == self.top_l:
                self.down = True
            elif self.ctr == 0xFFFF:
                self.ctr, wrap = 0, True
            else:
                self.ctr += 1
        elif self.ctr == 0:
            self.down, wrap = False, True
        else:
            self.ctr -= 1
        if wrap:
            self.top_l, self.cc_l = self.top_s, self.cc_s

    def set_mode(self, ph):
        if ph != self.ph and not ph:
            self.down = False
        self.ph = ph

    def run(self, t0, ops, t_end):
        """ops: [(t, kind, value)] sorted by t. Halted (EN = 0): the counter and pins freeze, writes act at once."""
        running = True
        self.out(t0)
        nb = t0 + self.d * TICK
        i = 0
        pending = []
        while True:
            t_op = ops[i][0] if i < len(ops) else None
            if running and nb < t_end and (t_op is None or nb <= t_op):
                self.step()
                while i < len(ops) and ops[i][0] == nb:
                    self._write(ops[i], pending)
                    i += 1
                for kind, v in pending:          # in write order; the last EN write wins
                    if kind == "en":
                        running = bool(v)
                        if not running:
                            self.top_l, self.cc_l = self.top_s, self.cc_s     # halted: shadows latch at once
                    else:
                        self._apply(kind, v)
                pending.clear()
                if not running:
                    continue
                self.out(nb)
                nb += self.d * TICK
            elif t_op is not None and t_op < t_end:
                t, kind, v = ops[i]
                i += 1
                if running:
                    self._write((t, kind, v), pending)
                elif kind == "en":
                    if v:
                        running = True
                        self.out(t)
                        nb = t + self.d * TICK
                elif kind in ("cc", "top"):
                    self._write((t, kind, v), pending)
                    self.top_l, self.cc_l = self.top_s, self.cc_s
                else:
                    self._apply(kind, v)
            else:
                break

    def _apply(self, kind, v):
        if kind == "div":
            self.d = v
        elif kind == "ph":
            self.set_mode(v)
        elif kind == "inv_a":
            self.inv_a = v
        elif kind == "inv_b":
            self.inv_b = v

    def _write(self, op, pending):
        t, kind, v = op
        if kind == "cc":
            self.cc_s = v
        elif kind == "top":
            self.top_s = v
        else:
            pending.append((kind, v))


ops_st = st.lists(st.tuples(st.integers(min_value=1, max_value=300),
                            st.sampled_from(["cc", "top", "inv_a", "inv_b", "ph", "div", "en"]),
                            st.integers(min_value=0, max_value=2**32 - 1)), max_size=14)


@settings(max_examples=400, deadline=None)
@given(top=st.integers(min_value=1, max_value=12), cc_a=st.integers(min_value=0, max_value=14),
       cc_b=st.integers(min_value=0, max_value=14), d=st.integers(min_value=1, max_value=3), ph=st.booleans(),
       inv_a=st.booleans(), inv_b=st.booleans(), raw_ops=ops_st, tail=st.integers(min_value=50, max_value=600))
def test_timeline_matches_count_stepper(top, cc_a, cc_b, d, ph, inv_a, inv_b, raw_ops, tail):
    chip = Chip(load("handheld-home"))
    chip.advance_to(1000)
    for g in (0, 1):
        chip.rpc_mem_w(regs.IO_BANK0_BASE + 4 + 8 * g, 32, regs.FUNC_PWM)
    base = regs.pwm_reg(0, 0)
    chip.rpc_mem_w(base + regs.PWM_TOP, 32, top)
    chip.rpc_mem_w(base + regs.PWM_CC, 32, (cc_b << 16) | cc_a)
    chip.rpc_mem_w(base + regs.PWM_DIV, 32, d << 4)
    csr = (regs.CSR_PH_CORRECT if ph else 0) | (regs.CSR_A_INV if inv_a else 0) | (regs.CSR_B_INV if inv_b else 0)
    t0 = 2000
    chip.advance_to(t0)
    chip.rpc_mem_w(base + regs.PWM_CSR, 32, csr | regs.CSR_EN)

    # turn raw draws into register writes at increasing times
    ops, t, cur_top = [], t0, top
    for dt, kind, v in raw_ops:
        t += dt
        if kind == "cc":
            v = ((v >> 16) % (cur_top + 3)) << 16 | (v & 0xFFFF) % (cur_top + 3)
        elif kind == "top":
            v = 1 + v % 12
        elif kind == "div":
            v = 1 + v % 3
        else:
            v = v & 1
        ops.append((t, kind, v))
    t_end = t + tail

    ref = Stepper(top, (cc_b << 16) | cc_a, d, int(ph), int(inv_a), int(inv_b))
    ref.run(t0, ops, t_end)

    for t, kind, v in ops:
        chip.advance_to(t)
        if kind == "cc":
            chip.rpc_mem_w(base + regs.PWM_CC, 32, v)
        elif kind == "top":
            chip.rpc_mem_w(base + regs.PWM_TOP, 32, v)
        elif kind == "div":
            chip.rpc_mem_w(base + regs.PWM_DIV, 32, v << 4)
        else:
            bit = {"inv_a": regs.CSR_A_INV, "inv_b": regs.CSR_B_INV, "ph": regs.CSR_PH_CORRECT,
                   "en": regs.CSR_EN}[kind]
            alias = regs.ALIAS_SET if v else regs.ALIAS_CLR
            chip.rpc_mem_w(base + regs.PWM_CSR + alias, 32, bit)
    chip.advance_to(t_end)
    for ch in (0, 1):
        lv, edges = chip.pin_edges(ch, t0 - 1, t_end)
        assert lv == 0
        assert edges == ref.trans[ch], (ch, edges[:12], ref.trans[ch][:12])
