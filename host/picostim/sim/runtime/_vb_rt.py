# The unix port's own modules, captured before the virtual board's shims take their names.
import time as _time
import select

ticks_us = _time.ticks_us
ticks_diff = _time.ticks_diff
gmtime = _time.gmtime
mktime = _time.mktime
