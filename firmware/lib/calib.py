# Per-device calibration (issue 12): the unit's own output and sense-path gain/offset, measured against the rig's
# reference resistor by `picostim calibrate` and kept in /calib.bin (store.py: version + CRC32, atomic rename).
#
# Models (gains in parts per 100000, offsets in 0.1 uA, integers only):
#   output: I_true = out_gain * I_nominal(duty) + out_off      -> amplitude.py inverts it (planner.iset_level)
#   sense:  I_nominal(raw) = sense_gain * I_true + sense_off   -> raw_to_dua / ua_to_raw invert it
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
FIELDS = ("out_gain", "out_off", "sense_gain", "sense_off")

C = [G1, 0, G1, 0]            # the record in force (identity until one is loaded)
K = [3300, 1000]              # nominal sense: vref in mV, R_sense * amplifier gain (ohm)
rec = None                    # the stored record as read (calib_get), None without one
status = "none"               # none | ok | corrupt: <why> | refused: <why>


# ---- sense path (main loop only: the supervisor's IRQ compares raw counts precomputed with ua_to_raw) -----------
def raw_to_dua(raw_sum, n=1):
    """Calibrated current in 0.1 uA for the mean of n I_SENSE counts summing to raw_sum."""
    nom = (raw_sum * K[0] * 10000 + 2048 * K[1] * n) // (4096 * K[1] * n)
    return (nom - C[3]) * G1 // C[2]


def raw_to_ua(raw):
    d = raw_to_dua(raw)
    return (d + 5) // 10 if d > 0 else 0


def ua_to_raw(ua):
    """The I_SENSE count this unit reads for a true current of ua (the supervisor's thresholds)."""
    nom = ua * 10 * C[2] // G1 + C[3]
    if nom <= 0:
        return 0
    den = K[0] * 10000
    return (nom * 4096 * K[1] + den // 2) // den


# ---- output --------------------------------------------------------------------------------------------------
def iset_params():
    """(gain in parts per 100000, offset in 0.1 uA) for planner.iset_level: nominal = ua / out_gain - out_off / gain."""
    g = C[0]
    return (G1 * G1 + g // 2) // g, -((C[1] * G1 + (g // 2 if C[1] >= 0 else -(g // 2))) // g)



def apply(vals):
    for k in range(4):
        C[k] = vals[k]


def init(board):
    """Nominal sense constants from the profile, then the stored record (a bad one is reported, not applied; its
    full check was made when it was written, calset.values: here the CRC and the gains' range)."""
    global rec, status
    import store
    an = board["analog"]
    K[0] = int(an["adc_vref_v"] * 1000 + 0.5)
    K[1] = an["r_sense_ohm"] * an["sense_gain"]
    apply((G1, 0, G1, 0))
    rec = None
    status = "none"
    try:
        r = store.read(CAL_PATH, CAL_VERSION)
        if r is None:
            return
        v = [r[k] for k in FIELDS]
        if not (80000 <= v[0] <= 120000 and 80000 <= v[2] <= 120000):
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
