"""Test stand-ins for the analog front end / rig tests: a hand-built pin timeline implementing the Chip query API
(pin_level, pin_edges, pwm_duty_timeline, drive_input, advance_to -> analog.on_advance), and a board around it.

These stand in for the *inputs* (what the PWM/GPIO models would produce); the front end, loads and capture analysis
under test are the real ones.
"""
from __future__ import annotations

import bisect
import random
from collections import defaultdict


class TimelineChip:
    def __init__(self, profile):
        self.profile = profile
        self.now_ns = 0
        self.analog = None
        self._edges = defaultdict(list)      # gpio -> sorted [(t, level)]
        self._duty = defaultdict(list)       # gpio -> sorted [(t, duty)]
        self.driven = []                     # drive_input calls: (gpio, level, t)
        self.input_level = {}
        self.iset_log = []

    # -- scripting ----------------------------------------------------------------------------------------------
    def set_level(self, gpio, t, level):
        lst = self._edges[gpio]
        bisect.insort(lst, (int(t), int(level)))

    def set_duty(self, gpio, t, duty):
        bisect.insort(self._duty[gpio], (int(t), float(duty)))
        self.iset_log.append({"t_ns": int(t), "cc": None, "top": None, "duty": float(duty)})

    def biphasic(self, pins, t_start, n, period_ns, width_ns, gap_ns, order="+-", width2_ns=None):
        """n pulse pairs on BRIDGE_A/B: first phase at t_start + k*period."""
        w2 = width_ns if width2_ns is None else width2_ns
        first, second = (pins["BRIDGE_A"], pins["BRIDGE_B"]) if order == "+-" else (pins["BRIDGE_B"], pins["BRIDGE_A"])
        for k in range(n):
            t = t_start + k * period_ns
            self.set_level(first, t, 1)
            self.set_level(first, t + width_ns, 0)
            self.set_level(second, t + width_ns + gap_ns, 1)
            self.set_level(second, t + width_ns + gap_ns + w2, 0)

    # -- the Chip query API ------------------------------------------------------------------------------------
    def pin_level(self, gpio, t):
        lst = self._edges.get(gpio, ())
        k = bisect.bisect_right(lst, (int(t), 2)) - 1
        return lst[k][1] if k >= 0 else 0

    def pin_edges(self, gpio, t0, t1):
        lst = self._edges.get(gpio, ())
        lo = bisect.bisect_right(lst, (int(t0), 2))
        hi = bisect.bisect_right(lst, (int(t1), 2))
        return self.pin_level(gpio, t0), list(lst[lo:hi])

    def pwm_duty_timeline(self, gpio, t0, t1):
        lst = self._duty.get(gpio, ())
        if not lst:                           # not a PWM pin: its level is its duty (as the Chip reports it)
            level0, edges = self.pin_edges(gpio, t0, t1)
            return [(int(t0), float(level0))] + [(t, float(lv)) for t, lv in edges]
        k = bisect.bisect_right(lst, (int(t0), 2.0)) - 1
        out = [(int(t0), lst[k][1] if k >= 0 else 0.0)]
        hi = bisect.bisect_right(lst, (int(t1), 2.0))
        out.extend(lst[k + 1:hi])
        return out

    def drive_input(self, gpio, level, t):
        level = None if level is None else int(level)
        self.driven.append((gpio, level, int(t)))
        self.input_level[gpio] = level

    def advance_to(self, t):
        t = int(t)
        if t <= self.now_ns:
            return
        prev, self.now_ns = self.now_ns, t
        if self.analog is not None:
            self.analog.on_advance(prev, t)

    def advance_in_steps(self, t_end, mean_step_ns=20_000, seed=1):
        """Advance like a running firmware does: many small RPC-sized steps."""
        rng = random.Random(seed)
        while self.now_ns < t_end:
            self.advance_to(min(t_end, self.now_ns + rng.randint(1, 2 * mean_step_ns)))


class TimelineBoard:
    """The subset of BoardProcess the rig uses, around a TimelineChip."""

    def __init__(self, chip, profile, step_ns=50_000):
        self.chip = chip
        self.profile = profile
        self.step_ns = step_ns
        self.calls = []

    def now_ns(self):
        return self.chip.now_ns

    def wait_until(self, t_ns):
        self.chip.advance_in_steps(t_ns, self.step_ns)

    def hang(self):
        self.calls.append(("hang",))

    def power_cut(self, during_write=False, seed=None):
        self.calls.append(("power_cut", during_write, seed))

    def power_restore(self):
        self.calls.append(("power_restore",))
