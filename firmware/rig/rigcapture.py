# Capture assembly for the HIL rig: PIO level durations -> edge times -> biphasic pulses with amplitudes.
#
# Each bridge tap (TAP_A = +phase, TAP_B = -phase) is watched by its own PIO state machine running
# rigpio.level_durations: it alternately counts how long the pin stays low, then high, pushing one 32-bit
# word per level (X counts down from 0xFFFFFFFF, one decrement per LOOP_CYCLES PIO cycles). Both machines start
# on the same cycle, so edge times of the two taps share one time base. The rig's ADC samples the shunt
# amplifier (|I|) at a fixed rate from the same start; a phase's amplitude is the mean of the samples that fall
# inside it, away from its edges.
#
# Pure integer code (no floats in the edge path) so it runs the same under MicroPython on the rig Pico, the unix
# port and CPython.

LOOP_CYCLES = 2      # jmp pin + jmp x-- per count in both level loops
FIRST_SAMPLE = 1     # cycles from the segment's `mov x, ~null` to its first `jmp pin`
LOW_TAIL = 2         # after a rise is seen: in_ (1), then the next segment's mov (at +2)
HIGH_TAIL = 3        # after a fall is seen: jmp fall (1), in_ (1), wrap to mov (at +3)
X_START = 0xFFFFFFFF


class CaptureError(ValueError):
    pass


