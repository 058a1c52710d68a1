"""Analog front end of a stimulator board, from its profile: ISET RC filter, V-to-I source, H-bridge, compliance,
sense amplifier and ADC inputs, FAULT_N comparator, CHARGING input.

The front end integrates the electrode waveform as the Chip's clock advances (``on_advance``), as a list of
closed-form pieces (see load.py), so ADC reads, the FAULT_N comparator and the rig's captures all see the same
physics. Inputs are the Chip's pin timelines only (BRIDGE_A/B, HV_EN edges, ISET duty), never firmware variables.

Locking: the Chip calls in with its own lock held (on_advance, adc_volts); the rig calls in from other threads.
Rig-side changes never call the Chip while holding this front end's lock (pin drives are queued and flushed after),
so the lock order is always Chip -> front end.
"""
from __future__ import annotations

import bisect
import heapq
import math
import random
import threading

from . import load as ld
from .load import DRIVE, FLOAT, GROUND, LIMIT
from .adc import volts_to_raw
from ..parts import Parts

SHORT_FAULT_OHM = 100.0          # "output shorted past the current source": V_COMP through this + the load
TEMP_V27 = 0.706                 # RP2040 temperature sensor: V at 27 C, slope -1.721 mV/C
TEMP_SLOPE = 0.001721
ADC_FIRST_GPIO = 26
ADC_CHANNELS = 5
_EPS_V = 1e-9
_EPS_A = 1e-12
_OPEN = ld.parse_load("open")
DEFER_MAX_NS = 1_000_000_000    # integrate at least once per virtual second (the Chip keeps 120 s of pin history)


class Piece:
    """One stretch of the electrode waveform with constant inputs and electrical mode: [t0, t1) in ns."""

    __slots__ = ("t0", "t1", "mode", "pol", "src", "hv", "i", "v", "vc", "f0", "duty", "iset", "short", "ph0")

    def x(self, t_ns: int) -> float:
        return (t_ns - self.t0) * 1e-9

    def current(self, t_ns: int) -> float:
        """Electrode current in A at t (positive = + phase direction), discharge included."""
        return ld.ev(self.i, (t_ns - self.t0) * 1e-9)

    def source_current(self, t_ns: int) -> float:
        """Current through the source path / sense resistor in A (zero while the bridge is not driving)."""
        return ld.ev(self.i, (t_ns - self.t0) * 1e-9) if self.src else 0.0

    def voltage(self, t_ns: int) -> float:
        return ld.ev(self.v, (t_ns - self.t0) * 1e-9)

    def charge(self, ta: int, tb: int) -> float:
        """Charge in C through the electrodes over [ta, tb] (clipped to the piece)."""
        ta, tb = max(ta, self.t0), min(tb, self.t1)
        if tb <= ta:
            return 0.0
        return ld.integral(self.i, (ta - self.t0) * 1e-9, (tb - self.t0) * 1e-9)

    def clipped(self, t1: int) -> "Piece":
        p = Piece()
        for k in Piece.__slots__:
            setattr(p, k, getattr(self, k))
        p.t1 = t1
        return p

    def __repr__(self):
        return (f"Piece({self.t0}..{self.t1} {self.mode} pol={self.pol} i0={ld.ev(self.i, 0) * 1e6:.3f}uA "
                f"v0={ld.ev(self.v, 0):.4f}V)")


