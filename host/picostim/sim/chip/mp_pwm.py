"""MicroPython's rp2 machine.PWM (ports/rp2/machine_pwm.c) reproduced with its exact C integer arithmetic.

Two layers:
* pure functions (freq -> DIV/TOP, duty -> CC, the getters), uint32/uint64 wrap-around included, so odd inputs
  (negative duty, huge freq) give what a Pico gives;
* `MachinePwm`: the C module's static state (16 channel objects: invert, duty type, duty; `slice_freq_set`;
  `defer_start`) driving the PWM hardware model through register writes. It lives in the Chip, not in the
  MicroPython child, because on a Pico that state is static RAM that survives a soft reset.
"""

TOP_MAX = 65534
DUTY_NOT_SET, DUTY_U16, DUTY_NS = 0, 1, 2
_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


def _u32(x):
    return x & _U32


def _cdiv(a, b):
    """C division of signed ints (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def get_slice_hz(offset, div16, sys_hz):
    """floor((16*F + offset) / div16) with the C code's 32-bit/64-bit split."""
    offset, div16 = _u32(offset), _u32(div16)
    if div16 == 0:
        raise ZeroDivisionError("divide by zero")  # cannot happen from freq(); guards odd register contents
    if sys_hz + offset // 16 > 268000000:
        return _u32(((16 * sys_hz + offset) & _U64) // div16)
    return _u32(16 * sys_hz + offset) // div16


def get_slice_hz_round(div16, sys_hz):
    return get_slice_hz(_u32(div16) // 2, div16, sys_hz)


def get_slice_hz_ceil(div16, sys_hz):
    return get_slice_hz(_u32(div16) - 1, div16, sys_hz)


def freq_to_div_top(freq, sys_hz):
    """mp_machine_pwm_freq_set: return (div16, top) as written to DIV and TOP (TOP is 16 bits in hardware).

    Raises ValueError("freq too small") below 8 Hz at 125 MHz, like the device.
    """
    if freq == 0:
        # Division by zero in the C code; the device result is undefined, so refuse loudly.
        raise ValueError("freq must be non-zero")
    q = _u32(sys_hz + _cdiv(freq, 2)) // _u32(freq)
    if q < TOP_MAX:
        div16 = 16
        top = _u32(q - 1)
    else:
        div16 = get_slice_hz_ceil(_u32(TOP_MAX * freq), sys_hz)
        top = _u32(get_slice_hz_round(_u32(div16 * freq), sys_hz) - 1)
    if div16 < 16:
        raise ValueError("freq too large")
    if div16 >= 256 * 16:
        raise ValueError("freq too small")
    return div16, top & 0xFFFF


def freq_get(div16, top, sys_hz):
    return get_slice_hz_round(_u32(div16 * (top + 1)), sys_hz)


def duty_u16_to_cc(duty_u16, top):
    """mp_machine_pwm_duty_set_u16: CC level (16-bit, as pwm_set_chan_level truncates it)."""
    if duty_u16 > 65535:
        duty_u16 = 65535
    cc = _u32(_u32(duty_u16 * _u32(top + 1)) + 65535 // 2) // 65535
    return cc & 0xFFFF


def cc_to_duty_u16(cc, top):
    return _u32(cc * 65535 + _u32(top + 1) // 2) // _u32(top + 1)


def duty_ns_to_cc(duty_ns, div16, top, sys_hz):
    slice_hz = get_slice_hz_round(div16, sys_hz)
    cc = _u32((((duty_ns & _U64) * slice_hz + 500000000) & _U64) // 1000000000)
    if cc > top + 1:
        cc = top + 1
    return cc & 0xFFFF


def cc_to_duty_ns(cc, div16, sys_hz):
    slice_hz = get_slice_hz_round(div16, sys_hz)
    return (cc * 1000000000 + slice_hz // 2) // slice_hz


def as_c_int(name, value):
    """MP_ARG_INT conversion: ints and bools pass, anything else is a TypeError; beyond 32 bits OverflowError."""
    if isinstance(value, bool):
        return int(value)
    if not isinstance(value, int):
        raise TypeError(f"can't convert {type(value).__name__} to int")
    if not _INT32_MIN <= value <= _INT32_MAX:
        raise OverflowError("overflow converting long int to machine word")
    return value


class _ChannelObj:
    __slots__ = ("slice", "channel", "invert", "duty_type", "duty")

    def __init__(self, slice_num, channel):
        self.slice = slice_num
        self.channel = channel
        self.invert = 0
        self.duty_type = DUTY_NOT_SET
        self.duty = 0


class MachinePwm:
    """The static state of machine_pwm.c and its operations, acting on a `pwm.PwmBlock` and `gpio.GpioBlock`."""

    KEYWORDS = ("freq", "duty_u16", "duty_ns", "invert")

    def __init__(self, pwm, gpio, sys_hz_fn, num_slices=8):
        self.pwm = pwm
        self.gpio = gpio
        self.sys_hz = sys_hz_fn
        self.num_slices = num_slices
        self.power_on()

    def power_on(self):
        self.objs = [_ChannelObj(i // 2, i % 2) for i in range(2 * self.num_slices)]
        self.slice_freq_set = [False] * self.num_slices
        self.defer_start = False

    # ---------------------------------------------------------------- helpers mirroring pico-sdk calls
    def obj_for_gpio(self, gpio):
        gpio = self.gpio.check_pin(gpio)
        return self.objs[((gpio >> 1) & 7) * 2 + (gpio & 1)]

    def _other(self, o):
        return self.objs[o.slice * 2 + (1 - o.channel)]

    def _start(self, o):
        if not self.defer_start and self.slice_freq_set[o.slice] and o.duty_type != DUTY_NOT_SET:
            a = self.objs[o.slice * 2]
            b = self.objs[o.slice * 2 + 1]
            self.pwm.set_polarity(o.slice, a.invert, b.invert)
            self.pwm.set_enabled(o.slice, True)

    def _freq_set(self, o, freq):
        div16, top = freq_to_div_top(freq, self.sys_hz())
        self.pwm.write_div(o.slice, div16)
        self.pwm.write_top(o.slice, top)
        self.slice_freq_set[o.slice] = True
        for x in (o, self._other(o)):
            if x.duty_type == DUTY_U16:
                self._duty_set_u16(x, x.duty)
            elif x.duty_type == DUTY_NS:
                self._duty_set_ns(x, x.duty)

    def _duty_set_u16(self, o, duty):
        cc = duty_u16_to_cc(duty, self.pwm.read_top(o.slice))
        self.pwm.set_chan_level(o.slice, o.channel, cc)
        o.duty = duty
        o.duty_type = DUTY_U16
        self._start(o)

    def _duty_set_ns(self, o, duty_ns):
        s = o.slice
        cc = duty_ns_to_cc(duty_ns, self.pwm.read_div(s), self.pwm.read_top(s), self.sys_hz())
        self.pwm.set_chan_level(s, o.channel, cc)
        o.duty = duty_ns
        o.duty_type = DUTY_NS
        self._start(o)

    def _init_helper(self, o, kw):
        if not isinstance(kw, dict):
            raise TypeError("keyword arguments must be a dict")
        for k in kw:
            if k not in self.KEYWORDS:
                raise TypeError(f"unexpected keyword argument '{k}'")
        # MP_ARG_INT defaults are VALUE_NOT_SET = -1, so an explicit -1 means "not given" on a Pico too
        args = {k: as_c_int(k, v) for k, v in kw.items()}
        args = {k: v for k, v in args.items() if v != -1}
        # As in C: defer_start stays set if a setter raises (a following duty call then never starts the slice).
        self.defer_start = True
        if "freq" in args:
            self._freq_set(o, args["freq"])
        if "duty_u16" in args:
            self._duty_set_u16(o, args["duty_u16"])
        if "duty_ns" in args:
            self._duty_set_ns(o, args["duty_ns"])
        if "invert" in args:
            o.invert = 1 if args["invert"] else 0
        self.defer_start = False
        self._start(o)

    # ---------------------------------------------------------------- the machine.PWM API
    def new(self, gpio, kw):
        o = self.obj_for_gpio(gpio)
        o.invert = 0
        o.duty_type = DUTY_NOT_SET
        self._init_helper(o, kw or {})
        self.gpio.set_function(gpio, 4)
        return o

    def init(self, gpio, kw):
        self._init_helper(self.obj_for_gpio(gpio), kw or {})

    def freq(self, gpio, f=None):
        o = self.obj_for_gpio(gpio)
        if f is None:
            if not self.slice_freq_set[o.slice]:
                return 0
            return freq_get(self.pwm.read_div(o.slice), self.pwm.read_top(o.slice), self.sys_hz())
        self._freq_set(o, as_c_int("freq", f))
        return None

    def duty_u16(self, gpio, d=None):
        o = self.obj_for_gpio(gpio)
        if d is None:
            if o.duty_type == DUTY_NOT_SET or not self.slice_freq_set[o.slice]:
                return 0
            cc = (self.pwm.read_cc(o.slice) >> (16 * o.channel)) & 0xFFFF
            return cc_to_duty_u16(cc, self.pwm.read_top(o.slice))
        self._duty_set_u16(o, as_c_int("duty_u16", d))
        return None

    def duty_ns(self, gpio, ns=None):
        o = self.obj_for_gpio(gpio)
        if ns is None:
            if o.duty_type == DUTY_NOT_SET or not self.slice_freq_set[o.slice]:
                return 0
            cc = (self.pwm.read_cc(o.slice) >> (16 * o.channel)) & 0xFFFF
            return cc_to_duty_ns(cc, self.pwm.read_div(o.slice), self.sys_hz())
        self._duty_set_ns(o, as_c_int("duty_ns", ns))
        return None

    def deinit(self, gpio):
        o = self.obj_for_gpio(gpio)
        self.pwm.set_enabled(o.slice, False)

    def deinit_all(self):
        """soft_reset_exit -> machine_pwm_deinit_all: loops i < NUM_PWM_SLICES over objs[i].slice = 0,0,1,1,2,2,3,3."""
        for i in range(self.num_slices):
            self.slice_freq_set[i] = False
            self.pwm.set_enabled(self.objs[i].slice, False)
