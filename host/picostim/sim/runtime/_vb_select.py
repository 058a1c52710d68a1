# `select` for the virtual board: waiting on sys.stdin happens in virtual time (the board wakes us when the host
# sends bytes); everything else is the unix port's own select.
import sys
import _vblink
import _vb_rt

POLLIN = 1
POLLOUT = 4
POLLERR = 8
POLLHUP = 16

_real = _vb_rt.select


class _Poll:
    def __init__(self):
        self._p = _real.poll()
        self._objs = {}

    def register(self, obj, mask=POLLIN | POLLOUT):
        self._objs[id(obj)] = (obj, mask)
        self._p.register(obj, mask)

    def unregister(self, obj):
        self._objs.pop(id(obj), None)
        self._p.unregister(obj)

    def modify(self, obj, mask):
        self._objs[id(obj)] = (obj, mask)
        self._p.modify(obj, mask)

    def _stdin_watched(self):
        for obj, mask in self._objs.values():
            if (obj is sys.stdin or obj is sys.stdin.buffer) and mask & POLLIN:
                return True
        return False

    def poll(self, timeout=-1):
        ready = self._p.poll(0)
        if ready or timeout == 0:
            return ready
        deadline = None if timeout is None or timeout < 0 else _vblink.now_ns() + int(timeout) * 1000000
        watch = self._stdin_watched()
        while True:
            t = deadline if deadline is not None else _vblink.now_ns() + 1000000000
            _vblink.sleep_until(t, watch)
            ready = self._p.poll(0)
            if ready or (deadline is not None and _vblink.now_ns() >= deadline):
                return ready

    def ipoll(self, timeout=-1, flags=0):
        return iter(self.poll(timeout))


def poll():
    return _Poll()


def select(rlist, wlist, xlist, timeout=None):
    p = _Poll()
    for o in rlist:
        p.register(o, POLLIN)
    for o in wlist:
        p.register(o, POLLOUT)
    ms = -1 if timeout is None else int(timeout * 1000)
    res = p.poll(ms)
    r = [o for o in rlist if any(e[0] is o and e[1] & POLLIN for e in res)]
    w = [o for o in wlist if any(e[0] is o and e[1] & POLLOUT for e in res)]
    return r, w, []
