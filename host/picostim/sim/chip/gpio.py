"""GPIO: IO_BANK0 function select and overrides, PADS_BANK0 pulls, SIO out/oe/in, external drives, pin IRQ edges.

The pad level of a GPIO is derived from a per-pin history of control snapshots (CTRL, PAD, SIO out, SIO oe) plus
the history of what the outside world drives onto it, so levels and edges can be answered for past windows. A pin
in PWM function takes its level from the PWM slice timeline (pwm.py). GPIO g and g+16 select the same PWM channel.
OUTOVER (2 = force low, 3 = force high) and OEOVER act at once; gpio_set_function() rewrites CTRL, so it clears any
override, as pico-sdk does.
"""
from bisect import bisect_right, insort

from . import regs

RISE, FALL = 8, 4    # GPIO_IRQ_EDGE_RISE / GPIO_IRQ_EDGE_FALL = machine.Pin.IRQ_RISING / IRQ_FALLING
MODE_IN, MODE_OUT, MODE_OPEN_DRAIN, MODE_ALT = 0, 1, 2, 3
PULL_UP, PULL_DOWN = 1, 2

_SRC_CONST, _SRC_PWM, _SRC_IN = 0, 1, 2


class GpioBlock:
    N = regs.NUM_GPIO

    def __init__(self, chip):
        self.chip = chip
        self.hist_t = [[] for _ in range(self.N)]
        self.hist_v = [[] for _ in range(self.N)]
        self.in_t = [[] for _ in range(self.N)]
        self.in_v = [[] for _ in range(self.N)]
        self.pending_drives = []   # (t, gpio, level) driven for a future time
        self.od_mask = 0           # MicroPython's machine_pin_open_drain_mask (static RAM)
        self._hist_ver = 0         # bumped by every recorded change (control snapshot or external drive)
        self._hist_last_t = 0      # time of the latest recorded change
        self._gin_key = None       # GPIO_IN cache: (version, time it was built at)
        self.power_on(0)

    def power_on(self, t):
        self.ctrl = [regs.FUNC_NULL] * self.N
        self.pad = [regs.PAD_RESET] * self.N
        self.out = 0
        self.oe = 0
        self.od_mask = 0
        self.irq_trig = [0] * self.N
        self.voltage_select = 0
        for g in range(self.N):
            self._record(g, t)

    def soft_reset(self):
        # machine_pin_deinit: every GPIO IRQ disabled. Pin modes, levels and the open-drain mask are kept.
        self.irq_trig = [0] * self.N

    # ------------------------------------------------------------------ state and history
    @staticmethod
    def check_pin(g):
        if isinstance(g, bool) or not isinstance(g, int) or not 0 <= g < regs.NUM_GPIO:
            raise ValueError("invalid pin")
        return g

    def _snap(self, g):
        return (self.ctrl[g], self.pad[g], (self.out >> g) & 1, (self.oe >> g) & 1)

    def _record(self, g, t):
        ht, hv = self.hist_t[g], self.hist_v[g]
        snap = self._snap(g)
        if ht and ht[-1] >= t:
            hv[-1] = snap     # several changes at one instant: keep the last
            self._changed(t)
            return
        if hv and hv[-1] == snap:
            return
        ht.append(t)
        hv.append(snap)
        self._changed(t)

    def _changed(self, t):
        self._hist_ver += 1
        if t > self._hist_last_t:
            self._hist_last_t = t

    def _snap_at(self, g, t):
        ht = self.hist_t[g]
        i = bisect_right(ht, t) - 1
        return self.hist_v[g][i if i >= 0 else 0]

    def _drive_at(self, g, t):
        it = self.in_t[g]
        i = bisect_right(it, t) - 1
        return self.in_v[g][i] if i >= 0 else None

    def _change(self, g, t, fn):
        """Apply fn() to the live state of pin g, record it, and raise IRQ events if the pad level moved."""
        before = self.level(g, t)
        fn()
        self._record(g, t)
        after = self.level(g, t)
        if before != after:
            self._irq_edge(g, after)

    def _irq_edge(self, g, level):
        trig = self.irq_trig[g]
        if trig:
            flag = RISE if level else FALL
            if trig & flag:
                self.chip.queue_event(["irq", g, flag])

    # ------------------------------------------------------------------ pad level model
    def _source(self, g, snap, t):
        """(kind, a, b): constant level, PWM (slice, channel, extra inversion), or input."""
        ctrl, pad, out, oe = snap
        fn = ctrl & regs.CTRL_FUNCSEL_MASK
        outover = (ctrl >> regs.CTRL_OUTOVER_SHIFT) & 3
        oeover = (ctrl >> regs.CTRL_OEOVER_SHIFT) & 3
        if fn == regs.FUNC_SIO:
            oe_p = oe
        elif fn == regs.FUNC_PWM:
            oe_p = 1
        else:
            oe_p = 0
        if oeover == regs.OVER_INVERT:
            oe_p ^= 1
        elif oeover == regs.OVER_LOW:
            oe_p = 0
        elif oeover == regs.OVER_HIGH:
            oe_p = 1
        if pad & regs.PAD_OD:
            oe_p = 0
        if not oe_p:
            return _SRC_IN, 0, 0
        if outover == regs.OVER_LOW:
            return _SRC_CONST, 0, 0
        if outover == regs.OVER_HIGH:
            return _SRC_CONST, 1, 0
        inv = 1 if outover == regs.OVER_INVERT else 0
        if fn == regs.FUNC_SIO:
            return _SRC_CONST, out ^ inv, 0
        if fn == regs.FUNC_PWM:
            return _SRC_PWM, (g >> 1) & 7, inv
        return _SRC_CONST, inv, 0

    def _input_level(self, g, pad, t):
        d = self._drive_at(g, t)
        if d is not None:
            return d
        if pad & regs.PAD_PUE:
            return 1
        return 0

    def level(self, g, t):
        snap = self._snap_at(g, t)
        kind, a, b = self._source(g, snap, t)
        if kind == _SRC_CONST:
            return a
        if kind == _SRC_PWM:
            return self.chip.pwm.slices[a].seg_at(t).level(g & 1, t) ^ b
        return self._input_level(g, snap[1], t)

    def sio_in(self, g, t):
        """What gpio_get() returns: the pad level, 0 when the pad's input buffer is disabled (ADC pins)."""
        if not self._snap_at(g, t)[1] & regs.PAD_IE:
            return 0
        inover = (self.ctrl[g] >> regs.CTRL_INOVER_SHIFT) & 3
        v = self.level(g, t)
        return [v, v ^ 1, 0, 1][inover]

    def _breaks(self, g, t0, t1):
        """Times in (t0, t1) where the pin's control snapshot or external drive changes."""
        out = []
        for lst in (self.hist_t[g], self.in_t[g]):
            i = bisect_right(lst, t0)
            n = len(lst)
            while i < n and lst[i] < t1:
                out.append(lst[i])
                i += 1
        out.sort()
        return out

    def edges(self, g, t0, t1):
        level0 = self.level(g, t0)
        out = []
        prev = level0
        bounds = [t0] + self._breaks(g, t0, t1) + [t1]
        for a, b in zip(bounds, bounds[1:]):
            if b <= a:
                continue
            snap = self._snap_at(g, a)
            kind, x, y = self._source(g, snap, a)
            if kind == _SRC_PWM:
                prev = self._pwm_piece(self.chip.pwm.slices[x], g & 1, y, a, b, out, prev)
                continue
            lv = x if kind == _SRC_CONST else self._input_level(g, snap[1], a)
            if lv != prev:
                out.append((a, lv))
                prev = lv
        return level0, out

    @staticmethod
    def _pwm_piece(sl, ch, invx, a, b, out, prev):
        segs, seg_t = sl.segs, sl.seg_t
        i = bisect_right(seg_t, a) - 1
        if i < 0:
            i = 0
        n = len(segs)
        while i < n and (i == 0 or seg_t[i] < b):
            s = segs[i]
            sa = max(a, s.t0)
            sb = min(b, seg_t[i + 1]) if i + 1 < n else b
            if sa >= b:
                break
            if sb > sa:
                lv = s.level(ch, sa) ^ invx
                if lv != prev:
                    out.append((sa, lv))
                    prev = lv
                tmp = []
                s.edges(ch, sa, sb, tmp)
                for t, lv in tmp:
                    lv ^= invx
                    if lv != prev:
                        out.append((t, lv))
                        prev = lv
            i += 1
        return prev

    def duty_timeline(self, g, t0, t1):
        out = []
        bounds = [t0] + self._breaks(g, t0, t1) + [t1]
        for a, b in zip(bounds, bounds[1:]):
            if b <= a and a != t0:
                continue
            snap = self._snap_at(g, a)
            kind, x, y = self._source(g, snap, a)
            if kind == _SRC_PWM:
                sl = self.chip.pwm.slices[x]
                i = max(bisect_right(sl.seg_t, a) - 1, 0)
                n = len(sl.segs)
                while i < n:
                    s = sl.segs[i]
                    if s.t0 >= b and out:
                        break
                    d = s.duty(g & 1)
                    if y:
                        d = 1.0 - d
                    out.append((max(a, s.t0), d))
                    i += 1
            else:
                lv = x if kind == _SRC_CONST else self._input_level(g, snap[1], a)
                out.append((a, float(lv)))
        merged = []
        for t, d in out:
            if merged and merged[-1][1] == d:
                continue
            if merged and merged[-1][0] == t:
                merged[-1] = (t, d)
                if len(merged) > 1 and merged[-2][1] == d:
                    merged.pop()
                continue
            merged.append((t, d))
        if not merged:
            merged.append((t0, float(self.level(g, t0))))
        return merged

    # ------------------------------------------------------------------ the outside world
    def drive_input(self, g, level, t):
        g = self.check_pin(g)
        level = None if level is None else (1 if level else 0)
        if t > self.chip.now_ns:
            insort(self.pending_drives, (t, g, -1 if level is None else level))
            return
        before = self.level(g, t)
        it, iv = self.in_t[g], self.in_v[g]
        if it and it[-1] > t:
            i = bisect_right(it, t)
            it.insert(i, t)
            iv.insert(i, level)
        elif it and it[-1] == t:
            iv[-1] = level
        else:
            it.append(t)
            iv.append(level)
        self._changed(t)
        after = self.level(g, t)
        if before != after:
            self._irq_edge(g, after)

    def apply_pending(self, t):
        while self.pending_drives and self.pending_drives[0][0] <= t:
            tt, g, lv = self.pending_drives.pop(0)
            self.drive_input(g, None if lv < 0 else lv, tt)

    def next_pending(self):
        return self.pending_drives[0][0] if self.pending_drives else None

    # ------------------------------------------------------------------ pico-sdk style operations
    def set_function(self, g, fn, t=None):
        t = self.chip.now_ns if t is None else t

        def f():
            self.pad[g] = (self.pad[g] & ~regs.PAD_OD) | regs.PAD_IE
            self.ctrl[g] = fn & regs.CTRL_FUNCSEL_MASK
        self._change(g, t, f)

    def set_pulls(self, g, up, down, t):
        def f():
            p = self.pad[g] & ~(regs.PAD_PUE | regs.PAD_PDE)
            self.pad[g] = p | (regs.PAD_PUE if up else 0) | (regs.PAD_PDE if down else 0)
        self._change(g, t, f)

    def put(self, g, v, t):
        def f():
            self.out = (self.out | (1 << g)) if v else (self.out & ~(1 << g))
        self._change(g, t, f)

    def set_dir(self, g, out, t):
        def f():
            self.oe = (self.oe | (1 << g)) if out else (self.oe & ~(1 << g))
        self._change(g, t, f)

    def adc_init(self, g, t):
        """adc_gpio_init: function NULL, pulls off, digital input disabled."""
        def f():
            self.ctrl[g] = regs.FUNC_NULL
            self.pad[g] = (self.pad[g] & ~(regs.PAD_PUE | regs.PAD_PDE | regs.PAD_IE | regs.PAD_OD))
        self._change(g, t, f)

    # machine.Pin semantics (ports/rp2/machine_pin.c + mphalport.h)
    def pin_init(self, g, mode, pull, value, alt, t):
        g = self.check_pin(g)
        for name, x in (("mode", mode), ("pull", pull), ("alt", alt)):
            if x is not None and not isinstance(x, int):
                raise TypeError(f"can't convert {type(x).__name__} to int")
        mode, pull, alt = (None if x is None else int(x) for x in (mode, pull, alt))
        v = -1 if value is None else (1 if value else 0)
        if mode is not None:
            if mode == MODE_IN:
                self.set_dir(g, 0, t)
                self.od_mask &= ~(1 << g)
                self.set_function(g, regs.FUNC_SIO, t)
            elif mode == MODE_OUT:
                if v != -1:
                    self.put(g, v, t)
                self.set_dir(g, 1, t)
                self.od_mask &= ~(1 << g)
                self.set_function(g, regs.FUNC_SIO, t)
            elif mode == MODE_OPEN_DRAIN:
                ov = 1 if v == -1 else v
                self.put(g, 0, t)
                self.set_dir(g, 0 if ov else 1, t)
                self.od_mask |= 1 << g
                self.set_function(g, regs.FUNC_SIO, t)
            else:
                af = regs.FUNC_SIO if alt is None else alt
                if not 1 <= af <= 9:
                    raise ValueError(f"invalid pin af: {af}")
                self.set_function(g, af, t)
                self.od_mask &= ~(1 << g)
        p = 0 if pull is None else pull
        self.set_pulls(g, p & PULL_UP, p & PULL_DOWN, t)

    def pin_value(self, g, value, t):
        """Pin.value(): read the pad (gpio_get) or write; value -1 toggles (Pin.toggle)."""
        g = self.check_pin(g)
        if value is None:
            return self.sio_in(g, t)
        od = self.od_mask >> g & 1
        if value == -1:
            if od:
                self.set_dir(g, 0 if (self.oe >> g) & 1 else 1, t)
            else:
                self.put(g, ((self.out >> g) & 1) ^ 1, t)
            return None
        v = 1 if value else 0
        if od:
            self.set_dir(g, 1 - v, t)
        else:
            self.put(g, v, t)
        return None

    def set_irq(self, g, trigger, enable):
        g = self.check_pin(g)
        if enable:
            if not isinstance(trigger, int):
                raise TypeError(f"can't convert {type(trigger).__name__} to int")
            self.irq_trig[g] = trigger & 0xF
        else:
            self.irq_trig[g] = 0

    # ------------------------------------------------------------------ registers
    def io_read(self, off, t):
        n, r = divmod(off, regs.GPIO_STRIDE)
        if n >= self.N:
            return 0
        if r == regs.GPIO_CTRL_OFFSET:
            return self.ctrl[n]
        # GPIOn_STATUS: OUTTOPAD b9, OETOPAD b13, INFROMPAD b17
        snap = self._snap(n)
        kind, a, b = self._source(n, snap, t)
        lv = self.level(n, t)
        st = 0
        if kind != _SRC_IN:
            st |= 1 << 13
            st |= (lv << 9)
        st |= lv << 17
        return st

    def io_write(self, off, v, t):
        n, r = divmod(off, regs.GPIO_STRIDE)
        if n >= self.N or r != regs.GPIO_CTRL_OFFSET:
            return
        mask = 0x3003331F

        def f():
            self.ctrl[n] = v & mask
        self._change(n, t, f)

    def pads_read(self, off):
        if off == 0:
            return self.voltage_select
        n = (off - regs.PADS_GPIO_OFFSET) // 4
        return self.pad[n] if 0 <= n < self.N else 0

    def pads_write(self, off, v, t):
        if off == 0:
            self.voltage_select = v & 1
            return
        n = (off - regs.PADS_GPIO_OFFSET) // 4
        if 0 <= n < self.N:
            def f():
                self.pad[n] = v & 0xFF
            self._change(n, t, f)

    def gpio_in_word(self, t):
        """SIO GPIO_IN at t. Read once per CPU wake-up, so it is cached: pins whose level cannot move without a
        recorded change (constant outputs, inputs) are folded into one word until the next change; only pins
        driven by a PWM slice are evaluated at t."""
        if t < self._hist_last_t:
            return sum(self.sio_in(g, t) << g for g in range(self.N))      # a past instant: the plain way
        if self._gin_key != self._hist_ver:
            static, dynamic = 0, []
            for g in range(self.N):
                snap = self._snap_at(g, t)
                if not snap[1] & regs.PAD_IE:
                    continue
                inover = (self.ctrl[g] >> regs.CTRL_INOVER_SHIFT) & 3
                kind, a, b = self._source(g, snap, t)
                if kind == _SRC_PWM and inover < 2:
                    dynamic.append((g, a, b ^ inover))
                else:
                    static |= self.sio_in(g, t) << g
            self._gin_static, self._gin_dynamic = static, tuple(dynamic)
            self._gin_key = self._hist_ver
        v = self._gin_static
        slices = self.chip.pwm.slices
        for g, sl, inv in self._gin_dynamic:
            v |= (slices[sl].seg_at(t).level(g & 1, t) ^ inv) << g
        return v

    def sio_read(self, off, t):
        if off == regs.SIO_GPIO_IN:
            return self.gpio_in_word(t)
        if off == regs.SIO_GPIO_OUT:
            return self.out
        if off == regs.SIO_GPIO_OE:
            return self.oe
        return 0

    def sio_write(self, off, v, t):
        mask = (1 << self.N) - 1
        v &= mask
        if off in (regs.SIO_GPIO_OUT, regs.SIO_GPIO_OUT_SET, regs.SIO_GPIO_OUT_CLR, regs.SIO_GPIO_OUT_XOR):
            cur = self.out
            new = {regs.SIO_GPIO_OUT: v, regs.SIO_GPIO_OUT_SET: cur | v, regs.SIO_GPIO_OUT_CLR: cur & ~v,
                   regs.SIO_GPIO_OUT_XOR: cur ^ v}[off]
            attr = "out"
        elif off in (regs.SIO_GPIO_OE, regs.SIO_GPIO_OE_SET, regs.SIO_GPIO_OE_CLR, regs.SIO_GPIO_OE_XOR):
            cur = self.oe
            new = {regs.SIO_GPIO_OE: v, regs.SIO_GPIO_OE_SET: cur | v, regs.SIO_GPIO_OE_CLR: cur & ~v,
                   regs.SIO_GPIO_OE_XOR: cur ^ v}[off]
            attr = "oe"
        else:
            return
        changed = cur ^ new
        for g in range(self.N):
            if changed >> g & 1:
                def f(g=g):
                    setattr(self, attr, (getattr(self, attr) & ~(1 << g)) | (new & (1 << g)))
                self._change(g, t, f)

    def prune(self, t_keep):
        for g in range(self.N):
            for lt, lv in ((self.hist_t[g], self.hist_v[g]), (self.in_t[g], self.in_v[g])):
                i = bisect_right(lt, t_keep) - 1
                if i > 0:
                    del lt[:i]
                    del lv[:i]
