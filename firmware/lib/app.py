# The application: one plain control loop (no asyncio), polling stdin with select.poll and timing with
# time.ticks_* / sleep, which the virtual board virtualises. Safety actions that cannot wait for the loop run
# in hard IRQs (safety.py); the loop reports them, runs ramps, bursts, program steps and the session timer,
# and feeds the watchdog only when an iteration completed in time (S11).
import gc
import sys
import time
import select
import machine
from array import array
from machine import Pin, Timer, mem32

import board as B
import planner
import protocol as P
from protocol import ProtoError
from amplitude import Amplitude, AmplitudeError
from engine import PulseEngine
from safety import Supervisor, TRIP_OVER_CURRENT, TRIP_FAULT_N, TRIP_STALL, I_RAW, V_RAW, V_OK, SAMPLES
from config import Settings, ConfigError
from audit import Audit
import calib
from ui import UI
from zonectl import ZoneControl
import lock
import pscodes as C
import rp2regs as R

LOOP_MS = 4              # loop period while something moves: ramps, pauses, button debounce, ramp-down
QUIET_WAIT_MAX_MS = 6    # longest wait for a ramp step's quiet window (pair <= 2.5 ms + ISET settling 2.5 ms)
QUIET_LOOP_MS = 40       # longest sleep while steady (running, idle): IRQs hold safety and note button edges
BURST_PREPARE_MS = 150   # a burst's chains and sampler are set up this long before its on edge (~60 ms on the chip)
BURST_RESYNC_MS = 100    # an edge handled later than this (loop held up) starts the burst clock again from now
WDT_FEED_MS = 100        # feed interval; the watchdog itself is <= 1 s (board profile)
MAX_BYTES_PER_LOOP = 2048
READ_BUDGET_US = 2000    # request reading per loop iteration: half the loop period
TEL_RING = 128           # telemetry samples buffered between two loop iterations (128 ms at 1 kHz)
TEL_COUNT_MASK = 0x3FFFFFF  # sample counters wrap here (small ints: no allocation in the sampling IRQ)
TEL_BATCH_MAX = 25       # samples per telemetry event (keeps a line well under 1 KB)
TEL_SEND_MS = 10         # batches go out at least this often while telemetry is on
DEFAULT_WAVEFORM = {"phase_us": 250, "gap_us": 50, "rate_hz": 2.0}
STIM_STATES = (C.ST_RAMPING, C.ST_RUNNING, C.ST_PAUSED)
# the reply when even a short error reply cannot be built (out of memory): fixed, so sending it allocates nothing
OOM_REPLY = '{"id": null, "ok": false, "error": "%s", "detail": "out of memory"}' % C.E_INTERNAL


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def deployed_bundle():
    """The hash of the bundle the host deployed (/manifest.json, written last by every deploy), or None."""
    try:
        import json
        with open("/manifest.json") as f:
            h = json.load(f).get("bundle")
        return h if isinstance(h, str) else None
    except Exception:     # no deploy yet, or a damaged manifest: the host then does a full check
        return None


