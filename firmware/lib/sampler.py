# The sampler's plan (see safety.py's header for why the samples and scans are where they are): sample instants of a
# pair, scan instants, the DMA tables the sampler slice runs from, and the DMA set-up. Loaded by Supervisor.prime
# (start, program step, burst edge), then dropped again (not needed in between; the heap is an RP2040's).
from machine import mem32
import rp2

import rp2regs as R
from micropython import const

from safety import MAX_SLOTS, NLOOKS, CTR_POS, CTR_NEG, NSLOT, CC_A, E_POS, VMASK, SAMPLER_SLICE, ADC_FCS

MAX_SCANS = const(12)
SETTLE_US = const(4)         # I_SENSE settled (3 us after a bridge edge) plus margin
END_US = const(1)            # last I sample this long before the phase ends
V_BEFORE_US = const(3)       # the V sample this long before the last I sample (a conversion takes 2 us)
MIN_SEP_US = const(3)        # samples closer than this are not planned (2 us conversions)
SAMPLE_SPAN_US = const(125)  # I samples at most this far apart inside a phase
SCAN_SPAN_US = const(250)    # inside a long phase a scan at least this often
MIN_SCAN_GAP_US = const(150)  # scans closer than this merge (one callback is ~100 us on the chip)
READY_US = const(3)          # a conversion's result is in the ring this long after its sample
KIND_I = const(0)
KIND_V = const(1)
KIND_I_END = const(2)        # the phase's last I sample: judged with the phase's V for Z
ADC_BASE = const(0x4004C000)
ADC_CS = const(ADC_BASE)
ADC_FIFO = const(ADC_BASE + 12)
ADC_FCS_RUN = const(1 | 8 | (1 << 24))     # FIFO on, DREQ on, threshold 1
DMA_BASE = const(0x50000000)
DMA_MULTI_TRIG = const(DMA_BASE + 0x430)
TREQ_ADC = const(36)
TREQ_UNPACED = const(0x3F)
TABLE_WORDS = const(32)



