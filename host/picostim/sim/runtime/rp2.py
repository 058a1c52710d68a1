# `rp2` for the virtual board: rp2.DMA over _vblink (ports/rp2/rp2_dma.c semantics), PIO assembly via _pioasm.
# PIO execution is not modelled (the stimulator firmware does not use PIO).
import binascii
import micropython
import _vblink
# peripheral access from a hard IRQ runs the RPC with the heap unlocked: the same helpers as machine.py
from machine import _r2 as _call2, _r3 as _call3

_CLOSED = 0xFF
# (name, shift, bits, read_only) as in rp2_dma.c's field table (RP2040)
_FIELDS = (("enable", 0, 1, 0), ("high_pri", 1, 1, 0), ("size", 2, 2, 0), ("inc_read", 4, 1, 0),
           ("inc_write", 5, 1, 0), ("ring_size", 6, 4, 0), ("ring_sel", 10, 1, 0), ("chain_to", 11, 4, 0),
           ("treq_sel", 15, 6, 0), ("irq_quiet", 21, 1, 0), ("bswap", 22, 1, 0), ("sniff_en", 23, 1, 0),
           ("busy", 24, 1, 1), ("write_err", 29, 1, 0), ("read_err", 30, 1, 0), ("ahb_err", 31, 1, 1))
# quiet, unpaced, read and write incrementing, word transfers, enabled
_DEFAULT_CTRL = (1 << 21) | (0x3F << 15) | (1 << 5) | (1 << 4) | (2 << 2) | 1


def _itemsize(b):
    # bytes per item of a buffer (array / memoryview typecode; bytes-like: 1)
    return len(bytes(memoryview(b)[0:1])) if len(b) else 1


def _addr(cfg, name, v):
    if isinstance(v, int):
        cfg[name] = v
    else:
        cfg[name] = "buf"
        if name == "read":
            cfg["read_b64"] = binascii.b2a_base64(v).decode().strip()


class DMA:
    def __init__(self):
        self._ch = _vblink.call("dma_new")
        self._wbuf = None
        self._wlast = None

    def _sync(self):
        # A channel writing into a firmware buffer writes the chip's SRAM model; on rp2 the buffer IS that RAM.
        # Reading the channel's write pointer brings the buffer up to date first (what the firmware reads next
        # is then what the DMA had written by then, as on the chip). Runs unlocked from a hard IRQ, like any
        # peripheral access there.
        import uctypes
        hard = _vblink._in_hard
        if hard:
            micropython.heap_unlock()
        try:
            b = self._wbuf
            sz = _itemsize(b)
            r = _vblink.call("dma_sync", self._ch, len(b) * sz)
            uctypes.bytearray_at(uctypes.addressof(b), len(b) * sz)[:] = binascii.a2b_base64(r[1])
            # model clock: a hard IRQ that looks at the ring is a scan; it judges each word the DMA wrote since
            # the last look (ring_word each) and then runs its decisions (ring_scan: the Python of a scan that
            # judged new words, less its peripheral calls, which are charged as they come). Both measured on the
            # emu engine (bench supervisor: scan CPU time and latencies side by side), and charged here, before the
            # decisions, so no verdict becomes visible earlier than on the chip.
            if self._wlast is not None:
                words = (r[0] - self._wlast) // sz % len(b)
                _vblink.charge(words * _vblink.cost_ns("ring_word")
                               + (_vblink.cost_ns("ring_scan") if hard and words else 0))
            self._wlast = r[0]
            _vblink._wall = _vblink._rt.ticks_us()     # (this copy is the link's plumbing, not firmware time)
            return r[0]
        finally:
            if hard:
                micropython.heap_lock()

    def _check(self):
        if self._ch == _CLOSED:
            raise ValueError("channel closed")
        return self._ch

    @property
    def channel(self):
        return self._ch

    @property
    def read(self):
        return _call3("dma_reg", self._check(), "read", None)

    @read.setter
    def read(self, v):
        if isinstance(v, int):
            _call3("dma_reg", self._check(), "read", v)
        else:
            self.config(read=v)

    @property
    def write(self):
        if self._wbuf is not None and self._ch != _CLOSED:
            return self._sync()
        return _call3("dma_reg", self._check(), "write", None)

    @write.setter
    def write(self, v):
        if isinstance(v, int):
            _call3("dma_reg", self._check(), "write", v)
        else:
            self.config(write=v)

    @property
    def count(self):
        return _call3("dma_reg", self._check(), "count", None)

    @count.setter
    def count(self, v):
        _call3("dma_reg", self._check(), "count", v)

    @property
    def ctrl(self):
        return _call3("dma_reg", self._check(), "ctrl", None)

    @ctrl.setter
    def ctrl(self, v):
        _call3("dma_reg", self._check(), "ctrl", v)

    def config(self, *, read=None, write=None, count=None, ctrl=None, trigger=False):
        ch = self._check()
        cfg = {}
        if read is not None:
            _addr(cfg, "read", read)
        if write is not None:
            _addr(cfg, "write", write)
            self._wbuf = None if isinstance(write, int) else write
            self._wlast = None
        if count is not None:
            cfg["count"] = count
        if ctrl is not None:
            cfg["ctrl"] = ctrl
        if trigger:
            cfg["trigger"] = True
        if cfg:
            _vblink.call("dma_config", ch, cfg)

    def active(self, v=None):
        ch = self._check()
        if v is None:
            return _call2("dma_active", ch, None)
        return _call2("dma_active", ch, 1 if v else 0)

    def close(self):
        if self._ch != _CLOSED:
            _vblink.call("dma_close", self._ch)   # unclaims only: a running transfer keeps running, as on rp2
            self._ch = _CLOSED

    def pack_ctrl(self, **kw):
        v = _DEFAULT_CTRL | ((self._ch & 0xF) << 11)
        n = len(kw)
        if "default" in kw:
            v = kw["default"] & 0xFFFFFFFF
            n -= 1
        for name, shift, bits, ro in _FIELDS:
            if name in kw:
                n -= 1
                if not ro:
                    f = kw[name]
                    f = int(f)
                    mask = (1 << bits) - 1
                    if f & mask != f:
                        raise ValueError("bad field value")
                    v = (v & ~(mask << shift)) | (f << shift)
        if n:
            raise TypeError()
        return v & 0xFFFFFFFF

    @staticmethod
    def unpack_ctrl(v):
        return {name: (v >> shift) & ((1 << bits) - 1) for name, shift, bits, ro in _FIELDS}

    def irq(self, handler=None, hard=False):
        raise NotImplementedError("DMA IRQs are not modelled on the virtual board")

    def __repr__(self):
        return "DMA(%u)" % self._ch


def asm_pio(**kw):
    from _pioasm import asm_pio as a
    return a(**kw)


class PIO:
    IN_LOW = 0
    IN_HIGH = 1
    OUT_LOW = 2
    OUT_HIGH = 3
    SHIFT_LEFT = 0
    SHIFT_RIGHT = 1
    JOIN_NONE = 0
    JOIN_TX = 1
    JOIN_RX = 2
    IRQ_SM0 = 0x100
    IRQ_SM1 = 0x200
    IRQ_SM2 = 0x400
    IRQ_SM3 = 0x800

    def __init__(self, id):
        raise NotImplementedError("PIO execution is not modelled")


class StateMachine:
    def __init__(self, *args, **kw):
        raise NotImplementedError("PIO execution is not modelled")


def bootsel_button():
    return 0
