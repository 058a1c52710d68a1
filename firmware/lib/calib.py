# Per-device calibration (issue 12): the unit's own output and sense-path gain/offset, measured against the rig's
# reference resistor by `picostim calibrate` and kept in /calib.bin (store.py: version + CRC32, atomic rename).
#
# Models (gains in parts per 100000, offsets in 0.1 uA, integers only):
#   output: I_true = out_gain * I_nominal(duty) + out_off      -> amplitude.py inverts it (planner.iset_level)
#   sense:  I_nominal(raw) = sense_gain * I_true + sense_off   -> raw_to_dua / ua_to_raw invert it
#   electrode voltage: V_nominal(raw) = v_gain * V_true + v_off (0.1 mV)  -> raw_to_dmv (selftest impedance)
# Before either, a raw code is mapped back through the RP2040 ADC's documented wide codes (erratum RP2040-E11: codes
# 512, 1536, 2560, 3584 are ~E11_W LSB wide, the codes between them correspondingly narrower): lin/unlin. The width
# is a nominal figure, not this unit's: the residual is what the calibration's linear fit and the limits absorb.
# Every conversion of I_SENSE counts to current in the firmware goes through raw_to_dua / ua_to_raw (board.py's
# adc_raw_to_ua / ua_to_adc_raw call them), so the over-current trip, telemetry and selftest all use the record.
#
# What the record cannot do: raise the output above the cap. The cap does not trust the record at all:
# cap_level() bounds the ISET compare level by the worst case of the board's part tolerances (boards/*.json
# "tolerances"), whatever record is in force; check() refuses a record that claims the unit's output is above that
# worst case (the bound would not hold for such a unit), and implausible ones (gain outside 0.8..1.2).
# Reading, checking and writing records is in calset.py, loaded only at boot and for calib_get/calib_set (heap).
CAL_PATH = "/calib.bin"
CAL_VERSION = 7               # store header version of a calibration record (levels/config records use 1)
G1 = 100000
FIELDS = ("out_gain", "out_off", "sense_gain", "sense_off", "v_gain", "v_off")
IDENTITY = (G1, 0, G1, 0, G1, 0)
E11 = (512, 1536, 2560, 3584)
E11_W = 8                     # LSB

C = list(IDENTITY)            # the record in force (identity until one is loaded)
K = [3300, 1000, 16500]       # nominal: vref in mV, R_sense * amplifier gain (ohm), vref * electrode divider (mV)
rec = None                    # the stored record as read (calib_get), None without one
status = "none"               # none | ok | corrupt: <why> | refused: <why>


# ---- sense path (main loop only: the supervisor's IRQ compares raw counts precomputed with ua_to_raw) -----------
def lin(y):
    """Ideal code position (0.1 LSB) of a code position y (0.1 LSB; a mean of codes may fall between codes)."""
    lo = 0
    for c in E11:
        if y < c * 10:
            return lo * 10 + (y - lo * 10) * (c - E11_W - lo) // (c - lo)
        if y < c * 10 + 10:
            return c * 10 - E11_W * 5       # the wide code: the middle of what it covers
        lo = c
    return y


def unlin(x):
    """Code position (0.1 LSB) the ADC gives for the ideal position x (0.1 LSB): the inverse of lin."""
    lo = 0
    for c in E11:
        if x < (c - E11_W) * 10:
            return lo * 10 + (x - lo * 10) * (c - lo) // (c - E11_W - lo)
        if x < c * 10:
            return c * 10 - 10      # inside the wide code: the code below it (a threshold then decides early)
        lo = c
    return x


def raw_to_dua(raw_sum, n=1):
    """Calibrated current in 0.1 uA for the mean of n I_SENSE counts summing to raw_sum."""
    x = lin((raw_sum * 10 + n // 2) // n)
    nom = (x * K[0] * 1000 + 2048 * K[1]) // (4096 * K[1])
    return (nom - C[3]) * G1 // C[2]


def raw_to_dmv(raw_sum, n=1):
    """Calibrated electrode voltage in 0.1 mV for the mean of n V_ELECTRODE counts summing to raw_sum."""
    x = lin((raw_sum * 10 + n // 2) // n)
    nom = (x * K[2] + 2048) // 4096
    return (nom - C[5]) * G1 // C[4]


def raw_to_ua(raw):
    d = raw_to_dua(raw)
    return (d + 5) // 10 if d > 0 else 0


def ua_to_raw(ua):
    """The I_SENSE count this unit reads for a true current of ua (the supervisor's thresholds)."""
    nom = ua * 10 * C[2] // G1 + C[3]
    if nom <= 0:
        return 0
    return (unlin(nom * 4096 * K[1] // (K[0] * 1000)) + 5) // 10


# ---- output --------------------------------------------------------------------------------------------------
def iset_params():
    """(gain in parts per 100000, offset in 0.1 uA) for planner.iset_level: nominal = ua / out_gain - out_off / gain."""
    g = C[0]
    return (G1 * G1 + g // 2) // g, -((C[1] * G1 + (g // 2 if C[1] >= 0 else -(g // 2))) // g)



def apply(vals):
    for k in range(6):
        C[k] = vals[k]


def init(board):
    """Nominal sense constants from the profile, then the stored record (a bad one is reported, not applied; its
    full check was made when it was written, calset.values: here the CRC and the gains' range)."""
    global rec, status
    import store
    an = board["analog"]
    K[0] = int(an["adc_vref_v"] * 1000 + 0.5)
    K[1] = an["r_sense_ohm"] * an["sense_gain"]
    K[2] = K[0] * an["v_electrode_divider"]
    apply(IDENTITY)
    rec = None
    status = "none"
    try:
        r = store.read(CAL_PATH, CAL_VERSION)
        if r is None:
            return
        v = [r.get(k, IDENTITY[i]) for i, k in enumerate(FIELDS)]
        if not (80000 <= v[0] <= 120000 and 80000 <= v[2] <= 120000 and 80000 <= v[4] <= 120000):
            raise ValueError("gain out of range")
    except Exception as e:
        status = "refused: %s" % e
        return
    rec = r
    apply(v)
    status = "ok"


def cap_level(board, cap, i_fs, top):
    """Highest ISET compare level at which even a unit whose current source is at the worst of the board's part
    tolerances (gain and offset both high) stays at or below the cap: the bound every amplitude write obeys,
    whatever record is in force."""
    t = board.get("tolerances", {}).get("current_source", {})
    g = G1 + int(t.get("gain_pct", 0) * 1000 + 0.5)
    n = cap * 10 - int(t.get("offset_ua", 0) * 10 + 0.5)
    if n <= 0:
        return 0
    return min(n * (top + 1) * G1 // (g * i_fs * 10), top + 1)