def sample_plan(ph_c, gap_c, clk, d):
    """Sample instants of one pair, [(counts from the pair start, kind, adc channel is V)], for phase and gap in
    PWM counts (clk sys clocks per us, divider d). Why there: see the top of this file."""
    def c(us):
        return (us * clk + d - 1) // d
    out = []
    for s in (0, ph_c + gap_c):
        first = s + c(SETTLE_US)
        last = s + ph_c - c(END_US)
        if last < first:
            last = first
        pts = [last]
        k = (last - first + c(SAMPLE_SPAN_US) - 1) // c(SAMPLE_SPAN_US)
        for j in range(k):
            pts.append(first + (last - first) * j // k)
        v = last - c(V_BEFORE_US)
        vok = v >= first
        pts = [p for p in pts if p == last or not vok or abs(p - v) >= c(MIN_SEP_US)]
        pts.sort()
        for p in pts:
            out.append((p, KIND_I_END if p == last else KIND_I))
        if vok:
            out.insert(len(out) - 1, (v, KIND_V))
    return out[-MAX_SLOTS:]


def scan_plan(samples, clk, d):
    """Scan instants (counts from the pair start): after each phase's last sample, and inside long phases after
    the sample that ends SCAN_SPAN_US since the previous scan; closer ones merge into the later."""
    def c(us):
        return (us * clk + d - 1) // d
    scans = []
    prev = None
    for o, kind in samples:
        t = o + c(READY_US)
        if prev is None:
            prev = o
        if kind == KIND_I_END or t - prev >= c(SCAN_SPAN_US):
            scans.append(t)
            prev = t
        if kind == KIND_I_END:
            prev = None
    out = []
    for t in scans:
        while out and t - out[-1] < c(MIN_SCAN_GAP_US):
            out.pop()
        out.append(t)
    return out[-MAX_SCANS:]


def fill(p, sup):
    """Tables for plan p into the supervisor's arrays: TOP and CS words of the sampler's passes (2^k words each),
    the kind of each plan slot and the scan instants (ticks after the pair start). Returns (samples per pair n,
    table words N, the TOP the lock writes for the period after the pair start)."""
    c = p["clk_per_us"]
    d = p["div"]
    P = p["pair_counts"]
    gated = not p["continuous"]
    smp = sample_plan(p["phase_counts"], p["gap_counts"], c, d)
    n = len(smp)
    # gated: one pass per pair (wrap at the pair start, n samples, the two 0xFFFF ends); continuous: one cycle per
    # pair (with at least one pad wrap, which is the one before the first pair)
    N = 2
    while N < n + 2:
        N *= 2
    top = sup.top_t         # 32-bit table words as u16 pairs (high halves stay 0)
    cs = sup.cs_t
    for j in range(2 * N):
        top[j] = 0
        cs[j] = 0
    f = sup.f
    f[VMASK] = 0
    pol = 0
    for k in range(n):
        kind = smp[k][1]
        sup.thr[k] = 0xFFFF if kind == KIND_V else sup.trip_raw
        if kind == KIND_I_END:
            f[E_POS + pol] = k
            if k and smp[k - 1][1] == KIND_V:
                f[VMASK] |= 1 << pol
            pol = 1
    offs = [o for o, _ in smp]
    npad = N - 1 - n
    step = max(1, (P - offs[-1]) // (npad + 1)) if npad > 0 else 0      # pad wraps stay inside the pair
    w = [0] + offs + [offs[-1] + step * (i + 1) for i in range(npad)]
    word = [sup.cs_none] + [sup.cs_v if k == KIND_V else sup.cs_i for _, k in smp] + [sup.cs_none] * npad
    if gated:
        # wrap j of a pass: 0 = pair start, 1..n = samples, then pads; entry j = TOP of the period after wrap j+1
        # (TOP latches one wrap after it is written); the last two leave the slice idling at 0xFFFF
        for j in range(N):
            top[2 * j] = (w[j + 2] - w[j + 1] - 1) if j + 2 < N else 0xFFFF
            cs[2 * j] = word[j]
    else:
        # one cycle = the pair; the tables start one wrap before the pair start (the slice's first two periods are
        # whole pairs), i.e. at the cycle's last pad
        w.append(P)
        for j in range(N):
            top[2 * j] = w[j + 1] - w[j] - 1
            cs[2 * j] = word[j - 1]
    scans = scan_plan(smp, c, d)
    for k in range(len(scans)):
        sup.scan_off[k] = scans[k] * d
    f[NLOOKS] = len(scans)
    ends = [o for o, k in smp if k == KIND_I_END]
    f[CTR_POS] = ends[0]
    f[CTR_NEG] = ends[-1] - p["phase_counts"] - p["gap_counts"]
    return n, N, offs[0] - 1


def _dma(self, i, read, write, count, trigger=False, **kw):
    ch = rp2.DMA()
    self.dmas[i] = ch
    ctrl = ch.pack_ctrl(irq_quiet=True, **kw)
    ch.config(read=read, write=write, count=count, ctrl=ctrl, trigger=trigger)
    return ch


def prime(self, p, cc_first):
    """Supervisor.prime: DMA channels, FIFO and slice for plan p (self: the Supervisor)."""
    d = p["div"]
    gated = not p["continuous"]
    f = self.f
    if self.planned is not p:
        # the tables for a new plan (start, program step); burst edges reuse them
        r = fill(p, self)
        self.planned = p
        self.plan_n, self.plan_N, self.kick_top = r
    n = self.plan_n
    N = self.plan_N
    ring_bits = 0
    while (1 << ring_bits) < 4 * N:
        ring_bits += 1
    # slice stopped with the output's divider
    mem32[R.PWM_EN + R.ALIAS_CLR] = self.s_mask
    mem32[self.s_csr] = 0
    mem32[self.s_div] = d << 4
    mem32[self.s_top] = 0xFFFF if gated else p["pair_counts"] - 1
    mem32[self.s_ctr] = 0
    # ADC FIFO emptied, then on with DREQ
    mem32[ADC_FCS] = 0
    while mem32[ADC_FCS] & (0xF << 16):
        mem32[ADC_FIFO]
    mem32[ADC_FCS] = 0xC00                        # clear OVER/UNDER
    mem32[ADC_FCS] = ADC_FCS_RUN
    rx = _dma(self, 0, ADC_FIFO, self.ring, 0x3FFFFFFF, size=1, inc_read=False, inc_write=True,
                   ring_sel=True, ring_size=9, treq_sel=TREQ_ADC)
    self.rx = rx
    self.ring_base = rx.write
    rx.active(1)
    treq = R.DREQ_PWM_WRAP0 + SAMPLER_SLICE
    cnt = N if gated else 0x3FFFFFFF
    t_ch = _dma(self, 1, self.top_t, self.s_top, cnt, size=2, inc_read=True, inc_write=False,
                     ring_size=ring_bits, treq_sel=treq)
    c_ch = _dma(self, 2, self.cs_t, ADC_CS, cnt, size=2, inc_read=True, inc_write=False,
                     ring_size=ring_bits, treq_sel=treq)
    if gated:
        # the lock: the output's active-CC transfer (start of the last idle period, lead_top+1 counts before
        # the pair) chains CTR and TOP of the sampler and the trigger of "top" and "cs"
        kw = self.kick_w
        kw[0] = 0xFFFF - p["top_segments"][-1][0]
        kw[1] = self.kick_top
        kw[2] = (1 << t_ch.channel) | (1 << c_ch.channel)
        nxt = cc_first.ctrl
        nxt_chain = (nxt >> 11) & 0xF
        mv = memoryview(kw)
        kt = rp2.DMA()
        kc = rp2.DMA()
        self.dmas[4] = kt
        self.dmas[3] = kc
        tr = _dma(self, 5, mv[2:3], DMA_MULTI_TRIG, 1, size=2, inc_read=False, inc_write=False,
                       treq_sel=TREQ_UNPACED, chain_to=nxt_chain)
        kt.config(read=mv[1:2], write=self.s_top, count=1,
                  ctrl=kt.pack_ctrl(size=2, inc_read=False, inc_write=False, treq_sel=TREQ_UNPACED,
                                    chain_to=tr.channel, irq_quiet=True))
        kc.config(read=mv[0:1], write=self.s_ctr, count=1,
                  ctrl=kc.pack_ctrl(size=2, inc_read=False, inc_write=False, treq_sel=TREQ_UNPACED,
                                    chain_to=kt.channel, irq_quiet=True))
        cc_first.ctrl = (nxt & ~(0xF << 11)) | (kc.channel << 11)
    else:
        t_ch.active(1)
        c_ch.active(1)
    f[NSLOT] = n
    f[CC_A] = p["phase_counts"]
    self.primed = True
    return self.s_mask
