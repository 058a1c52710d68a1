# `machine` for the virtual board: the rp2 port's API, forwarding to the virtual RP2040 (picostim.sim.chip) over
# _vblink. Signatures, constants and quirks follow ports/rp2 (see host/picostim/sim/DESIGN.md). Kept small: it is
# imported into an RP2040-sized heap.
import micropython
import _vblink

PWRON_RESET = 1
WDT_RESET = 3
_NO = object()
_SMALL = 0x40000000     # rp2 small ints are -2**30 .. 2**30-1; anything else is a heap object
_in_timer_hard = False


def _hard():
    return _vblink._in_hard


# RPC helpers of fixed arity: a *args call would allocate a tuple, which a locked heap (hard IRQ) refuses before
# the call could unlock it. A peripheral access from a hard IRQ is legal on rp2, so the link runs it unlocked.
def _r0(op):
    if _vblink._in_hard:
        micropython.heap_unlock()
        try:
            return _vblink.call(op)
        finally:
            micropython.heap_lock()
    return _vblink.call(op)


def _r1(op, a):
    if _vblink._in_hard:
        micropython.heap_unlock()
        try:
            return _vblink.call(op, a)
        finally:
            micropython.heap_lock()
    return _vblink.call(op, a)


def _r2(op, a, b):
    if _vblink._in_hard:
        micropython.heap_unlock()
        try:
            return _vblink.call(op, a, b)
        finally:
            micropython.heap_lock()
    return _vblink.call(op, a, b)


def _r3(op, a, b, c):
    if _vblink._in_hard:
        micropython.heap_unlock()
        try:
            return _vblink.call(op, a, b, c)
        finally:
            micropython.heap_lock()
    return _vblink.call(op, a, b, c)


class _Mem:
    def __init__(self, width):
        self._w = width

    def __getitem__(self, addr):
        if self._w == 32:
            v = _vblink.gpio_in_sample(addr, "mem_r")
            if v is not None:
                return v
        v = _r2("mem_r", addr, self._w)
        if self._w == 32 and v & 0x80000000:
            v -= 0x100000000    # rp2: mp_obj_new_int((mp_int_t)(uint32_t)val) -> negative above 2**31
        if _vblink._in_hard and not -_SMALL <= v < _SMALL:
            raise MemoryError   # a long int on rp2: allocation with the heap locked
        return v

    def __setitem__(self, addr, v):
        _r3("mem_w", addr, self._w, v & 0xFFFFFFFF)

    def __repr__(self):
        return "<%u-bit memory>" % self._w


mem8 = _Mem(8)
mem16 = _Mem(16)
mem32 = _Mem(32)


def _gpio(p):
    if isinstance(p, Pin):
        return p._id
    if isinstance(p, str):
        if p == "LED":
            return 25
        if p[:2] == "GP" and p[2:].isdigit():
            p = int(p[2:])
        else:
            raise ValueError('unknown named pin "%s"' % p)
    if isinstance(p, int) and 0 <= p < 30:
        return p
    raise ValueError("invalid pin")


# The link queues pin IRQ events by GPIO; the edge flags of each ["irq", gpio, flags] event are kept here (in
# order, per GPIO) so Pin.irq().flags() reports the edge that fired.
_irq_flags = {}
_link_events = _vblink._events


def _events(evs):
    for ev in evs:
        if ev[0] == "irq" and len(ev) > 2:
            q = _irq_flags.get(ev[1])
            if q is None:
                q = _irq_flags[ev[1]] = []
            if len(q) < 16:
                q.append(ev[2])
    _link_events(evs)


_vblink._events = _events


class _PinIRQ:
    def __init__(self, pin):
        self._pin = pin
        self._handler = None
        self._trigger = 0
        self._hard = False
        self._flags = 0
        self._fire_ref = self._fire    # bound once: creating it inside an IRQ would allocate

    def flags(self):
        return self._flags

    def trigger(self, new=None):
        if new is None:
            return self._trigger
        self._flags = 0
        self._trigger = new
        _r3("pin_irq", self._pin._id, new, self._hard)
        return 0

    def _fire(self, flags=None):
        q = _irq_flags.get(self._pin._id)
        f = q.pop(0) if q else self._trigger
        self._flags = f if flags is None else flags
        h = self._handler
        if h is None:
            return
        if self._hard:
            try:
                h(self._pin)
            except Exception:
                # rp2 mp_irq_handler: an uncaught exception disables the callback
                self._handler = None
                _vblink.set_irq(self._pin._id, None, False)
                _r3("pin_irq", self._pin._id, None, None)
                raise
        else:
            h(self._pin)


