# Waveform -> PWM settings for one slice (A normal = +phase, B inverted = -phase). Pure integer maths that stays
# below 2^30 for every accepted input, so it is cheap on the rp2 (no long ints, no floats).
#
# Layout of one active PWM period (trailing-edge mode, TOP+1 = pair length exactly):
#   A high for CTR in [0, CC_A)          -> +phase of CC_A counts
#   B high for CTR in [CC_B, TOP]        -> -phase of TOP+1-CC_B = CC_A counts (equal by construction)
#   gap = CC_B - CC_A >= 0               -> A and B never overlap
# Idle word: CC_A = 0 and CC_B = 0xFFFF. CC_B is above every TOP we use (TOP <= 0xFFFE), so B stays low whatever
# TOP is latched; one idle word is therefore valid for active and filler periods alike.
#
# Repetition: the pair period is followed by M idle periods whose lengths add up to the remainder of the
# repetition period (each <= 65535 counts). CC and TOP are written by two DMA chains paced by the same
# PWM wrap DREQ; the schedule is returned as segments [(word, count), ...] that the engine turns into chained
# channels. All repetition periods are exact to the tick of the (integer) divider.
#
# Period accuracy (sys clock ticks, against the exact request sys_hz / rate): the applied period is the multiple of
# DIV nearest the request, so the error is <= 1/2 tick at DIV 1 (pairs up to 65535 ticks) and <= DIV/2 ticks above
# that; among the dividers that keep phases and gap exact, the one closest to the request is used. Exception: an idle
# remainder under MIN_IDLE_US is dropped (the train is then continuous at the pair period).
from pscodes import PHASE_US_MIN, PHASE_US_MAX, GAP_US_MAX, RATE_MHZ_MIN, RATE_MHZ_MAX

IDLE_WORD = 0xFFFF0000
TOP_MAX = 0xFFFE          # never 0xFFFF: keeps CC_B = 0xFFFF unreachable (idle) and 100 % reachable
PERIOD_COUNTS_MAX = TOP_MAX + 1
MIN_IDLE_US = 2           # shorter idle remainders are dropped (rate rounds to continuous)


class PlanError(ValueError):
    def __init__(self, code, detail):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _check_int(name, v, lo, hi):
    if not isinstance(v, int) or isinstance(v, bool):
        raise PlanError("bad_type", "%s must be an integer" % name)
    if v < lo or v > hi:
        raise PlanError("out_of_range", "%s must be %d..%d" % (name, lo, hi))


def choose_div(pair_ticks, clk_per_us):
    """Smallest integer divider that fits the pair into one PWM period; prefer one dividing clk_per_us so every
    microsecond is a whole number of counts (phases then stay exact, not just equal)."""
    need = (pair_ticks + PERIOD_COUNTS_MAX - 1) // PERIOD_COUNTS_MAX
    d = need
    while d <= 255:
        if clk_per_us % d == 0:
            return d
        d += 1
    if need > 255:
        raise PlanError("out_of_range", "pair too long for the PWM divider")
    return need


def request_ticks(rate_mhz, sys_hz):
    """The requested repetition period sys_hz * 1000 / rate_mhz as (whole ticks, remainder in 1/rate_mhz ticks),
    by long division so every intermediate stays below 2^30."""
    q = sys_hz // rate_mhz
    r = sys_hz % rate_mhz
    for _ in range(3):                      # x 1000, one decimal digit at a time
        r *= 10
        q = q * 10 + r // rate_mhz
        r %= rate_mhz
    return q, r


def nearest_counts(q, r, rate_mhz, d):
    """(counts, error) for the multiple of d ticks nearest the request q + r/rate_mhz; error in 1/rate_mhz ticks."""
    c, m = divmod(q, d)
    below = m * rate_mhz + r                # request minus c*d, in 1/rate_mhz ticks (< d * rate_mhz)
    above = d * rate_mhz - below
    if above <= below:
        return c + 1, above
    return c, below


def choose_div_for_period(phase_ticks, gap_ticks, clk_per_us, q, r, rate_mhz):
    """The divider for a pair that needs DIV > 1: among those that fit the pair and keep phase and gap whole counts,
    the one whose period grid lies closest to the request (ties: the smallest)."""
    pair_ticks = 2 * phase_ticks + gap_ticks
    need = (pair_ticks + PERIOD_COUNTS_MAX - 1) // PERIOD_COUNTS_MAX
    best = 0
    best_err = 0
    d = need
    while d <= 255:
        if phase_ticks % d == 0 and gap_ticks % d == 0:
            err = nearest_counts(q, r, rate_mhz, d)[1]
            if best == 0 or err < best_err:
                best = d
                best_err = err
        d += 1
    return best if best else choose_div(pair_ticks, clk_per_us)


