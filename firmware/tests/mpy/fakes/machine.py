# Minimal stand-in for rp2's `machine` so firmware modules can be unit-tested on the unix port. It records
# register and pin writes; it does not model timing (the virtual board does that).
_regs = {}
log = []
ADC_CS = 0x4004C000
ADC_RESULT = 0x4004C004


class _Mem:
    def __getitem__(self, a):
        return _regs.get(a, 0)

    def __setitem__(self, a, v):
        _regs[a] = v & 0xFFFFFFFF if v >= 0 else v
        if a == ADC_CS:
            # START_ONCE: RESULT = the 12-bit conversion of the channel in AINSEL (from ADC.values, by GPIO); not
            # logged (every sample makes two)
            if v & 4:
                _regs[ADC_RESULT] = ADC.values.get(26 + ((v >> 12) & 7), 0) >> 4
        elif not _locked[0]:
            log.append(("mem", a, v))


mem32 = _Mem()
_locked = [False]


def preset(addrs):
    # dict slots created up front so stores inside heap_lock do not grow the dict
    for a in addrs:
        _regs.setdefault(a, 0)


class Pin:
    IN = 0
    OUT = 1
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 4
    IRQ_RISING = 8
    levels = {}

    def __init__(self, n, mode=0, pull=None, value=None):
        self.n = n
        self.v = 0 if value is None else value
        if value is not None:
            Pin.levels[n] = value
        if n not in Pin.levels:
            Pin.levels[n] = 1 if pull == 1 else 0
        self.handler = None

    def value(self, v=None):
        if v is None:
            return Pin.levels.get(self.n, 0)
        Pin.levels[self.n] = v
        if not _locked[0]:
            pass

    def irq(self, handler=None, trigger=0, hard=False):
        self.handler = handler


class PWM:
    def __init__(self, pin, freq=1000, duty_u16=0):
        self.pin = pin
        self.f = freq
        self.d = duty_u16
        self.writes = 0

    def duty_u16(self, d=None):
        if d is None:
            return self.d
        self.d = d
        self.writes += 1

    def freq(self, f=None):
        return self.f


class ADC:
    values = {}

    def __init__(self, pin):
        self.n = pin.n

    def read_u16(self):
        return ADC.values.get(self.n, 0)


class Timer:
    PERIODIC = 1
    ONE_SHOT = 0
    last = None

    def __init__(self, id=-1, **kw):
        self.cb = None
        self.mode = 1
        self.period = 0
        self.tick_hz = 1000
        self.hard = False
        if kw:
            self.init(**kw)

    def init(self, mode=1, period=0, tick_hz=1000, callback=None, hard=False):
        # (keyword-only on rp2; no allocation here: the supervisor re-arms from hard callbacks)
        self.mode = mode
        self.cb = callback
        self.period = period
        self.tick_hz = tick_hz
        self.hard = hard
        Timer.last = self

    def deinit(self):
        self.cb = None


class WDT:
    def __init__(self, timeout=1000):
        self.timeout = timeout

    def feed(self):
        pass


def freq():
    return 125000000


def unique_id():
    return b"\x01\x02\x03\x04\x05\x06\x07\x08"


def reset_cause():
    return 1