class FrontEnd:
    """The analog world around the RP2040: attach to a Chip (sets ``chip.analog = self``)."""

    def __init__(self, profile, chip, load="2k", *, seed=0, retention_s: float = 10.0, parts: Parts | None = None):
        self.chip = chip
        self.profile = profile if profile is not None else chip.profile
        pins = self.profile["pins"]
        a = self.profile["analog"]
        cal = self.profile.get("calibration", {})
        self.pins = pins
        self.pin_a, self.pin_b = pins["BRIDGE_A"], pins["BRIDGE_B"]
        self.pin_iset, self.pin_hv = pins["ISET"], pins["HV_EN"]
        self.pin_fault, self.pin_charging = pins["FAULT_N"], pins["CHARGING"]
        self.i_fs = a["i_fs_ua"] * 1e-6
        self.tau_iset = a["iset_rc_tau_us"] * 1e-6
        self.v_comp = float(a["v_comp_v"])
        self.v_max = self.v_comp - float(a["compliance_headroom_v"])
        self.r_sense = float(a["r_sense_ohm"])
        self.sense_gain = float(a["sense_gain"])
        self.v_el_div = float(a["v_electrode_divider"])
        self.v_bat_div = float(a["v_bat_divider"])
        self.vref = float(a["adc_vref_v"])
        self.noise_v = float(a["adc_noise_lsb"]) * self.vref / 4096
        self.trip_a = a["fault_trip_ua"] * 1e-6
        self.battery_v = float(a["battery_v"])
        self.cal_gain = float(cal.get("iset_gain", 1.0))
        self.cal_offset = float(cal.get("iset_offset_ua", 0.0)) * 1e-6
        # this unit's component values (parts.py): applied only in _iset_expo, _clean_volts and adc_transfer
        self.parts = parts if parts is not None else Parts()
        self.tau_iset *= self.parts.iset_rc
        self.iset_pwm_hz = float(a.get("iset_pwm_hz", 0))
        self.temperature_c = 27.0
        self.channel_of = {}            # ADC channel -> signal name
        for name in ("I_SENSE", "V_ELECTRODE", "V_BAT"):
            self.channel_of[pins[name] - ADC_FIRST_GPIO] = name
        self.retention_ns = int(retention_s * 1e9)

        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._sched = []                # heap of (t_ns, seq, kind, payload)
        self._seq = 0
        self._pending_drives = []       # (gpio, level, t) queued by rig-side calls, flushed outside the lock
        self._holds = {}                # capture holds: id -> t_ns kept from pruning
        self._pieces: list[Piece] = []
        self._tuples = {}
        self._t0s: list[int] = []
        self._since_prune = 0

        # inputs (as last seen on the Chip's pins) and faults
        self.t = int(chip.now_ns)
        self.lvl_a = chip.pin_level(self.pin_a, self.t)
        self.lvl_b = chip.pin_level(self.pin_b, self.t)
        self.lvl_hv = chip.pin_level(self.pin_hv, self.t)
        self.duty = self._duty_at(self.t)
        self.load = ld.parse_load(load)
        self.contact = True
        self.short_fault = False
        self.gain_error = 1.0
        self.stuck = {}                 # ADC channel -> raw 12-bit
        self.fault_forced = False
        self.charging = False
        self._tripped = False
        self._fault_level = 1
        self.shoot_through = []         # start times (ns) of BRIDGE_A/B both-high intervals

        self._open_piece(self.t, vc0=0.0, f0=self.duty)
        chip.analog = self
        chip.drive_input(self.pin_fault, 1, self.t)
        chip.drive_input(self.pin_charging, 0, self.t)

    # ---- the Chip's interface ------------------------------------------------------------------------------------
    def on_advance(self, t0: int, t1: int) -> None:
        with self._lock:
            if self._may_defer() and t1 - self.t < DEFER_MAX_NS:
                return          # nothing here can act on the Chip before someone looks: integrate on demand
            self._sync(int(t1))

    def quiet(self) -> bool:
        """True when the analog side cannot raise an input edge by itself (no fault that can trip FAULT_N)."""
        return not (self.short_fault or self.fault_forced
                    or self.i_fs * self.cal_gain * self.gain_error * self.parts.src_gain
                    + self.parts.src_offset_a >= self.trip_a)

    def _may_defer(self) -> bool:
        # Following the Chip on every advance costs a pin-timeline walk per board round trip. Integrating a longer
        # stretch later gives the same pieces (they split only at pin and duty changes), so when the front end has
        # nothing to drive onto the Chip meanwhile (quiet physics, nothing scheduled, no drive pending), it waits
        # until its waveform is asked for (_catch_up in every public entry point).
        return self.quiet() and not self._sched and not self._pending_drives

    def _catch_up(self) -> None:
        t = int(self.chip.now_ns)
        if t > self.t:
            self._sync(t)

    def adc_volts(self, channel: int, t_ns: int) -> float:
        """Volts at ADC `channel` at the instant t (noise included; the Chip quantises)."""
        with self._lock:
            t_ns = int(t_ns)
            if t_ns > self.t:
                self._sync(t_ns)
            if channel in self.stuck:
                return self.stuck[channel] * self.vref / 4096
            return self._clean_volts(channel, t_ns) + self._rng.gauss(0.0, self.noise_v)

    def adc_transfer(self, v: float) -> int:
        """The 12-bit code this unit's ADC gives for v volts at its pin (parts.py: E11 DNL, INL, gain/offset)."""
        return volts_to_raw(v, self.vref) if self.parts.ideal else self.parts.adc_code(v, self.vref)

    def attach(self, chip) -> None:
        """Follow a new Chip object (a board that rebuilds its Chip on power-on); the physics carries on."""
        with self._lock:
            self._catch_up()                    # (on the old Chip's pin timelines)
            self.chip = chip
            chip.analog = self
            t = max(self.t, int(chip.now_ns))
            self._run_to(t)
            self.lvl_a, self.lvl_b = chip.pin_level(self.pin_a, t), chip.pin_level(self.pin_b, t)
            self.lvl_hv = chip.pin_level(self.pin_hv, t)
            self.duty = self._duty_at(t)
            self._restart(t)
            self._pending_drives.append((self.pin_fault, self._fault_level, t))
            self._pending_drives.append((self.pin_charging, int(self.charging), t))
        self._flush_drives()

    def next_event_ns(self):
        """Earliest scheduled front-end change (a rig action scheduled with at(), the end of an injected FAULT_N
        assertion) or None: a board that jumps virtual time ahead should not jump past it."""
        with self._lock:
            return self._sched[0][0] if self._sched else None

    # ---- queries ---------------------------------------------------------------------------------------------------
    def piece_at(self, t_ns: int) -> Piece:
        with self._lock:
            self._catch_up()
        k = bisect.bisect_right(self._t0s, t_ns) - 1
        if k < 0:
            raise ValueError(f"t={t_ns} ns is before the retained waveform (from {self._t0s[0]} ns)")
        return self._pieces[k]

    def current_ua(self, t_ns: int) -> float:
        with self._lock:
            return self.piece_at(int(t_ns)).current(int(t_ns)) * 1e6

    def pieces(self, t0: int, t1: int) -> list:
        """Pieces overlapping [t0, t1] (the open one clipped to the present), for captures."""
        with self._lock:
            self._catch_up()
            if not self._t0s or t0 < self._t0s[0]:
                raise ValueError(f"window start {t0} ns is no longer retained (oldest {self._t0s[0]} ns)")
            k = max(0, bisect.bisect_right(self._t0s, t0) - 1)
            out = []
            for p in self._pieces[k:]:
                if p.t0 > t1:
                    break
                out.append(p.clipped(self.t) if p is self._pieces[-1] else p)
            return out

    def chain_start(self, t_ns: int, idle_ns: int) -> int:
        """Where the pulse chain running at t_ns began: the first phase after the last bridge-idle stretch of at
        least idle_ns before t_ns (t_ns itself when no phase is in between; the oldest retained time at most)."""
        with self._lock:
            self._catch_up()
            k = bisect.bisect_right(self._t0s, t_ns) - 1
            start, run = t_ns, 0
            while k >= 0:
                p = self._pieces[k]
                if p.pol in (1, -1):
                    start, run = min(start, p.t0), 0
                else:
                    run += min(p.t1, t_ns) - p.t0
                    if run >= idle_ns:
                        return start
                k -= 1
            return min(start, self._t0s[0]) if self._t0s else t_ns

    def hold(self, key, t_ns: int) -> None:
        """Keep the waveform from t_ns on until release(key) (a capture in progress)."""
        with self._lock:
            self._catch_up()
            self._holds[key] = int(t_ns)

    def release(self, key) -> None:
        with self._lock:
            self._holds.pop(key, None)

    # ---- rig-side controls (applied at the front end's present) ---------------------------------------------------
    def set_load(self, spec) -> ld.Load:
        new = ld.parse_load(spec)
        self._change(lambda: setattr(self, "load", new))
        return new

    def set_contact(self, on: bool) -> None:
        self._change(lambda: setattr(self, "contact", bool(on)))

    def set_short(self, on: bool) -> None:
        self._change(lambda: setattr(self, "short_fault", bool(on)))

    def set_gain_error(self, factor: float) -> None:
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not (0 <= factor <= 10):
            raise ValueError(f"gain error factor must be a number 0..10, got {factor!r}")
        self._change(lambda: setattr(self, "gain_error", float(factor)))

    def set_adc_stuck(self, channel: int, raw: int | None) -> None:
        if not isinstance(channel, int) or isinstance(channel, bool) or not 0 <= channel < ADC_CHANNELS:
            raise ValueError(f"ADC channel must be 0..{ADC_CHANNELS - 1}, got {channel!r}")
        with self._lock:
            self._catch_up()
            if raw is None:
                self.stuck.pop(channel, None)
            else:
                if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw <= 4095:
                    raise ValueError(f"raw ADC value must be 0..4095, got {raw!r}")
                self.stuck[channel] = raw

    def force_fault_n(self, ms: float) -> None:
        """Hold FAULT_N low for `ms` of virtual time from now (an external comparator trip)."""
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not 0 < ms <= 60_000:
            raise ValueError(f"fault_n duration must be 0 < ms <= 60000, got {ms!r}")
        with self._lock:
            self._catch_up()
            self.fault_forced = True
            t_end = self.t + int(ms * 1e6)
            self._schedule(t_end, "fault_forced", False)
            self._update_fault_pin(self.t)
            # also on the Chip's own schedule (its next_event_ns bounds time jumps); at t_end this front end
            # re-drives the true level, so a comparator trip still pending then keeps FAULT_N low
            self._pending_drives.append((self.pin_fault, 1, t_end))
        self._flush_drives()

    def set_charging(self, on: bool) -> None:
        with self._lock:
            self._catch_up()
            self.charging = bool(on)
            self._pending_drives.append((self.pin_charging, int(self.charging), self.t))
        self._flush_drives()

    def press(self, gpio: int, ms: float) -> None:
        """Drive an (active-low) input low now and let go of it (None: the pad's pull decides) after `ms` of
        virtual time. The release is scheduled on the Chip, so its next_event_ns() bounds time jumps."""
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not 0 < ms <= 60_000:
            raise ValueError(f"press duration must be 0 < ms <= 60000, got {ms!r}")
        with self._lock:
            self._catch_up()
            self._pending_drives.append((gpio, 0, self.t))
            self._pending_drives.append((gpio, None, self.t + int(ms * 1e6)))
        self._flush_drives()

    def at(self, t_ns: int, what: str, *args) -> None:
        """Schedule one rig-side change at the virtual instant t_ns (not before the front end's present): `what` is
        load(spec), contact(on), short(on), gain_error(factor), adc_stuck(channel, raw), fault_n(ms), charging(on)
        or clear(). Arguments are checked now. The physics changes exactly at t_ns (the change is merged into the
        integration in time order with the pin edges), and until then the front end integrates eagerly (_may_defer
        is false while anything is scheduled) and next_event_ns() bounds the board's time jumps."""
        t_ns = int(t_ns)
        fn, t_end = self._mutation(what, args, t_ns)
        with self._lock:
            self._catch_up()
            if t_ns < self.t:
                raise ValueError(f"t={t_ns} ns is in the past (now {self.t} ns)")
            if t_end is not None:
                self._schedule(t_end, "fault_forced", False)
            if t_ns > self.t:
                self._schedule(t_ns, "action", fn)
                return
            fn()                    # at the present: now (a schedule entry there would never be advanced to)
            self._restart(self.t)
        self._flush_drives()

    def _mutation(self, what, args, t_ns):
        """(fn, t_end): fn changes the state at its instant (lock held, self.t there, no catch-up); t_end is when a
        FAULT_N assertion scheduled with it ends (put on the schedule up front, so it is merged in time order)."""
        if what == "load":
            new = ld.parse_load(*args)
            return (lambda: setattr(self, "load", new)), None
        if what in ("contact", "short", "charging"):
            on = bool(args[0]) if args else True
            if what == "contact":
                return (lambda: setattr(self, "contact", on)), None
            if what == "short":
                return (lambda: setattr(self, "short_fault", on)), None

            def charging():
                self.charging = on
                self._pending_drives.append((self.pin_charging, int(on), self.t))
            return charging, None
        if what == "gain_error":
            (factor,) = args
            if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not (0 <= factor <= 10):
                raise ValueError(f"gain error factor must be a number 0..10, got {factor!r}")
            return (lambda: setattr(self, "gain_error", float(factor))), None
        if what == "adc_stuck":
            channel, raw = args
            if not isinstance(channel, int) or isinstance(channel, bool) or not 0 <= channel < ADC_CHANNELS:
                raise ValueError(f"ADC channel must be 0..{ADC_CHANNELS - 1}, got {channel!r}")
            if raw is not None and (not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw <= 4095):
                raise ValueError(f"raw ADC value must be 0..4095, got {raw!r}")

            def stuck():
                if raw is None:
                    self.stuck.pop(channel, None)
                else:
                    self.stuck[channel] = raw
            return stuck, None
        if what == "fault_n":
            (ms,) = args
            if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not 0 < ms <= 60_000:
                raise ValueError(f"fault_n duration must be 0 < ms <= 60000, got {ms!r}")
            t_end = t_ns + int(ms * 1e6)

            def fault_n():
                self.fault_forced = True
                # at t_end this front end re-drives the true level; also on the Chip's own schedule
                self._pending_drives.append((self.pin_fault, 1, t_end))
            return fault_n, t_end
        if what == "clear":
            return self._clear_now, None
        raise ValueError(f"unknown scheduled change {what!r}")

    def clear_faults(self) -> None:
        self._change(self._clear_now)

    def _clear_now(self):
        self.short_fault = False
        self.gain_error = 1.0
        self.contact = True
        self.stuck.clear()
        self.fault_forced = False
        self._sched = [e for e in self._sched if e[2] != "fault_forced"]
        heapq.heapify(self._sched)

    def faults(self) -> dict:
        with self._lock:
            self._catch_up()
            return {"short": self.short_fault, "gain_error": self.gain_error, "contact": self.contact,
                    "adc_stuck": {str(ch): raw for ch, raw in self.stuck.items()}, "fault_n_forced": self.fault_forced, "charging": self.charging,
                    "fault_n": self._fault_level}

    # ---- internals -------------------------------------------------------------------------------------------------
    def _change(self, fn) -> None:
        with self._lock:
            self._catch_up()
            fn()
            self._restart(self.t)
        self._flush_drives()

    def _flush_drives(self) -> None:
        with self._lock:
            drives, self._pending_drives = self._pending_drives, []
        for gpio, level, t in drives:
            self.chip.drive_input(gpio, level, t)

    def _schedule(self, t, kind, payload):
        self._seq += 1
        heapq.heappush(self._sched, (int(t), self._seq, kind, payload))

    def _duty_at(self, t):
        tl = self.chip.pwm_duty_timeline(self.pin_iset, t, t)
        return float(tl[-1][1]) if tl else float(self.chip.pin_level(self.pin_iset, t))

    def _clean_volts(self, channel, t):
        name = self.channel_of.get(channel)
        if name == "I_SENSE":
            p = self.piece_at(t)
            i = abs(p.source_current(t))
            if i and not self.parts.ideal:
                i = self._unit_current(p, t, i)
            return self.parts.sense_volts(i * self.r_sense * self.sense_gain)
        if name == "V_ELECTRODE":
            return abs(self.piece_at(t).voltage(t)) / (self.v_el_div * self.parts.el_div)
        if name == "V_BAT":
            return self.battery_v / self.v_bat_div
        if channel == 4:
            return TEMP_V27 - (self.temperature_c - 27.0) * TEMP_SLOPE
        return 0.0

    def _unit_current(self, p, t, i):
        """What the sense resistor carries at t on this unit: the settled source current after its ~2 us rise
        from the phase start, plus the ISET ripple (parts.py). Only the sense path sees these two: the rig's
        charge-based amplitude averages the ripple out, and the rise is a few tenths of a percent of a phase."""
        if p.mode == DRIVE:
            i += self.parts.ripple_a(t, self.i_fs * self.cal_gain * self.gain_error, p.duty, self.iset_pwm_hz,
                                     self.tau_iset)
        return max(0.0, i * self.parts.edge_factor((t - p.ph0) * 1e-9))

    def _sync(self, t1: int) -> None:
        """Integrate the waveform from self.t to t1, following the Chip's pin timelines."""
        t0 = self.t
        if t1 <= t0:
            return
        chip = self.chip
        changes = []
        for key, gpio in (("a", self.pin_a), ("b", self.pin_b), ("hv", self.pin_hv)):
            lvl0, edges = chip.pin_edges(gpio, t0, t1)
            cur = getattr(self, "lvl_" + key)
            if lvl0 != cur:
                changes.append((t0, key, lvl0))
                cur = lvl0
            for t, lvl in edges:
                if lvl != cur:
                    changes.append((max(int(t), t0), key, lvl))
                    cur = lvl
        cur = self.duty
        for t, duty in chip.pwm_duty_timeline(self.pin_iset, t0, t1):
            if duty != cur:
                changes.append((max(int(t), t0), "duty", float(duty)))
                cur = duty
        while self._sched and self._sched[0][0] <= t1:
            t, _, kind, payload = heapq.heappop(self._sched)
            changes.append((max(t, t0), kind, payload))
        if changes:
            changes.sort(key=lambda c: c[0])
            k = 0
            while k < len(changes):
                t = changes[k][0]
                self._run_to(t)
                restart = False
                while k < len(changes) and changes[k][0] == t:
                    _, kind, val = changes[k]
                    k += 1
                    if kind in ("a", "b", "hv"):
                        setattr(self, "lvl_" + kind, val)
                        restart = True
                    elif kind == "duty":
                        self.duty = val
                        restart = True
                    elif kind == "fault_forced":
                        self.fault_forced = val
                        self._fault_level = None        # re-drive whatever the comparator says now
                    elif kind == "action":
                        val()                           # a rig change scheduled for this instant (at())
                        restart = True
                if restart:
                    self._restart(t)
                self._update_fault_pin(t)
                self._flush_pending(chip)
        self._run_to(t1)
        self._flush_pending(chip)

    def _flush_pending(self, chip):
        # inside the Chip's own call (on_advance/adc): the Chip lock is already ours, drive directly
        drives, self._pending_drives = self._pending_drives, []
        for gpio, level, t in drives:
            chip.drive_input(gpio, level, t)

    def _iset_expo(self, f0, duty):
        """Source setpoint a + b*exp(-x/tau) (A) from the RC filter state f0 and target duty."""
        g = self.i_fs * self.cal_gain * self.gain_error * self.parts.src_gain
        # the unit's source offset acts only while ISET drives (a zero duty disables the source)
        a = max(0.0, g * duty + self.cal_offset + (self.parts.src_offset_a if duty > 0 else 0.0))
        return (a, g * (f0 - duty), self.tau_iset)

    def _open_piece(self, t, vc0, f0, mode_hint=None):
        p = Piece()
        p.t0 = p.t1 = t
        p.f0, p.duty = f0, self.duty
        p.iset = self._iset_expo(f0, self.duty)
        a, b = self.lvl_a, self.lvl_b
        p.pol = 2 if (a and b) else (1 if a else (-1 if b else 0))
        prev = self._pieces[-1] if self._pieces else None
        p.ph0 = prev.ph0 if prev is not None and prev.pol == p.pol and prev.t1 >= t else t
        p.hv = bool(self.lvl_hv)
        load = self.load if self.contact else _OPEN
        p.short = False
        if p.pol == 2 and (not self._pieces or self._pieces[-1].pol != 2):
            self.shoot_through.append(t)
        if p.pol in (1, -1) and p.hv and self.short_fault:
            p.mode, p.short = LIMIT, True
            p.i, p.v, p.vc = ld.response(load, LIMIT, p.pol, vc0, v_src=self.v_comp, r_extra=SHORT_FAULT_OHM)
        elif p.pol in (1, -1) and p.hv and self.v_max > 0:
            mode = mode_hint
            if mode is None:
                i, v, vc = ld.response(load, DRIVE, p.pol, vc0, iset=p.iset)
                mode = LIMIT if p.pol * ld.ev(v, 0.0) > self.v_max + _EPS_V else DRIVE
            p.mode = mode
            p.i, p.v, p.vc = ld.response(load, mode, p.pol, vc0, iset=p.iset, v_src=self.v_max)
        elif p.pol in (1, -1):
            p.mode = FLOAT
            p.i, p.v, p.vc = ld.response(load, FLOAT, p.pol, vc0)
        else:
            p.mode = GROUND
            p.i, p.v, p.vc = ld.response(load, GROUND, 0, vc0)
        p.src = p.mode in (DRIVE, LIMIT)
        # steady pulse trains repeat the same closed forms: share the tuples (memory for long retention)
        tup = self._tuples
        if len(tup) > 20000:
            tup.clear()
        p.i, p.v, p.vc, p.iset = (tup.setdefault(p.i, p.i), tup.setdefault(p.v, p.v), tup.setdefault(p.vc, p.vc),
                                  tup.setdefault(p.iset, p.iset))
        if self._pieces and self._pieces[-1].t0 == t:      # zero-length predecessor: replace it
            self._pieces[-1] = p
        else:
            self._pieces.append(p)
            self._t0s.append(t)
            self._since_prune += 1
            if self._since_prune > 4096:
                self._prune()
        self._load_of_piece = load
        self._tripped = p.src and p.pol * ld.ev(p.i, 0.0) > self.trip_a
        return p

    def _restart(self, t, mode_hint=None):
        p = self._pieces[-1]
        x = (t - p.t0) * 1e-9
        vc = ld.ev(p.vc, x)
        f = p.duty + (p.f0 - p.duty) * math.exp(-x / self.tau_iset)
        p.t1 = t
        same_load = self._load_of_piece == (self.load if self.contact else _OPEN)
        self._open_piece(t, vc if same_load else 0.0, f, mode_hint)
        self._update_fault_pin(t)

    def _run_to(self, t: int) -> None:
        guard = 0
        while t > self.t:
            p = self._pieces[-1]
            xa, xb = (self.t - p.t0) * 1e-9, (t - p.t0) * 1e-9
            xt, hint = None, None
            if p.mode == DRIVE and guard < 64:
                xt = ld.first_above(ld.scale(p.v, p.pol), self.v_max + _EPS_V, xa, xb)
                hint = LIMIT
            elif p.mode == LIMIT and not p.short and guard < 64:
                si = ld.scale(p.i, p.pol)      # one exponential in LIMIT; the setpoint adds the other
                a, b, tau = p.iset
                xt = ld.first_above((si[0] - a, si[1], si[2], -b, tau), _EPS_A, xa, xb)
                hint = DRIVE
            if xt is not None:
                # first whole ns past the crossing; always move forward (a new piece must not end where it began)
                tt = max(p.t0 + math.ceil(xt * 1e9 - 1e-3), self.t, p.t0 + 1)
                tt = min(tt, t)
                self._comparator(p, xa, (tt - p.t0) * 1e-9)
                self.t = tt
                self._restart(tt, hint)
                guard += 1
                continue
            self._comparator(p, xa, xb)
            self.t = t
            p.t1 = t
        if self._pieces[-1].t1 < self.t:
            self._pieces[-1].t1 = self.t

    def _comparator(self, p, xa, xb):
        if not p.src or ld.is_const(p.i):
            return
        for x, rising in ld.crossings(ld.scale(p.i, p.pol), self.trip_a, xa, xb):
            self._tripped = rising
            self._update_fault_pin(p.t0 + math.ceil(x * 1e9 - 1e-3))

    def _update_fault_pin(self, t):
        level = 0 if (self._tripped or self.fault_forced) else 1
        if level != self._fault_level:
            self._fault_level = level
            self._pending_drives.append((self.pin_fault, level, t))

    def _prune(self):
        self._since_prune = 0
        keep = self.t - self.retention_ns
        if self._holds:
            keep = min(keep, min(self._holds.values()))
        k = bisect.bisect_right(self._t0s, keep) - 1
        if k > 0:
            del self._pieces[:k]
            del self._t0s[:k]
        if len(self.shoot_through) > 10000:
            del self.shoot_through[:-10000]
