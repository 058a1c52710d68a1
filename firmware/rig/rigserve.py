# Rig protocol server for the HIL rig Pico: the same JSON lines as the virtual rig (host/picostim/sim/rigproto.py).
#   request {"id": 7, "op": "capture", "kw": {"duration_s": 1.0}}
#   reply   {"id": 7, "ok": true, "result": ...} | {"id": 7, "ok": false, "error": <code>, "detail": ".."}
# Codes: bad_json, line_too_long, bad_request, unknown_op, rig_error, internal. A bad line changes nothing.
#
# This rig has no HV_EN sense: captures report hv_on_ns = null (unknown), never 0.
# Hardware access goes through a `hw` object (righw.RigHardware on the Pico, a fake in the tests), so this file
# runs unchanged on the unix port.
import json

import rigcapture as rc

MAX_REQUEST = 64 * 1024
PROTOCOL_VERSION = 1
BUTTONS = {"power": "PRESS_POWER", "up": "PRESS_UP", "down": "PRESS_DOWN"}
OPS = {
    "ping": (), "info": (), "capture": ("duration_s", "start_s", "trace_bins", "keep_pieces"), "current_ua": (),
    "set_load": ("spec",), "load": (), "inject": None, "faults": (), "press": ("button", "ms"), "leds": (),
    "iset_log": ("since_ns",), "now_s": (), "wait": ("seconds",),
}
LOAD_NAMES = {"500": 500, "2k": 2000, "10k": 10000}
MAX_CAPTURE_S = 10.0       # bounded by the rig's RAM for edge and ADC buffers
ACTIVE_UA = 2.0
HISTORY_S = 30             # continuous mode keeps this much pulse history (like the virtual rig's retention)
HISTORY_MAX_PULSES = 20000


class RigError(ValueError):
    pass


def _num(v, what, lo, hi):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (lo <= v <= hi):
        raise RigError("%s must be a number %s..%s, got %r" % (what, lo, hi, v))
    return v


def _bool(v, what):
    if not isinstance(v, bool):
        raise RigError("%s must be true or false, got %r" % (what, v))
    return v