class Pin:
    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    ALT = 3
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 4
    IRQ_RISING = 8
    ALT_SPI = 1
    ALT_UART = 2
    ALT_I2C = 3
    ALT_PWM = 4
    ALT_SIO = 5
    ALT_PIO0 = 6
    ALT_PIO1 = 7
    ALT_GPCK = 8
    ALT_USB = 9
    _pins = {}

    def __new__(cls, id, *args, **kw):
        g = _gpio(id)
        p = Pin._pins.get(g)
        if p is None:
            p = object.__new__(cls)
            p._id = g
            p._irq = None
            Pin._pins[g] = p
        return p

    def __init__(self, id, mode=_NO, pull=_NO, *, value=None, alt=None):
        if mode is not _NO or pull is not _NO or value is not None or alt is not None:
            self.init(None if mode is _NO else mode, None if pull is _NO else pull, value=value, alt=alt)

    def init(self, mode=None, pull=None, *, value=None, alt=None):
        v = None if value is None else (1 if value else 0)
        _vblink.call("pin_init", self._id, mode, pull, v, alt)

    def value(self, v=_NO):
        if v is _NO:
            return _r2("pin_v", self._id, None)
        _r2("pin_v", self._id, 1 if v else 0)

    def __call__(self, v=_NO):
        if v is _NO:
            return _r2("pin_v", self._id, None)
        _r2("pin_v", self._id, 1 if v else 0)

    def on(self):
        _r2("pin_v", self._id, 1)

    def off(self):
        _r2("pin_v", self._id, 0)

    high = on
    low = off

    def toggle(self):
        _r2("pin_v", self._id, -1)

    def irq(self, handler=_NO, trigger=12, hard=False):
        irq = self._irq
        if irq is None:
            irq = self._irq = _PinIRQ(self)
        if handler is _NO:
            return irq
        irq._handler = handler
        irq._trigger = trigger
        irq._hard = bool(hard)
        irq._flags = 0
        if handler is None or not trigger:
            _vblink.set_irq(self._id, None, False)
            _vblink.call("pin_irq", self._id, None, None)
        else:
            _vblink.set_irq(self._id, irq._fire_ref, irq._hard)
            _vblink.call("pin_irq", self._id, trigger, irq._hard)
        return irq

    def __repr__(self):
        return "Pin(GPIO%d)" % self._id


class Signal:
    def __init__(self, pin, *args, invert=False, **kw):
        if args or kw or not isinstance(pin, Pin):
            pin = Pin(pin, *args, **kw)
        self._pin = pin
        self._inv = 1 if invert else 0

    def value(self, v=_NO):
        if v is _NO:
            return self._pin.value() ^ self._inv
        self._pin.value((1 if v else 0) ^ self._inv)

    def __call__(self, v=_NO):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


def _pwm_kw(freq, duty_u16, duty_ns, invert):
    kw = {}
    if freq is not None:
        kw["freq"] = freq
    if duty_u16 is not None:
        kw["duty_u16"] = duty_u16
    if duty_ns is not None:
        kw["duty_ns"] = duty_ns
    if invert is not None:
        kw["invert"] = invert
    return kw


class PWM:
    _objs = {}

    def __new__(cls, pin, *args, **kw):
        g = _gpio(pin)
        key = ((g >> 1) & 7) * 2 + (g & 1)     # GPIO g and g+16 are the same static object on rp2
        o = PWM._objs.get(key)
        if o is None:
            o = object.__new__(cls)
            PWM._objs[key] = o
        o._g = g
        return o

    def __init__(self, pin, freq=None, *, duty_u16=None, duty_ns=None, invert=None):
        _vblink.call("pwm_new", self._g, _pwm_kw(freq, duty_u16, duty_ns, invert))

    def init(self, freq=None, *, duty_u16=None, duty_ns=None, invert=None):
        _vblink.call("pwm_init", self._g, _pwm_kw(freq, duty_u16, duty_ns, invert))

    def freq(self, f=None):
        return _r2("pwm_freq", self._g, f)

    def duty_u16(self, d=None):
        return _r2("pwm_duty_u16", self._g, d)

    def duty_ns(self, ns=None):
        return _r2("pwm_duty_ns", self._g, ns)

    def deinit(self):
        _r1("pwm_deinit", self._g)

    def __repr__(self):
        return "<PWM slice=%u channel=%u>" % ((self._g >> 1) & 7, self._g & 1)


