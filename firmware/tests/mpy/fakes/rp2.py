# Stand-in for rp2.DMA: records configuration (the virtual board runs real DMA timing).
_next = [0]
made = []


class DMA:
    def __init__(self):
        self.channel = _next[0]
        _next[0] += 1
        self.ctrl = 0
        self.cfg = None
        self.is_active = False
        self.closed = False
        made.append(self)

    def pack_ctrl(self, size=2, inc_read=True, inc_write=True, treq_sel=0x3F, chain_to=None, irq_quiet=True):
        if chain_to is None:
            chain_to = self.channel
        return 1 | (size << 2) | (int(inc_read) << 4) | (int(inc_write) << 5) | (chain_to << 11) | \
            (treq_sel << 15) | (int(irq_quiet) << 21)

    def config(self, read=None, write=None, count=None, ctrl=None, trigger=False):
        self.cfg = (read, write, count, ctrl)
        self.ctrl = ctrl
        self.is_active = bool(trigger)

    def active(self, v=None):
        if v is not None:
            self.is_active = bool(v)
        return self.is_active

    def close(self):
        self.closed = True