class Rig:
    def __init__(self, hw, profile):
        self.hw = hw
        self.profile = profile
        self.bank = {}
        for k, v in profile["load_bank"].items():
            self.bank[str(v)] = int(k)
        self.load_index = self.bank.get("2000", 2)
        self.contact = True
        self.charging = False
        self.powered = True
        an = profile["analog"]
        self.vref_mv = int(an["adc_vref_v"] * 1000)
        self.shunt = an["shunt_ohm"]
        self.gain = an["shunt_gain"]
        self.cycle_ns = 1000000000 // profile["capture"]["pio_clock_hz"]
        # Continuous mode (hw.poll_words): edges decoded as they stream in, pulses kept with absolute times, so a
        # capture may start in the recent past (a window that began before a fault was injected).
        self.continuous = hasattr(hw, "poll_words")
        if self.continuous:
            self.dec = [rc.EdgeDecoder(self.cycle_ns, 1), rc.EdgeDecoder(self.cycle_ns, 1)]
            self.tracker = rc.PulseTracker()
            self.history = []
            self.history_t0 = 0

    # -- continuous capture -------------------------------------------------------------------------------------
    def service(self):
        """Drain new edge words, complete pulses, measure their phases from the ADC ring; call often."""
        if not self.continuous:
            return
        words_a, words_b = self.hw.poll_words()
        self.tracker.add_edges(0, self.dec[0].feed(words_a))
        self.tracker.add_edges(1, self.dec[1].feed(words_b))
        now = self.hw.now_ns()
        for p in self.tracker.take(now):
            t = p["t_ns"]
            nb = t + p["pos_ns"] + p["gap_ns"]
            p["amp_pos_na"] = self.hw.phase_mean_na(t, t + p["pos_ns"])
            p["amp_neg_na"] = self.hw.phase_mean_na(nb, nb + p["neg_ns"])
            self.history.append(p)
        cut = now - HISTORY_S * 1000000000
        drop = 0
        while drop < len(self.history) and (self.history[drop]["t_ns"] < cut or
                                            len(self.history) - drop > HISTORY_MAX_PULSES):
            drop += 1
        if drop:
            self.history_t0 = self.history[drop - 1]["t_ns"]
            self.history = self.history[drop:]

    def _capture_history(self, t0, t1, trace_bins):
        while self.hw.now_ns() < t1 + self.tracker.max_gap:
            self.service()
            self.hw.sleep_us(1000)
        self.service()
        if t0 < self.history_t0:
            raise RigError("window start no longer retained (history starts at %d ns)" % self.history_t0)
        sel = [dict(p) for p in self.history if t0 <= p["t_ns"] < t1]
        return self._capture_dict(sel, t0, t1 - t0, self.tracker.overlaps, None, trace_bins)

    # -- load ----------------------------------------------------------------------------------------------
    def _load_desc(self):
        for name, idx in self.bank.items():
            if idx == self.load_index:
                if name in ("open", "short", "skin"):
                    return {"kind": name}
                return {"kind": "resistive", "r_s": float(name)}
        return {"kind": "unknown"}

    def set_load(self, spec):
        key = spec
        if isinstance(spec, str) and spec in LOAD_NAMES:
            key = LOAD_NAMES[spec]
        if isinstance(key, (int, float)) and not isinstance(key, bool):
            key = str(int(key))
        if not isinstance(key, str) or key not in self.bank:
            raise RigError("load %r not in this rig's bank (%s)" % (spec, ", ".join(sorted(self.bank))))
        self.load_index = self.bank[key]
        self.hw.select_load(self.load_index)
        return self._load_desc()

    def load(self):
        return self._load_desc()

    # -- faults ----------------------------------------------------------------------------------------------
    def faults(self):
        return {"contact": self.contact, "charging": self.charging, "powered": self.powered,
                "fault_n": self.hw.fault_n_level()}

    def inject(self, fault, **kw):
        if fault == "contact_loss" or fault == "contact_return":
            if kw:
                raise RigError("%s takes no arguments" % fault)
            self.contact = fault == "contact_return"
            self.hw.set_contact(self.contact)
        elif fault == "short":
            on = _bool(kw.get("on", True), "on")
            self.hw.select_load(self.bank["short"] if on else self.load_index)
        elif fault == "fault_n":
            self.hw.pulse_fault_n(_num(kw.get("ms", 1.0), "ms", 0.001, 60000))
        elif fault == "power_loss":
            if kw.get("during_write"):
                raise RigError("power_loss during_write needs the virtual board (no write trigger on this rig)")
            self.powered = False
            self.hw.set_power(False)
        elif fault == "power_restore":
            self.powered = True
            self.hw.set_power(True)
        elif fault == "charging":
            self.charging = _bool(kw.get("on", True), "on")
            self.hw.set_charging(self.charging)
        elif fault == "clear":
            self.contact = True
            self.hw.set_contact(True)
            self.hw.select_load(self.load_index)
        elif fault in ("overcurrent", "adc_stuck", "hang"):
            raise RigError("fault %r is not available on this rig (virtual board only)" % fault)
        else:
            raise RigError("unknown fault %r" % (fault,))
        return self.faults()

    # -- user interface ------------------------------------------------------------------------------------------
    def press(self, button, ms=100):
        if button not in BUTTONS:
            raise RigError("unknown button %r" % (button,))
        ms = _num(ms, "ms", 0.001, 60000)
        self.hw.press(self.profile["pins"][BUTTONS[button]], ms)
        return {"button": button, "ms": ms, "t_ns": self.hw.now_ns()}

    def leds(self):
        return {"status": self.hw.led_duty(), "red": None, "vibration": None}

    # -- measurement ------------------------------------------------------------------------------------------
    def current_ua(self):
        return rc.adc_raw_to_ua(self.hw.adc_shunt(), self.vref_mv, self.shunt, self.gain) / 1000

    def now_s(self):
        return self.hw.now_ns() / 1e9

    def wait(self, seconds):
        end = self.hw.now_ns() + int(_num(seconds, "seconds", 0, 3600) * 1e9)
        while True:
            left = end - self.hw.now_ns()
            if left <= 0:
                break
            self.service()          # keep draining the capture rings while waiting
            self.hw.sleep_us(min(left // 1000 + 1, 2000))
        return self.now_s()

    def iset_log(self, since_ns=0):
        raise RigError("iset_log is not available on this rig (no ISET tap)")

    def info(self):
        return {"rig": "pico", "board": self.profile.get("name", ""), "load": self._load_desc(),
                "uid": self.hw.uid(), "edge_resolution_ns": rc.LOOP_CYCLES * self.cycle_ns}

    def capture(self, duration_s, start_s=None, trace_bins=2000, keep_pieces=True):
        duration_s = _num(duration_s, "duration_s", 1e-6, MAX_CAPTURE_S)
        trace_bins = int(_num(trace_bins, "trace_bins", 1, 10000))
        if self.continuous:
            t0 = self.hw.now_ns() if start_s is None else int(_num(start_s, "start_s", 0, 1e7) * 1e9)
            return self._capture_history(t0, t0 + int(duration_s * 1e9), trace_bins)
        if start_s is not None:
            raise RigError("this rig captures from now on (start_s needs continuous capture)")
        raw = self.hw.capture(int(duration_s * 1000000))
        return self.assemble(raw, trace_bins)

    def assemble(self, raw, trace_bins=2000):
        """raw: {"t0_ns", "words_a", "words_b", "adc" (12-bit codes), "adc_dt_ns", "hv_on_ns"} -> Capture dict."""
        t0 = raw["t0_ns"]
        dur = raw["duration_ns"]
        ea = rc.durations_to_edges(raw["words_a"], self.cycle_ns, 1)
        eb = rc.durations_to_edges(raw["words_b"], self.cycle_ns, 1)
        pos = rc.intervals(ea)
        neg = rc.intervals(eb)
        pulses, problems = rc.pair_pulses(pos, neg)
        samples = [rc.adc_raw_to_ua(r, self.vref_mv, self.shunt, self.gain) for r in raw["adc"]]   # nA
        dt = raw["adc_dt_ns"]
        rc.measure_pulses(pulses, samples, 0, dt)
        for p in pulses:
            p["t_ns"] += t0
            p["end_ns"] += t0
        env = self._envelope(samples, dt, dur, trace_bins, t0)
        out = self._capture_dict(pulses, t0, dur, problems["overlap"], env, trace_bins)
        out["hv_on_ns"] = raw.get("hv_on_ns")
        out["max_abs_ua"] = max(samples) / 1000 if samples else 0.0
        return out

    def _capture_dict(self, pulses, t0, dur, overlaps, env, trace_bins):
        out = []
        q_total = 0
        peak = 0.0
        for p in pulses:
            ap = (p["amp_pos_na"] or 0) / 1000
            an = (p["amp_neg_na"] or 0) / 1000
            peak = max(peak, ap, an)
            qp = ap * p["pos_ns"] / 1e6
            qn = -an * p["neg_ns"] / 1e6
            q_total += qp + qn
            tol = max(0.01 * max(abs(qp), abs(qn)), 0.02)
            out.append({"t_ns": p["t_ns"], "polarity": "+-", "widths_ns": [p["pos_ns"], p["neg_ns"]],
                        "gap_ns": p["gap_ns"], "amp_ua": [ap, -an], "peak_ua": [ap, -an], "q_nc": [qp, qn],
                        "q_src_net_nc": qp + qn, "q_net_nc": qp + qn, "balanced": abs(qp + qn) <= tol,
                        "partial": p["end_ns"] >= t0 + dur})
        if env is None:
            env = self._pulse_envelope(out, t0, dur, trace_bins)
        return {"t0_ns": t0, "t1_ns": t0 + dur, "pulses": out, "dc_ua": q_total / (dur / 1e9) / 1000 if dur else 0.0,
                "q_total_nc": q_total, "n_shoot_through": overlaps, "hv_on_ns": None, "max_abs_ua": peak,
                "max_abs_v": 0.0, "board": self.profile.get("name", ""), "load": self._load_desc(),
                "faults": self.faults(), "envelope": env, "pieces": None}

    def _pulse_envelope(self, pulses, t0, dur, bins):
        """Envelope from the measured phases (continuous mode keeps pulses, not raw samples)."""
        bins = max(1, min(bins, 2000))
        width = max(1, dur // bins)
        lo = [0.0] * bins
        hi = [0.0] * bins
        for p in pulses:
            k = min(bins - 1, (p["t_ns"] - t0) // width)
            hi[k] = max(hi[k], p["amp_ua"][0])
            lo[k] = min(lo[k], p["amp_ua"][1])
        return {"t_ns": [t0 + k * width + width // 2 for k in range(bins)], "min_ua": lo, "max_ua": hi,
                "mean_ua": [0.0] * bins}

    def _envelope(self, samples, dt, dur, bins, t0):
        bins = max(1, min(bins, len(samples) or 1))
        width = dur // bins if dur >= bins else 1
        t, lo, hi, mean = [], [], [], []
        per = max(1, len(samples) // bins)
        for b in range(bins):
            seg = samples[b * per:(b + 1) * per] or [0]
            t.append(t0 + b * width + width // 2)
            lo.append(min(seg) / 1000)
            hi.append(max(seg) / 1000)
            mean.append(sum(seg) / len(seg) / 1000)
        return {"t_ns": t, "min_ua": lo, "max_ua": hi, "mean_ua": mean}


def _err(rid, code, detail):
    return {"id": rid, "ok": False, "error": code, "detail": str(detail)[:300]}


def handle_line(rig, line):
    try:
        req = json.loads(line)
    except Exception as e:  # ValueError, or MemoryError/RuntimeError on deep nesting under MicroPython
        return _err(None, "bad_json", e)
    if not isinstance(req, dict):
        return _err(None, "bad_request", "request must be a JSON object")
    rid = req.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, (int, str))):
        return _err(None, "bad_request", "id must be an int or a string")
    op = req.get("op")
    if not isinstance(op, str):
        return _err(rid, "bad_request", "op (string) missing")
    if op not in OPS:
        return _err(rid, "unknown_op", "unknown op %r" % (op,))
    kw = req.get("kw", {})
    if not isinstance(kw, dict):
        return _err(rid, "bad_request", "kw must be an object")
    allowed = OPS[op]
    if allowed is not None:
        for k in kw:
            if k not in allowed:
                return _err(rid, "bad_request", "%s does not take %r" % (op, k))
    try:
        if op == "ping":
            result = {"proto": PROTOCOL_VERSION}
        elif op == "inject":
            kw = dict(kw)
            fault = kw.pop("fault", None)
            if not isinstance(fault, str):
                return _err(rid, "bad_request", "inject needs fault (string)")
            result = rig.inject(fault, **kw)
        elif op in ("set_load", "press", "capture") and not kw:
            return _err(rid, "bad_request", "%s needs arguments" % op)
        else:
            result = getattr(rig, op)(**kw)
    except RigError as e:
        return _err(rid, "rig_error", e)
    except (TypeError, ValueError, KeyError) as e:
        return _err(rid, "bad_request", e)
    except Exception as e:
        return _err(rid, "internal", "%s: %s" % (type(e).__name__, e))
    return {"id": rid, "ok": True, "result": result}


class LineReader:
    """Bytes -> lines of at most MAX_REQUEST; an over-long line is dropped whole and reported once."""

    def __init__(self, limit=MAX_REQUEST):
        self.limit = limit
        self.buf = bytearray()
        self.overflow = False

    def feed(self, data):
        out = []
        for b in data:
            if b == 10:
                if self.overflow:
                    out.append(None)
                    self.overflow = False
                elif self.buf.strip():
                    out.append(bytes(self.buf))
                self.buf = bytearray()
            elif self.overflow:
                continue
            elif len(self.buf) >= self.limit:
                self.overflow = True
                self.buf = bytearray()
            else:
                self.buf.append(b)
        return out


def serve(rig, read_chunk, write):
    """Main loop: read_chunk() -> bytes, None when nothing arrived yet (the rig then services its capture), or
    b"" at the end; write(bytes)."""
    reader = LineReader()
    while True:
        data = read_chunk()
        if data is None:
            rig.service()
            continue
        if not data:
            return
        for line in reader.feed(data):
            if line is None:
                reply = _err(None, "line_too_long", "request lines are limited to %d bytes" % MAX_REQUEST)
            else:
                reply = handle_line(rig, line)
            write(json.dumps(reply).encode() + b"\n")