def plan(phase_us, gap_us, rate_mhz, sys_hz):
    """Return the PWM settings for one biphasic pair repeated at rate_mhz (milli-hertz)."""
    _check_int("phase_us", phase_us, PHASE_US_MIN, PHASE_US_MAX)
    _check_int("gap_us", gap_us, 0, GAP_US_MAX)
    _check_int("rate_mhz", rate_mhz, RATE_MHZ_MIN, RATE_MHZ_MAX)
    if sys_hz % 1000000:
        raise PlanError("internal", "sys clock must be a whole number of MHz")
    clk_per_us = sys_hz // 1000000
    period_us = (1000000000 + rate_mhz // 2) // rate_mhz     # <= 2_000_000
    pair_us = 2 * phase_us + gap_us
    if pair_us > period_us:
        raise PlanError("out_of_range", "pair (%d us) longer than the repetition period (%d us)" % (pair_us, period_us))
    q, r = request_ticks(rate_mhz, sys_hz)                  # <= 4e8 ticks at 200 MHz (30-bit safe)
    if pair_us * clk_per_us <= PERIOD_COUNTS_MAX:
        d = 1
    else:
        d = choose_div_for_period(phase_us * clk_per_us, gap_us * clk_per_us, clk_per_us, q, r, rate_mhz)
    phase_c = (phase_us * clk_per_us + d // 2) // d
    gap_c = (gap_us * clk_per_us + d // 2) // d
    pair_c = 2 * phase_c + gap_c
    rep_c = nearest_counts(q, r, rate_mhz, d)[0]
    idle_c = rep_c - pair_c
    min_idle_c = MIN_IDLE_US * clk_per_us // d
    if idle_c < min_idle_c:
        idle_c = 0
        rep_c = pair_c
    cc_a = phase_c
    cc_b = phase_c + gap_c
    active_word = (cc_b << 16) | cc_a
    top_pair = pair_c - 1
    if idle_c == 0:
        cc_segments = [(active_word, 1)]
        top_segments = [(top_pair, 1)]
        idle_periods = 0
    else:
        m = (idle_c + PERIOD_COUNTS_MAX - 1) // PERIOD_COUNTS_MAX
        q, r = divmod(idle_c, m)
        cc_segments = [(active_word, 1), (IDLE_WORD, m)]
        top_segments = [(top_pair, 1)]
        if r:
            top_segments.append((q, r))          # r periods of q+1 counts
        if m - r:
            top_segments.append((q - 1, m - r))  # the rest of q counts
        idle_periods = m
    tick_ns_num = d * 1000                       # ns per count = d*1000/clk_per_us
    return {
        "div": d,
        "clk_per_us": clk_per_us,
        "phase_counts": phase_c,
        "gap_counts": gap_c,
        "pair_counts": pair_c,
        "rep_counts": rep_c,
        "top_pair": top_pair,
        "cc_a": cc_a,
        "cc_b": cc_b,
        "active_word": active_word,
        "idle_word": IDLE_WORD,
        "continuous": idle_c == 0,
        "idle_periods": idle_periods,
        "cc_segments": cc_segments,
        "top_segments": top_segments,
        "phase_ns": phase_c * tick_ns_num // clk_per_us,
        "gap_ns": gap_c * tick_ns_num // clk_per_us,
        # repetition period in sys clock ticks (exact) and in us (rounded)
        "period_ticks": rep_c * d,
        "period_us": (rep_c * d + clk_per_us // 2) // clk_per_us,
    }


def schedule_periods(p):
    """Expand one repetition into (word, top) per PWM period; used by tests and the self-test, not at run time."""
    out = []
    cc = []
    for w, n in p["cc_segments"]:
        cc.extend([w] * n)
    tops = []
    for t, n in p["top_segments"]:
        tops.extend([t] * n)
    for i in range(len(cc)):
        out.append((cc[i], tops[i]))
    return out


def iset_level(ua, i_fs_ua, top, gain_p100k, offset_dua):
    """Calibrated microamps -> ISET compare level (0..top+1). Integer maths in 0.1 uA units, 30-bit safe:
    gain in parts per 100000, offset in 0.1 uA."""
    if ua <= 0:
        return 0
    cal_dua = ua * gain_p100k // 10000 + offset_dua
    den = i_fs_ua * 10
    lvl = (cal_dua * (top + 1) + den // 2) // den if cal_dua > 0 else 0
    if lvl == 0 and iset_level_to_ua(1, i_fs_ua, top, gain_p100k, offset_dua) - ua < ua:
        # level 0 is off (0 uA, not the offset): the lowest step when what it delivers is nearer the request
        return 1
    return min(lvl, top + 1)


def iset_level_to_ua(lvl, i_fs_ua, top, gain_p100k, offset_dua):
    """Inverse of iset_level: the calibrated microamps a compare level delivers (rounded)."""
    if lvl <= 0:
        return 0
    cal_dua = (lvl * i_fs_ua * 10 + (top + 1) // 2) // (top + 1)
    raw_dua = cal_dua - offset_dua
    if raw_dua <= 0:
        return 0
    return (raw_dua * 10000 + gain_p100k // 2) // gain_p100k