class EdgeDecoder:
    """Incremental durations_to_edges for a continuously running capture: feed words as the DMA ring delivers
    them; edge times stay on the time base of the state machine's start."""

    def __init__(self, cycle_ns_num=8, cycle_ns_den=1):
        self.num = cycle_ns_num
        self.den = cycle_ns_den
        self.t = 0
        self.level = 0

    def feed(self, words):
        edges = []
        for w in words:
            n = X_START - (w & 0xFFFFFFFF)
            detect = self.t + FIRST_SAMPLE + LOOP_CYCLES * n
            self.level = 1 - self.level
            edges.append((((detect - 1) * self.num) // self.den, self.level))
            self.t = detect + (LOW_TAIL if self.level == 1 else HIGH_TAIL)
        return edges


class PulseTracker:
    """Pairs +phase and -phase intervals as edges stream in; a +phase is held back until its -phase has had the
    time to arrive (max_gap_ns after the latest edge seen on both taps)."""

    def __init__(self, max_gap_ns=600000):
        self.max_gap = max_gap_ns
        self.rise = [None, None]
        self.pos = []
        self.neg = []
        self.seen = [0, 0]
        self.overlaps = 0

    def add_edges(self, tap, edges):
        for t, level in edges:
            self.seen[tap] = t
            if level == 1:
                self.rise[tap] = t
            elif self.rise[tap] is not None:
                (self.pos if tap == 0 else self.neg).append((self.rise[tap], t))
                self.rise[tap] = None

    def take(self, now_ns=None):
        """Completed pulses so far (dicts as pair_pulses makes them); keeps what may still be completed."""
        horizon = min(self.seen) if now_ns is None else now_ns
        k = 0
        while k < len(self.pos):
            fall = self.pos[k][1]
            if fall + self.max_gap <= horizon or any(n[0] >= fall for n in self.neg):
                k += 1
            else:
                break
        ready = self.pos[:k]
        if not ready:
            return []
        last_end = ready[-1][1]
        pulses, problems = pair_pulses(ready, [n for n in self.neg if n[0] < last_end + self.max_gap])
        self.overlaps += problems["overlap"]
        used_until = max([p["end_ns"] for p in pulses] + [last_end])
        self.pos = self.pos[len(ready):]
        self.neg = [n for n in self.neg if n[0] > used_until]
        return pulses


def durations_to_edges(words, cycle_ns_num=8, cycle_ns_den=1):
    """PIO words (low, high, low, ...) -> list of (t_ns, level) edges, level = new pin level.

    The edge lies between the previous sample and the detecting sample (LOOP_CYCLES apart); it is placed one cycle
    before the detecting sample (the middle), so the error is within +-1 PIO cycle.
    """
    edges = []
    t = 0            # cycle at which the current segment's `mov x, ~null` executes
    level = 0        # the program measures a low level first
    for w in words:
        w &= 0xFFFFFFFF
        n = X_START - w
        detect = t + FIRST_SAMPLE + LOOP_CYCLES * n
        edge_cycle = detect - 1  # (a pin already high at the start gives an edge at 0)
        level = 1 - level
        edges.append(((edge_cycle * cycle_ns_num) // cycle_ns_den, level))
        t = detect + (LOW_TAIL if level == 1 else HIGH_TAIL)
    return edges


def intervals(edges):
    """Edges -> [(rise_ns, fall_ns)] of the high levels (an unterminated high level is dropped)."""
    out = []
    rise = None
    for t, level in edges:
        if level == 1:
            rise = t
        elif rise is not None:
            out.append((rise, t))
            rise = None
    return out


def pair_pulses(pos, neg, max_gap_ns=600000):
    """Match each +phase interval with the -phase interval that follows it (within max_gap_ns).

    Returns (pulses, problems): pulses are dicts with t_ns, pos_ns, gap_ns, neg_ns; problems counts
    unmatched phases and overlaps (both taps high: shoot-through).
    """
    pulses = []
    problems = {"unmatched_pos": 0, "unmatched_neg": 0, "overlap": 0}
    j = 0
    used_neg = [False] * len(neg)
    for (ra, fa) in pos:
        while j < len(neg) and neg[j][1] <= ra:
            j += 1
        k = j
        # overlap with any negative phase?
        while k < len(neg) and neg[k][0] < fa:
            if neg[k][1] > ra:
                problems["overlap"] += 1
            k += 1
        if k < len(neg) and neg[k][0] >= fa and neg[k][0] - fa <= max_gap_ns:
            rb, fb = neg[k]
            used_neg[k] = True
            pulses.append({"t_ns": ra, "pos_ns": fa - ra, "gap_ns": rb - fa, "neg_ns": fb - rb,
                           "end_ns": fb})
            j = k + 1
        else:
            problems["unmatched_pos"] += 1
    problems["unmatched_neg"] = sum(1 for u in used_neg if not u)
    return pulses, problems


def adc_raw_to_ua(raw12, vref_mv=3300, shunt_ohm=100, gain=10):
    """12-bit code of the shunt amplifier (|I|) -> nA (integer maths)."""
    # V(mV) = raw * vref / 4096 ; I(uA) = V(mV) * 1000 / (shunt * gain)
    return (raw12 * vref_mv * 1000 * 1000) // (4096 * shunt_ohm * gain)  # nA


def phase_mean_na(samples, t0_ns, dt_ns, start_ns, end_ns, margin_ns):
    """Mean of the ADC samples (nA values) with time in [start+margin, end-margin]; None if no sample fits."""
    lo = start_ns + margin_ns
    hi = end_ns - margin_ns
    if hi <= lo:
        lo, hi = start_ns, end_ns
    i0 = max(0, -(-(lo - t0_ns) // dt_ns))
    i1 = min(len(samples) - 1, (hi - t0_ns) // dt_ns)
    if i1 < i0:
        return None
    total = 0
    for i in range(i0, i1 + 1):
        total += samples[i]
    return total // (i1 - i0 + 1)


def measure_pulses(pulses, samples_na, t0_ns, dt_ns, margin_ns=None):
    """Add amp_pos_na / amp_neg_na and net charge (fC = nA x us) to each pulse."""
    if margin_ns is None:
        margin_ns = 2 * dt_ns
    for p in pulses:
        t = p["t_ns"]
        ap = phase_mean_na(samples_na, t0_ns, dt_ns, t, t + p["pos_ns"], margin_ns)
        nb = t + p["pos_ns"] + p["gap_ns"]
        an = phase_mean_na(samples_na, t0_ns, dt_ns, nb, nb + p["neg_ns"], margin_ns)
        p["amp_pos_na"] = ap
        p["amp_neg_na"] = an
        if ap is not None and an is not None:
            # nA x ns = 1e-18 C; // 1000 -> fC
            p["net_fc"] = (ap * p["pos_ns"] - an * p["neg_ns"]) // 1000
        else:
            p["net_fc"] = None
    return pulses


def summary(pulses, window_ns):
    """Whole-capture numbers: count, rate, mean net charge, DC (nA) = sum of net charge / window."""
    n = len(pulses)
    out = {"pulses": n, "window_ns": window_ns}
    if n >= 2:
        span = pulses[-1]["t_ns"] - pulses[0]["t_ns"]
        out["period_ns"] = span // (n - 1)
    charges = [p["net_fc"] for p in pulses if p.get("net_fc") is not None]
    if charges and window_ns > 0:
        total = 0
        for c in charges:
            total += c
        out["net_fc_total"] = total
        out["dc_na"] = (total * 1000) // window_ns  # fC / ns = uA, so x1000 gives nA
    return out
