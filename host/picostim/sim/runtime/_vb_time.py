# `time` for the virtual board: every clock the firmware sees is the board's virtual clock (see ../DESIGN.md).
# ticks wrap at 2**30 as on rp2 (the unix port wraps at 2**62).
import _vblink

_MASK = (1 << 30) - 1
_HALF = 1 << 29
_EPOCH_S = 946684800  # rp2 epoch is 2000-01-01 once the RTC is set; time() counts from boot here


def ticks_us():
    return (_vblink.now_ns() // 1000) & _MASK


def ticks_ms():
    return (_vblink.now_ns() // 1000000) & _MASK


def ticks_cpu():
    return (_vblink.now_ns() // 1000) & _MASK


def ticks_add(t, delta):
    return (t + delta) & _MASK


def ticks_diff(a, b):
    return ((a - b + _HALF) & _MASK) - _HALF


def sleep_ms(ms):
    if ms > 0:
        _vblink.sleep_until(_vblink.now_ns() + int(ms) * 1000000)


def sleep_us(us):
    # rp2 busy-waits for short sleeps and runs no callbacks during them.
    if us <= 0:
        return
    if us <= 1000:
        _vblink.charge(int(us) * 1000)
        return
    _vblink.sleep_until(_vblink.now_ns() + int(us) * 1000)


def sleep(s):
    _vblink.sleep_until(_vblink.now_ns() + int(s * 1000000000))


def time():
    return _vblink.now_ns() // 1000000000


def time_ns():
    return _vblink.now_ns()


def gmtime(secs=None):
    import _vb_rt
    return _vb_rt.gmtime(_EPOCH_S + (time() if secs is None else secs) - _EPOCH_S)


localtime = gmtime


def mktime(t):
    import _vb_rt
    return _vb_rt.mktime(t)
