# Shared constants: firmware, virtual board and host all read this one file.
# Plain MicroPython/CPython source so the device can import it and the host can load it by path.

FW_VERSION = "0.1.0"
PROTOCOL_VERSION = 1
FIRMWARE_CEILING_UA = 1000  # no board profile, config or command can raise this (S2)
CONFIG_VERSION = 1

# Error codes carried in {"ok": false, "error": <code>}
E_BAD_JSON = "bad_json"
E_LINE_TOO_LONG = "line_too_long"
E_BAD_REQUEST = "bad_request"
E_UNKNOWN_CMD = "unknown_cmd"
E_BAD_TYPE = "bad_type"
E_OUT_OF_RANGE = "out_of_range"
E_OVER_CAP = "over_cap"
E_FAULT_LATCHED = "fault_latched"
E_CHARGING = "charging"
E_NO_CONTACT = "no_contact"
E_BUSY = "busy"
E_NOT_RUNNING = "not_running"
E_UNKNOWN_PROGRAM = "unknown_program"
E_CONFIG_CORRUPT = "config_corrupt"
E_STORAGE = "storage_error"
E_INTERNAL = "internal"
E_UNKNOWN_ZONE = "unknown_zone"      # a treatment zone the board profile does not have
E_ZONE_REFUSED = "zone_refused"      # program or waveform not allowed in the zone (programs, max rate, max phase)
# Production lock (issue 14, firmware/lib/lock.py + lockcmd.py): a locked unit answers a privileged request with
E_AUTH_REQUIRED = "auth_required"    # ... no mac: the request needs the maker's key
E_AUTH_FAILED = "auth_failed"        # ... a mac that does not verify (wrong key, altered request, malformed mac)
E_NONCE = "bad_nonce"                # ... a missing or used nonce (a replay): ask `nonce` and sign again

ERROR_CODES = (E_BAD_JSON, E_LINE_TOO_LONG, E_BAD_REQUEST, E_UNKNOWN_CMD, E_BAD_TYPE, E_OUT_OF_RANGE,
               E_OVER_CAP, E_FAULT_LATCHED, E_CHARGING, E_NO_CONTACT, E_BUSY, E_NOT_RUNNING,
               E_UNKNOWN_PROGRAM, E_CONFIG_CORRUPT, E_STORAGE, E_INTERNAL, E_UNKNOWN_ZONE, E_ZONE_REFUSED,
               E_AUTH_REQUIRED, E_AUTH_FAILED, E_NONCE)

# Event names carried in {"ev": <name>}
EV_TELEMETRY = "telemetry"
EV_TRIP = "trip"
EV_PAUSE = "pause"
EV_RESUME = "resume"
EV_SESSION_END = "session_end"
EV_BUTTON = "button"
EV_BOOT = "boot"
EV_CONFIG_CORRUPT = "config_corrupt"

MAX_LINE = 1024  # longest accepted request line, bytes

# Waveform limits (spec section 2); the planner enforces them on the device, the host may pre-check.
PHASE_US_MIN = 20
PHASE_US_MAX = 1000
GAP_US_MAX = 500
RATE_MHZ_MIN = 500       # repetition rate in milli-hertz (0.5 Hz)
RATE_MHZ_MAX = 500000    # 500 Hz
BURST_MS_MAX = 60000
TELEMETRY_HZ_MAX = 1000

# Firmware policy (device-enforced; shared so the virtual board and HIL suite know what to expect)
CONTACT_PROBE_UA = 20    # amplitude kept while paused for no_contact, to detect re-contact (S7)
CONTACT_MIN_SETPOINT_UA = 40  # below this the compliance check (measured < setpoint/2) is not decided
DEBOUNCE_MS = 30
# selftest output-path probe (a known resistor on the electrodes): a few pairs at a small current, HV on only then
SELFTEST_PROBE_UA = 200       # at most cap/2 on the device (V at 500 ohm ~25 ADC counts)
SELFTEST_TOL_PCT = 10         # default tolerance of measured_ohm against expect_ohm
SELFTEST_Z_MIN_OHM = 100      # without expect_ohm the load must lie in [this, the board's z_max_ohm]
SELFTEST_LOOKS = 112          # in-phase I+V samples averaged (ADC noise ~2.8 LSB rms: ~1 % of Z at 500 ohm)
AUDIT_MAX_ENTRIES = 32
OPERATOR_MAX_LEN = 32

# Protocol states and reasons
ST_IDLE = "idle"
ST_RAMPING = "ramping"
ST_RUNNING = "running"
ST_PAUSED = "paused"
ST_FAULT = "fault"
ST_CHARGING = "charging"

TRIP_OVER_CURRENT = "over_current"
TRIP_FAULT_N = "fault_n"
TRIP_WATCHDOG = "watchdog"
TRIP_SUPERVISOR_STALL = "supervisor_stall"   # the sample scanner was held off longer than its ring holds
PAUSE_NO_CONTACT = "no_contact"
END_TIMEOUT = "session_timeout"
END_STOP = "stop"
END_CHARGING = "charging"

EV_LEVEL = "level"
EV_STEP = "step"

# Treatment zones (issue 17; board profile "zones", firmware/lib/zones.py)
EV_ZONE = "zone"               # the zone changed (protocol set_zone or the zone button): {zone, zone_limit_ua, ...}
END_ZONE = "zone"              # session_end reason: the zone button chose a zone the running program is not allowed in
BOUND_LEVEL = "level"          # the applied amplitude is the level's (or trial) uA
BOUND_ZONE = "zone"            # the applied amplitude is the zone limit (below the level's uA)
START_BOUND_LOW = "start_low"  # the session started at level 1 (config start_low)
START_BOUND_LAST = "last_session"  # the session started at the last session's final level (never above it)
ZONE_MIN_LIMIT_UA = CONTACT_PROBE_UA  # a zone limit below the contact probe could not hold during a no-contact pause
ZONE_LONG_PRESS_MIN_MS = 300   # zone button long press: at least this (and far above DEBOUNCE_MS)
ZONE_BLINK_MS = 200            # zone LED: zone k (1-based, profile order) = k blinks of this on/off, then dark

# Production lock (issue 14). A request's mac = HMAC-SHA256(unit key, the request line without its mac member),
# where the mac member is the line's last: ...,"mac":"<64 hex>"} ; the line also carries "nonce" (the device's
# current one). The unit key is derived at the station (host/picostim/auth.py; the device never derives keys).
# commands a locked unit runs only with a valid mac (set_level with "ua" and audit with "clear" too)
LOCK_COMMANDS = ("nonce", "auth", "lock", "unlock")   # served by lockcmd.py (loaded lazily)
LOCK_GATED = ("levels_set", "config_set", "calib_set", "bootloader", "lock", "unlock", "auth")