class App:
    def __init__(self, board, out=None):
        self.board = board
        self.out = out or sys.stdout
        self.sys_hz = machine.freq()
        pins = board["pins"]
        lim = board["limits"]
        self.lim = lim
        self.hv = Pin(pins["HV_EN"], Pin.OUT, value=0)
        self.charging_pin = Pin(pins["CHARGING"], Pin.IN)
        self.charging_bit = 1 << pins["CHARGING"]
        self.gpio_in = 0
        self.engine = PulseEngine(board)
        calib.init(board)                  # the unit's calibration record, before anything converts a current
        self.amp = Amplitude(board)
        # heap: the part tolerances are needed for the cap bound only (~1.6 KB), the virtual board's clock model
        # (mcu) never on the device (~1 KB)
        board.pop("tolerances", None)
        board.pop("mcu", None)
        self.sup = Supervisor(board, self.engine, self.amp, self.hv)
        self.programs = B.load_programs(board)
        self.settings = Settings(board, self.programs)
        self.audit = Audit()
        self.lk = None                     # production lock (issue 14): lockcmd.Lock on a locked unit
        if lock.present():
            import lockcmd
            self.lk = lockcmd.load()
        self.ui = UI(board)
        self.zc = ZoneControl(board)       # treatment zones (issue 17); the bound itself is in amplitude.py
        self.amp.set_zone_limit(self.zc.zone()["limit_ua"])
        self.reader = P.LineReader()
        self.state = C.ST_IDLE
        self.level = self.settings.config["default_level"]
        self.target_ua = 0
        self.program = None
        self.steps = None
        self.step_i = 0
        self.step_t0 = 0
        self.plan = None
        self.wave = None
        self.burst_on_ms = 0
        self.burst_off_ms = 0
        self.burst_ramp_ms = 0
        self.burst_is_on = True
        self.burst_t0 = 0
        self.session_ms = 0
        self.t0 = 0
        self.rampdown_t0 = None
        self.rampdown_from = 0
        self.fault = None
        self.tel_on = False
        self.tel_seq = 0          # seq of the last telemetry sample sent
        self.tel_next = 0         # when the next batch is due (the loop sleeps no longer than that)
        self.tel_timer = None     # the sampling timer while telemetry is on
        self.tel_i = None         # sample rings (raw ADC counts), allocated once at the first telemetry request
        self.tel_v = None
        self.tel_a = None         # age (ms) of the supervisor's newest in-phase sample when each sample was taken
        self.tel_last_n = 0       # supervisor sample count the sampling IRQ last saw, and when it changed
        self.tel_last_us = 0
        self.seen_n = 0           # the same, as the loop sees it (for status)
        self.seen_ms = 0
        self.tel_w = 0            # samples the timer took (wraps at TEL_COUNT_MASK)
        self.tel_r = 0            # samples sent
        self.tel_r_us = 0         # ticks_us of sample tel_r
        self.tel_dt_us = 0
        self.tel_stim = False
        self.last_samples = 0
        self.wdt = None
        self.stopping = False
        self.requested_level = None   # the last start's level as asked, and why it started lower (start_bound)
        self.start_bound = None
        self.bundle = deployed_bundle()

    # ---------------------------------------------------------------- output
    def send(self, line):
        self.out.write(line)
        self.out.write("\n")

    def emit(self, name, fields):
        self.send(P.event(name, time.ticks_ms(), fields))

    # ---------------------------------------------------------------- output control
    def idle_output(self):
        """S13: idle word, ISET 0, HV off (order: no new pairs first, then no current source, then no supply)."""
        self.sup.disarm()
        self.engine.kill()
        self.amp.force_zero()
        self.hv.value(0)
        self.engine.stop()
        self.sup.set_setpoint(0)

    def ramp_ms_for(self, frm, to):
        """S8: >= ramp_ms_per_level_step for every level-step's worth of increase (at least one step)."""
        n = len(self.settings.levels)
        cap = self.amp.cap_ua
        steps = ((to - frm) * n + cap - 1) // cap
        if steps < 1:
            steps = 1
        return steps * self.lim["ramp_ms_per_level_step"]

    def retarget(self, ua, now, min_ms=0):
        ua = self.amp.bound(ua)[0]       # the ramp's length is for what will be applied (zone limit)
        ms = self.ramp_ms_for(self.amp.applied_ua, ua)
        if ms < min_ms:
            ms = min_ms
        self.amp.ramp_to_ua(ua, ms, now)
        self.sup.set_setpoint(self.amp.applied_ua)

    # ---------------------------------------------------------------- start / stop
    def _wave_from(self, req):
        """Waveform dict from a start request (custom waveform) or None."""
        keys = ("phase_us", "gap_us", "rate_hz", "burst_on_s", "burst_off_s")
        if not any(k in req for k in keys):
            return None
        w = {}
        w["phase_us"] = P.get_int(req, "phase_us", C.PHASE_US_MIN, C.PHASE_US_MAX, DEFAULT_WAVEFORM["phase_us"])
        w["gap_us"] = P.get_int(req, "gap_us", 0, C.GAP_US_MAX, DEFAULT_WAVEFORM["gap_us"])
        rm = P.get_num_milli(req, "rate_hz", C.RATE_MHZ_MIN, C.RATE_MHZ_MAX)
        w["rate_mhz"] = rm if rm is not None else int(DEFAULT_WAVEFORM["rate_hz"] * 1000)
        on = P.get_num_milli(req, "burst_on_s", 1, C.BURST_MS_MAX)
        off = P.get_num_milli(req, "burst_off_s", 1, C.BURST_MS_MAX)
        if (on is None) != (off is None):
            raise ProtoError(C.E_BAD_REQUEST, "burst_on_s and burst_off_s go together")
        w["burst_on_ms"] = on or 0
        w["burst_off_ms"] = off or 0
        w["burst_ramp_ms"] = 0
        return w

    def _wave_from_step(self, st):
        try:
            w = {"phase_us": st["phase_us"], "gap_us": st.get("gap_us", 0),
                 "rate_mhz": int(st["rate_hz"] * 1000 + 0.5),
                 "burst_on_ms": int(st.get("burst_on_s", 0) * 1000 + 0.5),
                 "burst_off_ms": int(st.get("burst_off_s", 0) * 1000 + 0.5),
                 "burst_ramp_ms": int(st.get("burst_ramp_s", 0) * 1000 + 0.5),
                 "duration_ms": int(st.get("duration_s", 0) * 1000 + 0.5)}
        except (KeyError, TypeError, ValueError):
            raise ProtoError(C.E_UNKNOWN_PROGRAM, "program step is malformed")
        return w

    def _plan(self, w):
        try:
            return planner.plan(w["phase_us"], w["gap_us"], w["rate_mhz"], self.sys_hz)
        except planner.PlanError as e:
            raise ProtoError(e.code, e.detail)

    def check_can_start(self):
        if self.state == C.ST_FAULT or self.sup.tripped():
            raise ProtoError(C.E_FAULT_LATCHED, "a fault is latched; clear_fault first")
        if self.sup.fault_pin_asserted():
            raise ProtoError(C.E_FAULT_LATCHED, "FAULT_N is asserted by the hardware comparator")
        if self.charging_pin.value():
            raise ProtoError(C.E_CHARGING, "no stimulation while charging")
        if self.state in STIM_STATES:
            raise ProtoError(C.E_BUSY, "already stimulating; stop first")

    def start(self, level, program, wave, duration_ms, now, zone=None):
        """Validate everything first (nothing changes on error), then start."""
        self.check_can_start()
        zi = self.zc.i if zone is None else self.zc.lookup(zone)
        n = len(self.settings.levels)
        if not 1 <= level <= n:
            raise ProtoError(C.E_OUT_OF_RANGE, "level must be 1..%d" % n)
        target = self.settings.levels[level - 1]
        if target > self.amp.cap_ua:
            raise ProtoError(C.E_OVER_CAP, "level above the cap")
        steps = None
        if wave is None:
            defaulted = program is None
            if program is None:
                program = self.settings.config.get("default_program")
            if program is None and self.programs:
                # the board's declared default, else its first listed program (never an alphabetical pick)
                program = self.board.get("default_program")
                if program not in self.programs:
                    program = None
                    for name in self.board.get("programs", ()):
                        if name in self.programs:
                            program = name
                            break
            zp = self.zc.zone(zi)["programs"]
            if defaulted and program is not None and program not in zp:
                # a default the zone does not allow: the zone's first program (in the board's order) instead
                program = None
                for name in self.board.get("programs", ()):
                    if name in self.programs and name in zp:
                        program = name
                        break
            if program is None:
                wave = {"phase_us": DEFAULT_WAVEFORM["phase_us"], "gap_us": DEFAULT_WAVEFORM["gap_us"],
                        "rate_mhz": int(DEFAULT_WAVEFORM["rate_hz"] * 1000), "burst_on_ms": 0,
                        "burst_off_ms": 0, "burst_ramp_ms": 0}
            if program is not None:
                if program not in self.programs:
                    raise ProtoError(C.E_UNKNOWN_PROGRAM, "program %s not allowed on this board" % program)
                steps = [self._wave_from_step(s) for s in self.programs[program]["steps"]]
                wave = steps[0]
        plan = self._plan(wave)
        if steps:
            for s in steps:
                self._plan(s)     # every step must plan before anything starts
        self.zc.check(zi, program, steps or [wave])
        max_ms = self.lim["session_max_s"] * 1000
        if duration_ms is None:
            duration_ms = self.settings.config["session_s"] * 1000
        if duration_ms > max_ms:
            raise ProtoError(C.E_OUT_OF_RANGE, "duration_s above the board maximum %d s" % self.lim["session_max_s"])
        duration_ms = self.zc.session_ms(zi, duration_ms)
        self.requested_level = level
        level, self.start_bound = self.zc.start_level(level, self.settings.config.get("start_low"))
        target = self.settings.levels[level - 1]
        # --- commit
        self.zc.i = zi
        self.amp.set_zone_limit(self.zc.zone()["limit_ua"])
        self.level = level
        self.target_ua = target
        self.program = program
        self.steps = steps
        self.step_i = 0
        self.step_t0 = now
        self.session_ms = duration_ms
        self.t0 = now
        self.rampdown_t0 = None
        self.sup.clear_pause()
        self.hv.value(1)
        self.amp.set_ua(0)
        self._apply_wave(wave, plan, now)
        self.retarget(target, now, self.burst_ramp_ms)
        self.state = C.ST_RAMPING
        return plan

    def _apply_wave(self, wave, plan, now):
        self.sup.disarm()
        self.wave = wave
        self.plan = plan
        self.burst_on_ms = wave["burst_on_ms"]
        self.burst_off_ms = wave["burst_off_ms"]
        self.burst_ramp_ms = wave.get("burst_ramp_ms", 0)
        self.burst_is_on = True
        self.burst_t0 = now
        self.engine.load(plan)
        self.engine.gate(True)
        self.sup.arm()

    def stop(self, reason, now):
        was = self.state
        self.idle_output()
        self.state = C.ST_IDLE
        if was in STIM_STATES:
            self.zc.remember(self.level)
            self.emit(C.EV_SESSION_END, {"reason": reason, "elapsed_s": time.ticks_diff(now, self.t0) // 1000})

    def enter_fault(self, reason, measured_ua, now, detail=None):
        if self.state in STIM_STATES:
            self.zc.remember(self.level)
        self.idle_output()
        self.fault = {"reason": reason, "measured_ua": measured_ua, "limit_ua": self.sup.trip_ua}
        if detail:
            self.fault["detail"] = detail
        self.state = C.ST_FAULT
        fields = dict(self.fault)
        lat = self.sup.f[2]
        fields["t_trip_us"] = lat
        self.emit(C.EV_TRIP, fields)

    # ---------------------------------------------------------------- periodic work
    def step(self, now):
        sup = self.sup
        if sup.f[SAMPLES] != self.seen_n:     # when the supervisor last measured (status reports its age)
            self.seen_n = sup.f[SAMPLES]
            self.seen_ms = now
        # S4/S5 latched by the IRQ paths: report and hold
        if sup.stalled():
            sup.stall_trip()            # no scan for longer than the sample ring holds: no unsupervised output
        tr = sup.tripped()
        if tr and self.state != C.ST_FAULT:
            if tr == TRIP_OVER_CURRENT:
                self.enter_fault(C.TRIP_OVER_CURRENT, B.adc_raw_to_ua(self.board, sup.f[1]), now)
            elif tr == TRIP_STALL:
                self.enter_fault(C.TRIP_SUPERVISOR_STALL, sup.measured_ua(), now)
            else:
                self.enter_fault(C.TRIP_FAULT_N, sup.measured_ua(), now)
        # S10
        chg = self.gpio_in & self.charging_bit
        if chg and self.state in STIM_STATES:
            self.stop(C.END_CHARGING, now)
        if self.state == C.ST_IDLE and chg:
            self.state = C.ST_CHARGING
        elif self.state == C.ST_CHARGING and not chg:
            self.state = C.ST_IDLE
        if self.state not in STIM_STATES:
            return
        el = time.ticks_diff(now, self.t0)
        # S9 session limit: ramp down over session_rampdown_ms, then stop
        if self.rampdown_t0 is None and el >= self.session_ms:
            self.rampdown_t0 = now
            self.rampdown_from = self.amp.applied_ua
            self.amp.ramp_ms = 0
        if self.rampdown_t0 is not None:
            rd = time.ticks_diff(now, self.rampdown_t0)
            total = self.lim["session_rampdown_ms"]
            if rd >= total or self.state == C.ST_PAUSED:
                self.stop(C.END_TIMEOUT, now)
                return
            ua = self.rampdown_from * (total - rd) // total
            if ua < self.amp.applied_ua and sup.quiet_now():
                self.amp.set_ua(ua)
            sup.set_setpoint(self.amp.applied_ua)
            return
        # S7 contact
        if sup.paused():
            if self.state != C.ST_PAUSED:
                self.state = C.ST_PAUSED
                f = sup.f
                self.emit(C.EV_PAUSE, {"reason": C.PAUSE_NO_CONTACT,
                                       "z_ohm": sup.z_ohm(f[11], f[12]),
                                       "i_ua": B.adc_raw_to_ua(self.board, f[11]),
                                       "v_mv": B.adc_raw_to_electrode_mv(self.board, f[12]),
                                       "setpoint_ua": B.adc_raw_to_ua(self.board, f[8])})
                self.last_samples = sup.f[5]
                sup.set_setpoint(0)
            elif sup.f[5] != self.last_samples and sup.contact_back():
                # anti-shock: from zero, over at least recontact_ramp_ms
                sup.clear_pause()
                self.amp.set_ua(0)
                self.retarget(self.target_ua, now, self.lim["recontact_ramp_ms"])
                self.state = C.ST_RAMPING
                self.emit(C.EV_RESUME, {"reason": "contact", "i_ua": sup.measured_ua(),
                                        "ramp_ms": self.amp.ramp_ms})
            else:
                self.last_samples = sup.f[5]
            return
        # program steps
        if self.steps and len(self.steps) > 1:
            st = self.steps[self.step_i]
            if st["duration_ms"] and time.ticks_diff(now, self.step_t0) >= st["duration_ms"]:
                self.step_i = (self.step_i + 1) % len(self.steps)
                self.step_t0 = now
                w = self.steps[self.step_i]
                self._apply_wave(w, self._plan(w), now)
                self.emit(C.EV_STEP, {"program": self.program, "step": self.step_i})
        # bursts: whole chains started/stopped at the edges, on the burst clock (edges are scheduled instants, so
        # a late loop does not stretch every window after it); the on edge is prepared ahead and fired so that the
        # first pair starts at the edge
        if self.burst_on_ms:
            bt = time.ticks_diff(now, self.burst_t0)
            if self.burst_is_on and bt >= self.burst_on_ms:
                self.burst_is_on = False
                self.burst_t0 = self._burst_edge(now, self.burst_on_ms)
                self.sup.disarm()
                self.engine.gate(False)
                if self.burst_ramp_ms:
                    self.amp.set_ua(0)
            elif not self.burst_is_on:
                if bt >= self.burst_off_ms - BURST_PREPARE_MS:
                    self.engine.prepare()
                    bt = time.ticks_diff(time.ticks_ms(), self.burst_t0)
                if bt >= self._burst_fire_ms():
                    self.burst_is_on = True
                    self.burst_t0 = self._burst_edge(now, self.burst_off_ms)
                    self.engine.gate(True)          # fires what prepare() set up (or does both, if it could not)
                    self.sup.arm()
                    if self.burst_ramp_ms:
                        self.retarget(self.target_ua, now, self.burst_ramp_ms)
        # S8 ramps: a step every iteration, so each one is small, between pairs: the loop waits for the quiet
        # window (<= ~6 ms; IRQs keep the supervisor running). Skipping the step outside the window instead let the
        # loop lock to the pair period (4 ms loop at 250 Hz, or a slow iteration matching the period) and apply the
        # whole ramp in one step when it finally got in (S8 broken: 96 uA in one pair).
        if self.burst_is_on and self.amp.ramping():
            self.wait_quiet()
            self.amp.tick(time.ticks_ms())
        sup.set_setpoint(self.amp.applied_ua if self.burst_is_on else 0)
        self.state = C.ST_RAMPING if self.amp.ramping() else C.ST_RUNNING

    def _burst_fire_ms(self):
        """Into the burst-off window, the instant the prepared burst is fired: its first pair then starts at the
        window's end (gated trains lead with two idle periods)."""
        return self.burst_off_ms - self.engine.lead_us() // 1000

    def _burst_edge(self, now, window_ms):
        """The instant the burst window that began at burst_t0 ends: scheduled, or now when the loop was held up
        for longer than BURST_RESYNC_MS."""
        t = time.ticks_add(self.burst_t0, window_ms)
        return now if time.ticks_diff(now, t) > BURST_RESYNC_MS else t

    def wait_quiet(self):
        # sleep_ms, not a busy-wait: the virtual board's unix engine runs timer IRQs only at its sleeps and
        # peripheral calls, so a sleep_us spin there hid the supervisor's looks (all late). A window narrower than
        # the 1 ms step may be missed: the step then comes at the limit, as small as any other.
        sup = self.sup
        t0 = time.ticks_ms()
        while not sup.quiet_now() and time.ticks_diff(time.ticks_ms(), t0) < QUIET_WAIT_MAX_MS:
            time.sleep_ms(1)

    # ---------------------------------------------------------------- requests
    def handle_line(self, line, now):
        """One reply per line, whatever happens. A command returns its reply fields, or (when it must build its
        reply before a commit point, see cmd_levels_set) the finished reply line."""
        rid = None
        lk = self.lk
        if lk is not None:        # a mac covers the line's bytes; kid: who signed it (one attribute: heap)
            lk.line = line
            lk.kid = None
        try:
            if isinstance(line, ProtoError):
                self.send(P.reply_err(None, line.code, line.detail))
                return
            try:
                rid, cmd, req = P.parse(line)
                fn = getattr(self, "cmd_" + cmd, None) if len(cmd) <= 32 else None
                if fn is None and cmd in C.LOCK_COMMANDS:
                    fn = self.lock_cmd(cmd)
                if fn is None:
                    raise ProtoError(C.E_UNKNOWN_CMD, "unknown command", rid)
                fields = fn(req, now)
                self.send(fields if isinstance(fields, str) else P.reply_ok(rid, fields))
            except ProtoError as e:
                self.send(P.reply_err(e.rid if e.rid is not None else rid, e.code, e.detail))
            except (ConfigError, AmplitudeError) as e:
                self.send(P.reply_err(rid, e.code, e.detail))
            except OSError as e:
                self.send(P.reply_err(rid, C.E_STORAGE, "storage: %s" % e))
        except MemoryError:
            # the failed request's garbage can go now; if even the short error reply cannot be built, the fixed
            # one still tells the host that its request failed
            gc.collect()
            try:
                self.send(P.reply_err(rid, C.E_INTERNAL, "out of memory"))
            except MemoryError:
                self.send(OOM_REPLY)

    # ---------------------------------------------------------------- production lock (issue 14, lockcmd.py)
    def authorize(self, req, what):
        """The one check every privileged request makes before anything else: on a locked unit a valid mac for the
        current nonce, else ProtoError (auth_required / bad_nonce / auth_failed). Returns the signing key id (None
        when unlocked), also in auth_kid for the audit trail."""
        if self.lk is None:
            return None
        import lockcmd
        kid = self.lk.kid = lockcmd.authorize(self, req, what)
        return kid

    @property
    def auth_kid(self):
        return self.lk.kid if self.lk is not None else None

    def lock_cmd(self, cmd):
        import lockcmd
        f = lockcmd.COMMANDS[cmd]
        return lambda req, now: f(self, req)

    def cmd_hello(self, req, now):
        P.check_keys(req, ())
        b = self.board
        lk = self.lk
        return {"locked": lk is not None, "key_id": lk.key_id if lk else None, "nonce": lk.nonce() if lk else None,
"fw": C.FW_VERSION, "proto": C.PROTOCOL_VERSION, "board": b.get("name"),
                "uid": "".join("%02x" % x for x in machine.unique_id()), "cap_ua": self.amp.cap_ua,
                "ceiling_ua": C.FIRMWARE_CEILING_UA, "levels_ua": self.settings.levels,
                "programs": sorted(self.programs), "reset_cause": machine.reset_cause(),
                "config_status": self.settings.status, "bundle": self.bundle}

    def cmd_status(self, req, now):
        P.check_keys(req, ())
        stim = self.state in STIM_STATES
        el = time.ticks_diff(now, self.t0) // 1000 if stim else 0
        contact = None
        if stim:
            contact = self.state != C.ST_PAUSED
        return self.zone_fields(self.target_ua if stim else 0, {
                "state": self.state, "level": self.level, "setpoint_ua": self.amp.applied_ua,
                "target_ua": self.amp.bound(self.target_ua)[0] if stim else 0, "program": self.program if stim else None,
                "elapsed_s": el, "remaining_s": max(0, self.session_ms // 1000 - el) if stim else 0,
                "fault": self.fault, "charging": bool(self.charging_pin.value()), "contact": contact,
                "i_ua": self._status_i_ua(stim, now), "i_age_ms": time.ticks_diff(now, self.seen_ms) if stim else 0,
                "burst": self.burst_phase(), "samples": self.sup.f[5], "missed": self.sup.f[6], "late": self.sup.f[20],
                "sample_ctr": [self.sup.f[14], self.sup.f[15]], "pairs": self.sup.f[13], "scan_us": self.sup.f[36]})

    def _status_i_ua(self, stim, now):
        if not stim:
            return 0
        if time.ticks_diff(now, self.seen_ms) > self.fresh_ms():
            return None               # no fresh measurement (burst off, paused supervisor, late samples)
        return self.sup.measured_ua()

    def cmd_config_get(self, req, now):
        P.check_keys(req, ())
        return {"config": self.settings.config, "status": self.settings.status}

    def cmd_config_set(self, req, now):
        self.authorize(req, "config_set")
        P.check_keys(req, ("config",))
        if "config" not in req:
            raise ProtoError(C.E_BAD_REQUEST, "config is required")
        # atomic from the host's view, as cmd_levels_set: the reply exists before the commit point
        new, record = self.settings.prepare_config(req["config"])
        reply = P.reply_ok(req.get("id"), {"config": new})
        self.settings.commit_config(new, record)
        return reply

    def cmd_levels_get(self, req, now):
        P.check_keys(req, ())
        return {"levels_ua": self.settings.levels}

    def _operator(self, req):
        op = req.get("operator")
        if op is None:
            return "unknown"
        if not isinstance(op, str):
            raise ProtoError(C.E_BAD_TYPE, "operator must be a string")
        if not op.strip():
            raise ProtoError(C.E_OUT_OF_RANGE, "operator must not be empty")
        if len(op) > C.OPERATOR_MAX_LEN:
            raise ProtoError(C.E_OUT_OF_RANGE, "operator longer than %d" % C.OPERATOR_MAX_LEN)
        return op

    def cmd_calib_get(self, req, now):
        P.check_keys(req, ())
        import calset
        try:
            return calset.cmd_get(self)
        finally:
            calset.drop()

    def cmd_calib_set(self, req, now):
        import calset
        try:
            return calset.cmd_set(self, req)
        finally:
            calset.drop()

    def cmd_levels_set(self, req, now):
        self.authorize(req, "levels_set")
        P.check_keys(req, ("levels_ua", "level", "ua", "operator", "utc"))
        op = self._operator(req)
        utc = P.get_str(req, "utc", 40)       # the host's UTC time: the board has no calendar clock
        old = list(self.settings.levels)
        if "levels_ua" in req:
            if "level" in req or "ua" in req:
                raise ProtoError(C.E_BAD_REQUEST, "give levels_ua, or level and ua")
            new = req["levels_ua"]
        else:
            lv = P.get_int(req, "level", 1, len(old), required=True)
            ua = req.get("ua")
            if not _is_int(ua):
                raise ProtoError(C.E_BAD_TYPE if "ua" in req else C.E_BAD_REQUEST, "ua must be an integer")
            new = list(old)
            new[lv - 1] = ua
        # Atomic from the host's view: everything that can fail or allocate (validation, the encoded record, both
        # possible replies) is done before the commit point (the rename in store.commit). A failure before it
        # leaves the old table stored and applied (error reply); after it nothing can turn the reply into an error.
        applied, record = self.settings.prepare_levels(new)
        changed = [i for i in range(len(applied)) if applied[i] != old[i]]
        rid = req.get("id")
        reply = P.reply_ok(rid, {"levels_ua": applied, "audited": True})
        reply_unaudited = P.reply_ok(rid, {"levels_ua": applied, "audited": False})
        self.settings.commit_levels(applied, record)
        if self.state in STIM_STATES and applied[self.level - 1] != self.target_ua:
            self.target_ua = applied[self.level - 1]
            if self.state != C.ST_PAUSED:
                self.retarget(self.target_ua, now)     # integer work, no allocation
        for i in changed:
            try:
                z = self.zc.zone()
                self.audit.record(op, i + 1, old[i], applied[i], utc, z["name"], z["limit_ua"], self.auth_kid)
            except (MemoryError, OSError):
                reply = reply_unaudited      # the table is saved; the reply says its audit entry is not
        return reply

    def cmd_start(self, req, now):
        P.check_keys(req, ("level", "program", "phase_us", "gap_us", "rate_hz", "burst_on_s", "burst_off_s",
                           "duration_s", "zone"))
        level = P.get_int(req, "level", 1, len(self.settings.levels), self.settings.config["default_level"])
        program = P.get_str(req, "program", 32)
        wave = self._wave_from(req)
        if wave is not None and program is not None:
            raise ProtoError(C.E_BAD_REQUEST, "give a program or a waveform, not both")
        dur = P.get_num_milli(req, "duration_s", 1000, self.lim["session_max_s"] * 1000)
        zone = P.get_str(req, "zone", 16)
        plan = self.start(level, program, wave, dur, now, zone)
        clk = plan["clk_per_us"]
        return self.zone_fields(self.target_ua, {
                "state": self.state, "level": self.level, "target_ua": self.amp.bound(self.target_ua)[0],
                "program": self.program, "requested_level": self.requested_level, "start_bound": self.start_bound,
                "phase_us": plan["phase_ns"] / 1000, "gap_us": plan["gap_ns"] / 1000,
                "rate_hz": self.sys_hz / plan["period_ticks"], "period_us": plan["period_us"],
                "div": plan["div"], "period_ticks": plan["period_ticks"],
                "pair_ticks": plan["pair_counts"] * plan["div"], "clk_per_us": clk,
                "burst_on_s": self.burst_on_ms / 1000, "burst_off_s": self.burst_off_ms / 1000,
                "session_s": self.session_ms // 1000})

    def cmd_stop(self, req, now):
        P.check_keys(req, ())
        if self.state in STIM_STATES:
            self.stop(C.END_STOP, now)
        else:
            self.idle_output()
        return {"state": self.state}

    def cmd_set_level(self, req, now):
        P.check_keys(req, ("level", "ua"))
        n = len(self.settings.levels)
        lv = P.get_int(req, "level", 1, n, required=True)
        ua = req.get("ua")
        if ua is not None:
            self.authorize(req, "set_level ua")     # a free amplitude is tuning: locked users choose levels only
            if not _is_int(ua):
                raise ProtoError(C.E_BAD_TYPE, "ua must be an integer")
            if ua > self.amp.cap_ua:
                raise ProtoError(C.E_OVER_CAP, "%d uA above the cap %d uA" % (ua, self.amp.cap_ua))
            if ua < 0:
                raise ProtoError(C.E_OUT_OF_RANGE, "ua must be >= 0")
            target = ua
        else:
            target = self.settings.levels[lv - 1]
        self.level = lv
        if self.state in STIM_STATES:
            self.target_ua = target
            if self.state != C.ST_PAUSED and self.rampdown_t0 is None:
                self.retarget(target, now)
        return self.zone_fields(target, {"level": lv, "target_ua": self.amp.bound(target)[0], "state": self.state})

    # ---------------------------------------------------------------- treatment zones (issue 17, zonectl.py)
    def zone_fields(self, level_ua, d):
        """Add the zone part of start / set_level / set_zone / status replies to d: level_ua is what the level (or
        trial) asks, `bound` says whether it or the zone limit is what the output is held to."""
        z = self.zc.zone()
        d["zone"] = z["name"]
        d["zone_limit_ua"] = z["limit_ua"]
        d["level_ua"] = level_ua
        d["bound"] = self.amp.bound(level_ua)[1]
        return d

    def cmd_zones(self, req, now):
        P.check_keys(req, ())
        return {"zones": self.zc.tbl, "zone": self.zc.zone()["name"], "default": self.zc.tbl[self.zc.default_i]["name"]}

    def cmd_set_zone(self, req, now):
        P.check_keys(req, ("zone",))
        zi = self.zc.lookup(P.get_str(req, "zone", 16, required=True))
        self.set_zone(zi, now)
        stim = self.state in STIM_STATES
        return self.zone_fields(self.target_ua if stim else 0, {
            "state": self.state, "setpoint_ua": self.amp.applied_ua,
            "target_ua": self.amp.bound(self.target_ua)[0] if stim else 0,
            "session_s": self.session_ms // 1000 if stim else 0})

    def set_zone(self, zi, now):
        """Choose zone zi. While stimulating: refused (zone_refused, nothing changes) when the running program or
        waveform is not allowed there; else the new limit holds at once (a lower one drops the output now, a
        higher one is reached by an S8 ramp) and the zone may shorten the session."""
        stim = self.state in STIM_STATES
        if stim:
            self.zc.check(zi, self.program, self.steps or [self.wave])
        self.zc.i = zi
        z = self.zc.zone()
        self.amp.set_zone_limit(z["limit_ua"])
        if stim:
            self.session_ms = self.zc.session_ms(zi, self.session_ms - time.ticks_diff(now, self.t0)) + \
                time.ticks_diff(now, self.t0)
            if self.state != C.ST_PAUSED and self.rampdown_t0 is None:
                self.retarget(self.target_ua, now)     # as set_level does
            self.sup.set_setpoint(self.amp.applied_ua)
        self.emit(C.EV_ZONE, {"zone": z["name"], "zone_limit_ua": z["limit_ua"], "setpoint_ua": self.amp.applied_ua})
        self.ui.show_zone(now, zi + 1)

    def cmd_clear_fault(self, req, now):
        P.check_keys(req, ())
        self.clear_fault()
        return {"state": self.state}

    def clear_fault(self):
        if self.sup.fault_pin_asserted():
            raise ProtoError(C.E_FAULT_LATCHED, "FAULT_N still asserted")
        self.sup.clear_trip()
        self.fault = None
        if self.state == C.ST_FAULT:
            self.state = C.ST_IDLE

    def cmd_telemetry(self, req, now):
        P.check_keys(req, ("on", "rate_hz"))
        on = P.get_bool(req, "on", True)
        rate = P.get_int(req, "rate_hz", 1, C.TELEMETRY_HZ_MAX, 20)
        self._tel_stop()
        self.tel_on = on
        if not on:
            return {"on": False, "rate_hz": 0}
        # Sampling runs from a hard timer into a preallocated ring; the loop sends what accumulated in batches,
        # so the sample rate does not depend on the loop period and a slow iteration loses nothing.
        per_us = (1000000 + rate // 2) // rate
        if self.tel_i is None:
            self.tel_i = array("H", bytes(2 * TEL_RING))
            self.tel_v = array("H", bytes(2 * TEL_RING))
            self.tel_a = array("H", bytes(2 * TEL_RING))
        self.tel_last_n = self.sup.f[SAMPLES]
        self.tel_last_us = time.ticks_us()
        self.tel_dt_us = per_us
        self.tel_w = 0
        self.tel_r = 0
        self.tel_stim = self.state in STIM_STATES
        self.tel_r_us = time.ticks_add(time.ticks_us(), per_us)
        self.tel_timer = Timer(mode=Timer.PERIODIC, period=per_us, tick_hz=1000000, callback=self._tel_cb,
                               hard=True)
        applied = 1000000 / per_us
        return {"on": True, "rate_hz": int(applied) if applied == int(applied) else applied, "dt_us": per_us}

    def _tel_stop(self):
        t = self.tel_timer
        self.tel_timer = None
        if t is not None:
            t.deinit()

    def _tel_cb(self, t):
        # Hard IRQ: copy the supervisor's last in-phase I/V samples (raw ADC counts) into the ring; no allocation.
        w = self.tel_w
        k = w % TEL_RING
        if self.tel_stim:
            f = self.sup.f
            self.tel_i[k] = f[I_RAW]
            self.tel_v[k] = f[V_RAW]
            # how old that I/V pair is: the supervisor holds its last value through burst-off and pauses
            n = f[SAMPLES]
            now = time.ticks_us()
            if n != self.tel_last_n:
                self.tel_last_n = n
                self.tel_last_us = now
            age = time.ticks_diff(now, self.tel_last_us) // 1000
            self.tel_a[k] = age if age < 65535 else 65535
        else:
            self.tel_i[k] = 0
            self.tel_v[k] = 0
            self.tel_a[k] = 0
        self.tel_w = (w + 1) & TEL_COUNT_MASK

    def cmd_audit(self, req, now):
        P.check_keys(req, ("clear",))
        if P.get_bool(req, "clear", False):
            self.authorize(req, "audit clear")
            self.audit.clear()
        return {"entries": self.audit.entries}

    def cmd_selftest(self, req, now):
        P.check_keys(req, ("probe", "expect_ohm", "tol_pct"))
        expect = P.get_int(req, "expect_ohm", 1, 1000000)
        tol = P.get_int(req, "tol_pct", 1, 50, C.SELFTEST_TOL_PCT)
        probe = P.get_bool(req, "probe", expect is not None)
        if self.state in STIM_STATES:
            raise ProtoError(C.E_BUSY, "stop stimulation first")
        checks = []

        def chk(name, ok, detail=""):
            checks.append({"name": name, "ok": bool(ok), "detail": detail})

        try:
            B.validate(self.board)
            chk("board_profile", True)
        except B.BoardError as e:
            chk("board_profile", False, str(e))
        chk("config", self.settings.status != "config_corrupt", self.settings.status)
        chk("fault_n_idle", not self.sup.fault_pin_asserted())
        i_idle = self.sup.adc_i.read_u16() >> 4
        chk("i_sense_idle", B.adc_raw_to_ua(self.board, i_idle) <= 5, "%d uA" % B.adc_raw_to_ua(self.board, i_idle))
        chk("calibration", calib.status in ("ok", "none"), calib.status)
        p = planner.plan(200, 100, 2000, self.sys_hz)
        chk("planner_balance", p["cc_a"] == p["pair_counts"] - p["cc_b"])
        try:
            self.amp.set_ua(self.amp.cap_ua + 1)
            chk("cap_refused", False, "above-cap amplitude accepted")
        except AmplitudeError:
            chk("cap_refused", True)
        self.amp.force_zero()
        chk("not_charging", not self.charging_pin.value())
        out = {"checks": checks}
        if probe:
            lo, hi = C.SELFTEST_Z_MIN_OHM, self.lim["z_max_ohm"]
            if expect is not None:
                lo, hi = expect * (100 - tol) // 100, expect * (100 + tol) // 100
            # (a corrupt config file does not block the probe: the device runs on the board's defaults, and the
            # limits the probe obeys come from the board profile)
            if self.state == C.ST_FAULT or self.sup.tripped() or \
                    not all(c["ok"] for c in checks if c["name"] != "config"):
                chk("output_path", False, "not probed: an earlier check failed or a fault is latched")
            else:
                m = self._probe_output()
                z = m["measured_ohm"]
                chk("output_path", z is not None and lo <= z <= hi,
                    "%s at %d uA (accept %d..%d ohm)%s" % ("%d ohm" % z if z is not None else "no current", m["probe_ua"],
                                                           lo, hi, (", " + m["stopped"]) if m["stopped"] else ""))
                m["accept_ohm"] = [lo, hi]
                out.update(m)
        out["passed"] = all(c["ok"] for c in checks)
        return out

    def _probe_output(self):
        """selftest output path: a few pairs at a small current into whatever is on the electrodes, HV on only for
        them. I_SENSE and V_ELECTRODE come from the supervisor's own phase-locked, counter-bracketed samples (with
        S4/S7 armed as in any session); Z = sum(V) / sum(I) over SELFTEST_LOOKS samples. Leaves the output idle."""
        sup = self.sup
        f = sup.f
        ua = min(C.SELFTEST_PROBE_UA, self.amp.cap_ua // 2)
        plan = planner.plan(200, 50, 500000, self.sys_hz)      # 200 us phases at 500 Hz: room for the V read, a look per pair
        si = sv = n = 0
        stopped = None
        applied = 0
        max_ms = 2 * C.SELFTEST_LOOKS * 2           # twice the looks' time at 500 Hz (the watchdog fed meanwhile)
        try:
            sup.clear_pause()
            applied = self.amp.set_ua(ua)
            sup.set_setpoint(applied)
            self.hv.value(1)
            time.sleep_us(sup.settle_us)                       # ISET RC settled before the first pair
            sup.disarm()
            self.engine.load(plan)
            self.engine.gate(True)
            sup.arm()
            last = f[SAMPLES]
            t0 = time.ticks_ms()
            while n < C.SELFTEST_LOOKS and time.ticks_diff(time.ticks_ms(), t0) < max_ms:
                time.sleep_ms(1)
                if self.wdt is not None:
                    self.wdt.feed()             # (this loop is the main loop's work now, bounded by max_ms)
                s = f[SAMPLES]
                if s == last:
                    continue
                last = s
                if sup.tripped():
                    stopped = "supervisor stall" if sup.tripped() == TRIP_STALL else "over-current trip"
                    break
                if sup.paused():
                    stopped = "no contact"
                    break
                if f[V_OK]:
                    si += f[I_RAW]
                    sv += f[V_RAW]
                    n += 1
        finally:
            self.idle_output()
            sup.clear_pause()
        b = self.board
        # Z from the calibrated current (calib.py) and the electrode voltage, both averaged over the looks
        dua = calib.raw_to_dua(si, n) if n else 0
        dmv = calib.raw_to_dmv(sv, n) if n else 0
        mv = (dmv + 5) // 10 if dmv > 0 else 0
        z = dmv * 1000 // dua if n and dua > 0 and dmv > 0 else None
        return {"probe_ua": applied, "looks": n, "measured_ohm": z, "stopped": stopped,
                "measured_ua": (dua + 5) // 10 if dua > 0 else 0,
                "measured_mv": mv}

    def cmd_bootloader(self, req, now):
        self.authorize(req, "bootloader")      # BOOTSEL over USB would let any host reflash a locked unit
        P.check_keys(req, ())
        self.idle_output()
        self.pending = "bootloader"
        return {"state": "bootloader"}

    def cmd_reset(self, req, now):
        P.check_keys(req, ())
        self.idle_output()
        self.pending = "reset"
        return {"state": "reset"}

    # ---------------------------------------------------------------- buttons and telemetry
    def on_button(self, name, now):
        self.emit(C.EV_BUTTON, {"button": name})
        self.ui.buzz(now)
        try:
            if name == "power":
                if self.state in STIM_STATES:
                    self.stop(C.END_STOP, now)
                elif self.state == C.ST_FAULT:
                    self.clear_fault()
                else:
                    self.start(self.level, None, None, None, now)
            elif self.zc.button and name == self.zc.button + "_long":
                self.zone_button(now)
            elif name in ("up", "down") and self.state in STIM_STATES:
                lv = self.level + (1 if name == "up" else -1)
                if 1 <= lv <= len(self.settings.levels) and self.rampdown_t0 is None:
                    self.level = lv
                    self.target_ua = self.settings.levels[lv - 1]
                    if self.state != C.ST_PAUSED:
                        self.retarget(self.target_ua, now)
                    self.emit(C.EV_LEVEL, {"level": lv, "target_ua": self.target_ua})
        except ProtoError as e:
            self.emit(C.EV_BUTTON, {"button": name, "refused": e.code})

    def zone_button(self, now):
        """Long press of the profile's zone button: the next zone in profile order. While stimulating a program the
        new zone does not allow, the session stops first (the user is moving the device there)."""
        zi = self.zc.next_index()
        if self.state in STIM_STATES:
            try:
                self.zc.check(zi, self.program, self.steps or [self.wave])
            except ProtoError:
                self.stop(C.END_ZONE, now)
        self.set_zone(zi, now)

    def fresh_ms(self, slack_ms=2 * QUIET_LOOP_MS):
        """A current sample older than this is not a measurement of the output now: two repetition periods (the
        supervisor looks once or more per pair) plus slack (two loop periods when the loop noted the sample)."""
        per_us = self.plan["period_us"] if self.plan else 0
        return 2 * per_us // 1000 + slack_ms

    def burst_phase(self):
        """"on"/"off" while a burst waveform runs, else None."""
        if self.state not in STIM_STATES or not self.burst_on_ms:
            return None
        return "on" if self.burst_is_on else "off"

    def telemetry(self, now):
        """Send the samples the timer took since the last call, as batches: {seq (of the first), n, t0_us, dt_us,
        i_ua[], v_mv[]} plus setpoint_ua, state and samples at sending time. Samples the ring overwrote before
        they were sent are skipped in seq, so the host sees the loss."""
        if not self.tel_on or self.tel_timer is None:
            return
        self.tel_stim = self.state in STIM_STATES
        self.tel_next = time.ticks_add(now, TEL_SEND_MS)
        w = self.tel_w
        pending = (w - self.tel_r) & TEL_COUNT_MASK
        if pending > TEL_RING - 1:      # the IRQ overwrote the oldest: skip them (seq shows the gap)
            lost = pending - (TEL_RING - 1)
            self.tel_r = (self.tel_r + lost) & TEL_COUNT_MASK
            self.tel_r_us = time.ticks_add(self.tel_r_us, lost * self.tel_dt_us)
            self.tel_seq += lost
            pending = TEL_RING - 1
        b = self.board
        fresh_ms = self.fresh_ms(10)       # (the sampling IRQ notes a new supervisor sample within one dt)
        while pending > 0:
            n = pending if pending < TEL_BATCH_MAX else TEL_BATCH_MAX
            r = self.tel_r
            ii = []
            vv = []
            aa = []
            for j in range(n):
                k = (r + j) % TEL_RING
                a = self.tel_a[k]
                aa.append(a)
                if a > fresh_ms:            # no fresh measurement: say so (null), never repeat a stale value
                    ii.append(None)
                    vv.append(None)
                else:
                    ii.append(B.adc_raw_to_ua(b, self.tel_i[k]))
                    vv.append(B.adc_raw_to_electrode_mv(b, self.tel_v[k]))
            stim = self.state in STIM_STATES
            self.emit(C.EV_TELEMETRY, {"seq": self.tel_seq + 1, "n": n,
                                       "t0_us": self.tel_r_us,
                                       "dt_us": self.tel_dt_us, "i_ua": ii, "v_mv": vv, "age_ms": aa,
                                       "setpoint_ua": self.amp.applied_ua, "state": self.state,
                                       "samples": self.sup.f[5], "program": self.program if stim else None,
                                       "burst": self.burst_phase(), "zone": self.zc.zone()["name"],
                                       "zone_limit_ua": self.amp.zone_ua})
            self.tel_seq += n
            self.tel_r = (r + n) & TEL_COUNT_MASK
            self.tel_r_us = time.ticks_add(self.tel_r_us, n * self.tel_dt_us)
            pending -= n

    # ---------------------------------------------------------------- main loop
    def run(self):
        self.pending = None
        poller = select.poll()
        poller.register(sys.stdin, select.POLLIN)
        binary_in = hasattr(sys.stdin, "buffer")
        rd = sys.stdin.buffer if binary_in else sys.stdin
        reader = self.reader
        self.emit(C.EV_BOOT, {"fw": C.FW_VERSION, "board": self.board.get("name"),
                              "reset_cause": machine.reset_cause(), "config_status": self.settings.status})
        if self.settings.status == "config_corrupt":
            self.emit(C.EV_CONFIG_CORRUPT, {"detail": self.settings.problem})
        self.wdt = machine.WDT(timeout=self.lim["wdt_timeout_ms"])
        budget = self.lim["wdt_timeout_ms"] // 2
        t_fed = time.ticks_ms()
        while True:
            t_start = time.ticks_ms()
            # Requests, byte by byte (stdin can only promise one byte), for at most READ_BUDGET_US: a flood or a
            # huge line waits in the USB buffer instead of holding off the safety work below and the watchdog.
            t_rd = time.ticks_us()
            n = 0
            while n < MAX_BYTES_PER_LOOP and poller.poll(0):
                b = rd.read(1)
                if not b:
                    break
                n += 1
                item = reader.feed_byte(b[0] if binary_in else ord(b))
                if item is not None:
                    self.handle_line(item, time.ticks_ms())
                    if time.ticks_diff(time.ticks_us(), t_rd) >= READ_BUDGET_US:
                        break
                elif n & 15 == 0 and time.ticks_diff(time.ticks_us(), t_rd) >= READ_BUDGET_US:
                    break
            now = time.ticks_ms()
            self.gpio_in = mem32[R.SIO_GPIO_IN] & 0x3FFFFFFF     # buttons + CHARGING in one read
            for name in self.ui.poll(now, self.gpio_in):
                self.on_button(name, now)
            self.step(now)
            self.ui.show(now, self.state)
            self.telemetry(now)
            if self.pending:
                self.idle_output()
                time.sleep_ms(20)
                if self.pending == "bootloader":
                    machine.bootloader()
                machine.reset()
            # S11: feed only after a whole iteration that finished within half the watchdog period
            t_end = time.ticks_ms()
            if time.ticks_diff(t_end, t_start) < budget and time.ticks_diff(t_end, t_fed) >= WDT_FEED_MS:
                self.wdt.feed()
                t_fed = t_end
            poller.poll(self.loop_wait_ms(time.ticks_ms()))

    def loop_wait_ms(self, now):
        """How long the loop may sleep: LOOP_MS while something changes from one iteration to the next, else up to
        QUIET_LOOP_MS but never past the next deadline (telemetry, session end, program step, burst edge). Input
        on stdin ends the sleep early; safety does not wait for the loop (hard IRQs, safety.py)."""
        if self.ui.busy() or self.state == C.ST_RAMPING or self.state == C.ST_PAUSED or self.rampdown_t0 is not None:
            return LOOP_MS
        wait = QUIET_LOOP_MS
        if self.tel_on:
            wait = min(wait, time.ticks_diff(self.tel_next, now))
        if self.state == C.ST_RUNNING:
            wait = min(wait, time.ticks_diff(time.ticks_add(self.t0, self.session_ms), now))
            if self.steps and len(self.steps) > 1 and self.steps[self.step_i]["duration_ms"]:
                end = time.ticks_add(self.step_t0, self.steps[self.step_i]["duration_ms"])
                wait = min(wait, time.ticks_diff(end, now))
            if self.burst_on_ms:
                if self.burst_is_on:
                    edge = self.burst_on_ms
                elif self.engine.fire_mask:
                    edge = self._burst_fire_ms()
                else:
                    edge = self.burst_off_ms - BURST_PREPARE_MS
                wait = min(wait, time.ticks_diff(time.ticks_add(self.burst_t0, edge), now))
        return wait if wait > 1 else 1


def run(board):
    app = App(board)
    app.run()
