# Stand-in for rp2.DMA: records configuration (the virtual board runs real DMA timing).
_next = [0]
made = []


class DMA:
    def __init__(self):
        # the lowest channel not claimed (rp2: dma_claim_unused_channel; 12 channels, then OSError)
        used = [d.channel for d in made if not d.closed]
        self.channel = next((i for i in range(12) if i not in used), None)
        if self.channel is None:
            raise OSError(16)
        _next[0] += 1
        self.ctrl = 0
        self.cfg = None
        self.is_active = False
        self.closed = False
        made.append(self)

    def pack_ctrl(self, size=2, inc_read=True, inc_write=True, treq_sel=0x3F, chain_to=None, irq_quiet=True,
                  ring_size=0, ring_sel=False):
        if chain_to is None:
            chain_to = self.channel
        return 1 | (size << 2) | (int(inc_read) << 4) | (int(inc_write) << 5) | (ring_size << 6) | \
            (int(ring_sel) << 10) | (chain_to << 11) | (treq_sel << 15) | (int(irq_quiet) << 21)

    def config(self, read=None, write=None, count=None, ctrl=None, trigger=False):
        # read/write: the address the channel would use (a buffer's own address, as rp2 takes it)
        import uctypes
        self.cfg = (read, write, count, ctrl)
        self.read = read if isinstance(read, int) or read is None else uctypes.addressof(read)
        self.write = write if isinstance(write, int) or write is None else uctypes.addressof(write)
        self.count = count
        self.ctrl = ctrl
        self.is_active = bool(trigger)

    def active(self, v=None):
        if v is not None:
            self.is_active = bool(v)
        return self.is_active

    def close(self):
        self.closed = True
        if self in made:
            made.remove(self)
