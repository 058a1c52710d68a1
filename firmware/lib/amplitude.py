# The one choke point that writes the amplitude (S3): ISET is a >=100 kHz PWM into an RC filter driving the
# V-to-I source, I = duty x I_FS. Nothing else in the firmware touches the ISET pin.
# Two bounds, both here so no path (ramps, bursts, re-contact, session ramp-down, trial amplitudes) can pass them:
# the board cap refuses (over_cap: a request above it is an error), the treatment zone's limit clamps (a level
# above the zone limit is a normal request near the eyes: the zone limit is applied, and `bound` says so).
import time
import machine
from machine import Pin, PWM

import calib
from board import cap_ua
from planner import iset_level, iset_level_to_ua
from pscodes import E_OVER_CAP, E_BAD_TYPE, FIRMWARE_CEILING_UA, CONTACT_PROBE_UA, BOUND_LEVEL, BOUND_ZONE


class AmplitudeError(ValueError):
    def __init__(self, code, detail):
        super().__init__(detail)
        self.code = code
        self.detail = detail


class Amplitude:
    def __init__(self, board):
        an = board["analog"]
        cal = board.get("calibration", {})
        self.cap_ua = cap_ua(board)
        self.i_fs = an["i_fs_ua"]
        self.board = board
        self.prof_gain = int(cal.get("iset_gain", 1.0) * 100000 + 0.5)
        self.prof_offset = int(cal.get("iset_offset_ua", 0.0) * 10 + (0.5 if cal.get("iset_offset_ua", 0.0) >= 0 else -0.5))
        self.pwm = PWM(Pin(board["pins"]["ISET"]), freq=an["iset_pwm_hz"], duty_u16=0)
        # TOP as machine.PWM chose it for a DIV=1 frequency (>= 1908 Hz): round(f_sys/f) - 1
        f = an["iset_pwm_hz"]
        self.top = (machine.freq() + f // 2) // f - 1
        # the cap bound (issue 12): no compare level above this, whatever calibration record is in force; it assumes
        # the worst part tolerances of the board, not the record
        self.lvl_max = calib.cap_level(board, self.cap_ua, self.i_fs, self.top)
        self.gain, self.offset = self.prof_gain, self.prof_offset
        self.applied_ua = 0
        self.writes = 0
        self.probe_ua = min(CONTACT_PROBE_UA, self.cap_ua)
        self.probe_d = 0
        self.apply_cal()
        self._zero = 0
        self.ramp_from = 0
        self.ramp_to = 0
        self.ramp_t0 = 0
        self.ramp_ms = 0
        self.zone_ua = self.cap_ua     # the treatment zone's limit (zones.py); set_zone_limit changes it

    def apply_cal(self):
        """Take the calibration record in force (calib.C): the output model, and the probe duty made from it."""
        if calib.rec is not None:
            self.gain, self.offset = calib.iset_params()
        else:
            self.gain, self.offset = self.prof_gain, self.prof_offset
        self.probe_d = self._duty(self._level(self.probe_ua))

    def _level(self, ua):
        lvl = iset_level(ua, self.i_fs, self.top, self.gain, self.offset)
        return lvl if lvl <= self.lvl_max else self.lvl_max

    def bound(self, ua):
        """What an amplitude request becomes here: (applied target uA, BOUND_LEVEL or BOUND_ZONE)."""
        if ua > self.zone_ua:
            return self.zone_ua, BOUND_ZONE
        return ua, BOUND_LEVEL

    def set_zone_limit(self, limit_ua):
        """New zone limit, in force at once: an output above it drops to it now (decreases need no ramp, S8), a
        ramp aiming above it aims at it instead."""
        if not isinstance(limit_ua, int) or isinstance(limit_ua, bool) or limit_ua < 0:
            raise AmplitudeError(E_BAD_TYPE, "zone limit must be an integer uA")
        if limit_ua > self.cap_ua:
            raise AmplitudeError(E_OVER_CAP, "zone limit %d uA above the cap %d uA" % (limit_ua, self.cap_ua))
        self.zone_ua = limit_ua
        if self.ramp_to > limit_ua:
            self.ramp_to = limit_ua
        if self.ramp_from > limit_ua:
            self.ramp_from = limit_ua
        if self.applied_ua > limit_ua:
            self.ramp_ms = 0
            self.set_ua(limit_ua)

    def set_ua(self, ua):
        """Apply ua now (no ramp). Refuses anything above the cap with over_cap and changes nothing."""
        if not isinstance(ua, int) or isinstance(ua, bool):
            raise AmplitudeError(E_BAD_TYPE, "amplitude must be an integer uA")
        if ua > self.cap_ua or ua > FIRMWARE_CEILING_UA:
            raise AmplitudeError(E_OVER_CAP, "%d uA above the cap %d uA" % (ua, self.cap_ua))
        if ua < 0:
            ua = 0
        if ua > self.zone_ua:
            ua = self.zone_ua
        lvl = self._level(ua)
        self.pwm.duty_u16(self._duty(lvl))
        self.writes += 1
        self.applied_ua = iset_level_to_ua(lvl, self.i_fs, self.top, self.gain, self.offset)
        return self.applied_ua

    def _duty(self, lvl):
        # duty_u16 maps back to CC = round(d*(TOP+1)/65535); pick d so that CC == lvl exactly
        d = (lvl * 65535 + (self.top + 1) // 2) // (self.top + 1)
        return 65535 if d > 65535 else d

    def set_probe(self):
        """The small contact-probe current (S7 pause), from any context: precomputed, no allocation."""
        self.ramp_ms = 0
        self.pwm.duty_u16(self.probe_d)
        self.applied_ua = self.probe_ua

    def force_zero(self):
        """ISET to 0 from any context, hard IRQ included (no allocation, no floats)."""
        self.pwm.duty_u16(0)
        self.applied_ua = 0
        self.ramp_to = 0
        self.ramp_from = 0
        self.ramp_ms = 0

    # Ramps (S8): increases move linearly over ramp_ms; decreases are immediate.
    def ramp_to_ua(self, target, ramp_ms, now_ms):
        if not isinstance(target, int) or isinstance(target, bool):
            raise AmplitudeError(E_BAD_TYPE, "amplitude must be an integer uA")
        if target > self.cap_ua:
            raise AmplitudeError(E_OVER_CAP, "%d uA above the cap %d uA" % (target, self.cap_ua))
        if target > self.zone_ua:
            target = self.zone_ua
        if target <= self.applied_ua:
            self.ramp_ms = 0
            self.ramp_to = target
            self.set_ua(target)
            return
        self.ramp_from = self.applied_ua
        self.ramp_to = target
        self.ramp_t0 = now_ms
        self.ramp_ms = ramp_ms if ramp_ms > 0 else 1

    def ramping(self):
        return self.ramp_ms > 0

    def tick(self, now_ms):
        if self.ramp_ms <= 0:
            return self.applied_ua
        el = time.ticks_diff(now_ms, self.ramp_t0)
        if el >= self.ramp_ms:
            self.ramp_ms = 0
            return self.set_ua(self.ramp_to)
        if el < 0:
            el = 0
        ua = self.ramp_from + (self.ramp_to - self.ramp_from) * el // self.ramp_ms
        if ua != self.applied_ua:
            self.set_ua(ua)
        return self.applied_ua
