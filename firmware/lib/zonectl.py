# Treatment zones at run time (issue 17): the chosen zone, what it lets a session do, and the level a session may
# start at. app.py calls in at start / set_zone / session end; the amplitude bound itself is in amplitude.py (the
# choke point), so a zone limit holds on every path that sets the output.
import store
import pscodes as C
from protocol import ProtoError
from board import cap_ua, load_zones, drop_zones

SESSION_PATH = "/session.bin"     # {"last_level": n}: the last session's final level (start never above it)


class ZoneControl:
    def __init__(self, board):
        zones = load_zones()
        self.tbl, self.i = zones.table(board, cap_ua(board))
        self.button, self.long_ms = zones.select_of(board)
        zones = None
        drop_zones()
        self.default_i = self.i
        self.last_level = None        # None: no session yet on this device
        try:
            rec = store.read(SESSION_PATH)
            if rec is not None:
                lv = rec.get("last_level") if isinstance(rec, dict) else None
                if not isinstance(lv, int) or isinstance(lv, bool) or lv < 1:
                    raise store.StoreError("last_level invalid")
                self.last_level = lv
        except (store.StoreError, OSError, AttributeError):
            self.last_level = 1       # a damaged record: assume the lowest (the safe side of the rule)

    def zone(self, i=None):
        return self.tbl[self.i if i is None else i]

    def names(self):
        return [z["name"] for z in self.tbl]

    def lookup(self, name):
        """Index of a zone by name; unknown_zone (listing the board's zones) otherwise."""
        if not isinstance(name, str):
            raise ProtoError(C.E_BAD_TYPE, "zone must be a string")
        i = len(self.tbl) - 1
        while i >= 0 and self.tbl[i]["name"] != name:
            i -= 1
        if i < 0:
            raise ProtoError(C.E_UNKNOWN_ZONE, "no zone %s on this board (zones: %s)" % (name, ", ".join(self.names())))
        return i

    def check(self, i, program, waves):
        """zone_refused unless zone i allows the program (None: a custom waveform) and every waveform step."""
        z = self.tbl[i]
        if program is not None and program not in z["programs"]:
            raise ProtoError(C.E_ZONE_REFUSED, "program %s not allowed in the %s zone (allowed: %s)"
                             % (program, z["name"], ", ".join(z["programs"])))
        for w in waves:
            if z["max_phase_us"] and w["phase_us"] > z["max_phase_us"]:
                raise ProtoError(C.E_ZONE_REFUSED, "phase %d us above the %s zone's %d us"
                                 % (w["phase_us"], z["name"], z["max_phase_us"]))
            if z["max_rate_mhz"] and w["rate_mhz"] > z["max_rate_mhz"]:
                raise ProtoError(C.E_ZONE_REFUSED, "rate %d mHz above the %s zone's %d mHz"
                                 % (w["rate_mhz"], z["name"], z["max_rate_mhz"]))

    def session_ms(self, i, ms):
        """A session's length in zone i: the zone may shorten it."""
        zm = self.tbl[i]["session_max_ms"]
        return zm if zm and zm < ms else ms

    def start_level(self, requested, start_low):
        """(level, start_bound): level 1 with start_low; never above the last session's final level."""
        if start_low and requested > 1:
            return 1, C.START_BOUND_LOW
        if self.last_level is not None and requested > self.last_level:
            return self.last_level, C.START_BOUND_LAST
        return requested, None

    def remember(self, level):
        """A session ended at `level`: keep it (atomic record) so the next one starts no higher."""
        if level == self.last_level:
            return
        self.last_level = level
        try:
            store.write_atomic(SESSION_PATH, {"last_level": level})
        except OSError:
            pass    # kept in RAM for this power cycle

    def next_index(self):
        return (self.i + 1) % len(self.tbl)
