# rp2's `time` for the firmware unit tests on the unix port: ticks wrap at 2**30 as on a Pico (the unix port's own
# ticks wrap at 2**62, so values that fit a Pico's small ints and array('i') slots would not fit here).
import utime as _host

_MASK = (1 << 30) - 1
_HALF = 1 << 29


def ticks_us():
    return _host.ticks_us() & _MASK


def ticks_ms():
    return _host.ticks_ms() & _MASK


def ticks_cpu():
    return _host.ticks_cpu() & _MASK


def ticks_add(t, delta):
    return (t + delta) & _MASK


def ticks_diff(a, b):
    return ((a - b + _HALF) & _MASK) - _HALF


sleep = _host.sleep
sleep_ms = _host.sleep_ms
sleep_us = _host.sleep_us
time = _host.time
time_ns = _host.time_ns
gmtime = _host.gmtime
localtime = _host.localtime
mktime = _host.mktime
