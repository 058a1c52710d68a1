"""The emulated chip as the analog front end and the rig see it: pin timelines built from the emulator's own pin
edges (in emulated ns), the duty of fast PWM pins measured from their edges, and input drives sent back to the
emulator. It offers the same query API as the unix engine's Chip (pin_level, pin_edges, pwm_duty_timeline,
drive_input, advance_to, next_event_ns), so FrontEnd and VirtualRig attach to it unchanged.
"""
from __future__ import annotations

import bisect
import heapq

HISTORY_NS = 120_000_000_000     # as the unix engine's Chip: 120 s of pin history
SYS_CLK_HZ = 125_000_000


class EmuChip:
    def __init__(self, profile):
        self.profile = profile
        self.now_ns = 0
        self.analog = None
        self.notes = []
        self.iset_log = []
        pins = profile["pins"]
        self.iset_gpio = pins.get("ISET")
        self.duty_pins = sorted({g for k in ("ISET", "LED_STATUS", "LED_RED", "VIBRATION")
                                 if (g := pins.get(k)) is not None})
        self._t = [[0] for _ in range(30)]       # per pin: times of level changes (first entry: power-on)
        self._lv = [[0] for _ in range(30)]
        self._dt = {g: [0] for g in self.duty_pins}     # duty pins: times of duty changes
        self._dv = {g: [0.0] for g in self.duty_pins}
        self._drives = []                         # heap of (t, seq, gpio, level) not yet sent to the emulator
        self._seq = 0

    # ---- fed by the engine ------------------------------------------------------------------------------------
    def record(self, edges, duties):
        for t, g, lvl in edges:
            t = int(t)
            ts, ls = self._t[g], self._lv[g]
            if ls[-1] == lvl:
                continue
            if t < ts[-1]:
                t = ts[-1]
            if t == ts[-1]:
                ls[-1] = lvl
            else:
                ts.append(t)
                ls.append(lvl)
        for t, g, d, hi_ns, period_ns in duties:
            t = int(t)
            if g not in self._dt:
                continue
            ts, ds = self._dt[g], self._dv[g]
            if t < ts[-1]:
                t = ts[-1]
            if ds[-1] != d:
                if t == ts[-1]:
                    ds[-1] = d
                else:
                    ts.append(t)
                    ds.append(float(d))
            if g == self.iset_gpio:
                top = round(period_ns * SYS_CLK_HZ / 1e9) - 1 if period_ns else 0xFFFF
                cc = round(hi_ns * SYS_CLK_HZ / 1e9) if period_ns else (top + 1 if d else 0)
                last = self.iset_log[-1] if self.iset_log else None
                if last is None or last["cc"] != cc or last["top"] != top:
                    self.iset_log.append({"t_ns": t, "cc": cc, "top": top, "duty": float(d)})

    def advance_to(self, t_ns):
        t = int(t_ns)
        prev = self.now_ns
        if t <= prev:
            return
        self.now_ns = t
        if self.analog is not None:
            self.analog.on_advance(prev, t)
        if t % 10_000_000_000 < prev % 10_000_000_000:
            self.prune(t - HISTORY_NS)

    def take_drives(self, until_ns):
        out = []
        while self._drives and self._drives[0][0] <= until_ns:
            t, _, g, lvl = heapq.heappop(self._drives)
            out.append([g, lvl, t])
        return out

    def prune(self, t_keep):
        if t_keep <= 0:
            return
        for ts, vs in list(zip(self._t, self._lv)) + [(self._dt[g], self._dv[g]) for g in self._dt]:
            i = bisect.bisect_right(ts, t_keep) - 1
            if i > 0:
                del ts[:i]
                del vs[:i]
        i = 0
        while i + 1 < len(self.iset_log) and self.iset_log[i + 1]["t_ns"] <= t_keep:
            i += 1
        if i:
            del self.iset_log[:i]

    # ---- the Chip query API (front end, rig, tests) -----------------------------------------------------------
    def _check(self, gpio):
        if isinstance(gpio, bool) or not isinstance(gpio, int) or not 0 <= gpio < 30:
            raise ValueError(f"invalid pin {gpio!r}")
        return gpio

    def pin_level(self, gpio, t_ns):
        g = self._check(gpio)
        if g in self._dt:
            return int(round(self._duty_at(g, int(t_ns))))
        ts = self._t[g]
        i = bisect.bisect_right(ts, int(t_ns)) - 1
        return self._lv[g][max(i, 0)]

    def pin_edges(self, gpio, t0, t1):
        g = self._check(gpio)
        t0, t1 = int(t0), int(t1)
        ts, ls = self._t[g], self._lv[g]
        i = bisect.bisect_right(ts, t0) - 1
        level0 = ls[max(i, 0)]
        out = []
        j = max(i + 1, 0)
        while j < len(ts) and ts[j] < t1:
            out.append((ts[j], ls[j]))
            j += 1
        return level0, out

    def _duty_at(self, g, t):
        ts = self._dt[g]
        i = bisect.bisect_right(ts, t) - 1
        return self._dv[g][max(i, 0)]

    def pwm_duty_timeline(self, gpio, t0, t1):
        g = self._check(gpio)
        t0, t1 = int(t0), int(t1)
        if g not in self._dt:
            lvl0, edges = self.pin_edges(g, t0, t1)
            return [(t0, float(lvl0))] + [(t, float(v)) for t, v in edges]
        ts, ds = self._dt[g], self._dv[g]
        i = max(bisect.bisect_right(ts, t0) - 1, 0)
        out = [(t0, ds[i])]
        i += 1
        while i < len(ts) and ts[i] <= t1:
            if ts[i] > t0:
                out.append((ts[i], ds[i]))
            i += 1
        return out

    def drive_input(self, gpio, level, t_ns=None):
        g = self._check(gpio)
        t = self.now_ns if t_ns is None else int(t_ns)
        self._seq += 1
        heapq.heappush(self._drives, (max(t, self.now_ns), self._seq, g, None if level is None else int(bool(level))))

    def next_event_ns(self):
        fe = self.analog.next_event_ns() if self.analog is not None else None
        if fe is not None and fe <= self.now_ns:
            fe = None
        ts = [x for x in (fe, self._drives[0][0] if self._drives else None) if x is not None]
        return min(ts) if ts else None

    def note(self, msg):
        if msg not in self.notes and len(self.notes) < 100:
            self.notes.append(msg)