class ADC:
    CORE_TEMP = 4

    def __init__(self, src):
        if isinstance(src, Pin):
            s = ["pin", src._id]
        elif isinstance(src, str):
            s = ["pin", _gpio(src)]
        else:
            s = ["ch", src]
        self._ch = _vblink.call("adc_new", s)

    def read_u16(self):
        return _r1("adc_r", self._ch)

    def __repr__(self):
        return "<ADC channel=%u>" % self._ch


_alarms = 0     # pico-sdk default alarm pool: 16 alarms


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id=-1, **kw):
        if id != -1:
            raise ValueError("Timer doesn't exist")
        self._armed = False
        self._hard = True       # the link always calls _expire directly; soft callbacks are scheduled from there
        self._ishard = False
        self._cb = None
        self._mode = 1
        self._delta_ns = 0
        self._deadline = 0
        if kw:
            self.init(**kw)

    def init(self, *, mode=1, callback=None, period=0xFFFFFFFF, tick_hz=1000, freq=None, hard=False):
        global _alarms
        self.deinit()
        if freq is not None:
            delta_us = int(1000000 / freq)
        else:
            delta_us = period * 1000000 // tick_hz
        if delta_us < 1:
            delta_us = 1
        if _alarms >= 16:
            raise OSError(12)   # ENOMEM: alarm pool exhausted
        _alarms += 1
        self._mode = mode
        self._cb = callback
        self._ishard = bool(hard)
        self._delta_ns = delta_us * 1000
        self._deadline = (_vblink.now_ns() // 1000 + delta_us) * 1000    # the alarm pool counts whole us
        self._armed = True
        _vblink.add_timer(self)
        _vblink.charge(_vblink.cost_ns("timer_init"))

    def deinit(self):
        global _alarms
        if self._armed:
            self._armed = False
            _alarms -= 1
            _vblink.remove_timer(self)

    def _expire(self):
        global _alarms
        if not self._armed:
            return
        if self._mode == 1:
            self._deadline += self._delta_ns    # re-armed relative to the scheduled time: no drift
            _vblink.add_timer(self)
        else:
            self._armed = False
            _alarms -= 1
        cb = self._cb
        if cb is None:
            return
        if self._ishard:
            try:
                cb(self)
            except Exception:
                self.deinit()       # rp2: an uncaught exception in a hard callback stops the timer
                raise
        else:
            try:
                micropython.schedule(cb, self)
            except Exception:
                pass                # queue full: silently dropped, as rp2 ignores mp_sched_schedule's result

    def __repr__(self):
        return "Timer(mode=%s, tick_hz=1000000, period=%d)" % (
            "PERIODIC" if self._mode else "ONE_SHOT", self._delta_ns // 1000)


class WDT:
    def __init__(self, id=0, timeout=5000):
        if id != 0:
            raise ValueError("WDT(%d) doesn't exist" % id)
        _vblink.call("wdt_new", timeout)

    def feed(self):
        _r0("wdt_feed")


def unique_id():
    import binascii
    return binascii.unhexlify(_vblink.call("uid"))


def reset():
    _vblink.reset(WDT_RESET)


def soft_reset():
    raise SystemExit


def reset_cause():
    return _vblink.call("reset_cause")


def bootloader(*args):
    _vblink.bootloader()


def freq(*args):
    if args:
        _vblink.call("freq", args[0])
        return None
    return _vblink.call("freq", None)


def idle():
    # WFE with a 1 ms bound on rp2: returns at the next interrupt or after 1 ms
    _vblink.sleep_until(_vblink.now_ns() + 1000000)


def lightsleep(ms=None):
    if ms is None:
        idle()
    else:
        _vblink.sleep_until(_vblink.now_ns() + int(ms) * 1000000)


def deepsleep(ms=None):
    lightsleep(ms)
    _vblink.reset(WDT_RESET)    # rp2 deepsleep = lightsleep + reset


def disable_irq():
    return _vblink.disable_irq()


def enable_irq(state=False):
    _vblink.enable_irq(state)


def time_pulse_us(pin, pulse_level, timeout_us=1000000):
    t_end = _vblink.now_ns() + timeout_us * 1000
    while pin.value() != pulse_level:
        if _vblink.now_ns() > t_end:
            return -2
    t0 = _vblink.now_ns()
    t_end = t0 + timeout_us * 1000
    while pin.value() == pulse_level:
        if _vblink.now_ns() > t_end:
            return -1
    return (_vblink.now_ns() - t0) // 1000
