"""The virtual rig: the instrument beside the DUT. Captures the electrode current, sets the load, injects faults,
presses buttons and reads LEDs. A real bench serves the same methods over the rig protocol (rigproto.py).

Everything measured comes from the front end's electrode waveform (bridge/HV/ISET pin timelines -> front end ->
load), never from firmware variables.

    cap = rig.capture(1.0)                 # waits until virtual time passes the window end
    cap.n_pulses, cap.n_active, cap.n_unbalanced, cap.n_shoot_through, cap.rate_hz
    cap.dc_ua                              # mean electrode current over the window (discharge included)
    cap.dc_periods_ua                      # the same over whole repetition periods (no edge bias)
    p = cap.pulses[0]                      # Pulse: t_ns, polarity "+-", widths_ns, gap_ns (8 ns ticks),
                                           #   amp_ua, peak_ua, q_nc, q_src_net_nc, q_net_nc, balanced, partial
    cap.summary(); cap.to_dict(); Capture.from_dict(d); cap.trace(2000) -> Trace(t_ns, i_ua, v_v)
    rig.set_load("10k" | "skin" | "skin:rs=1k,rp=10k,cp=100n" | "open" | "short")
    rig.inject("short" | "overcurrent", factor=1.3 | "adc_stuck", channel="I_SENSE", raw=4095 | ...)
    rig.press("power", ms=100); rig.leds(); rig.iset_log(since_ns); rig.now_s(); rig.wait(seconds)
"""
from __future__ import annotations

import bisect
import contextlib
import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

from .chip import load as ld
from .chip.frontend import ADC_FIRST_GPIO, FrontEnd

# Pulse grouping and balance rules (documented in Capture)
MAX_PAIR_GAP_NS = 1_000_000          # a second phase of opposite polarity within 1 ms completes a pair
UNBALANCED_REL = 0.01                # |q+ + q-| above 1 % of the larger phase charge ...
UNBALANCED_ABS_NC = 0.1              # ... and above 0.1 nC (1 uA for 100 us) -> unbalanced
ACTIVE_UA = 2.0                      # a pulse "carries current" when a phase peaks above this
MAX_CAPTURE_S = 600.0
MAX_KEPT_PIECES = 50_000             # longer captures keep the envelope trace only

BUTTON_PINS = {"power": "BTN_POWER", "up": "BTN_UP", "down": "BTN_DOWN"}
FAULTS = ("contact_loss", "contact_return", "short", "overcurrent", "adc_stuck", "fault_n", "hang", "power_loss",
          "power_restore", "charging", "clear")


class RigError(ValueError):
    """A rig request that cannot be carried out (bad argument, window no longer retained, ...)."""


class Trace(NamedTuple):
    t_ns: "object"          # numpy int64 array
    i_ua: "object"          # electrode current, uA
    v_v: "object"           # load voltage, V (None when the capture holds samples only)


@dataclass
class Pulse:
    """One stimulation pulse as measured at the electrodes.

    widths_ns/gap_ns: from the bridge edges (8 ns PWM tick). amp_ua: signed mean current of each phase
    (phase charge / width); peak_ua: signed peak. q_nc: signed phase charges (the current source's delivery).
    q_src_net_nc: their sum. q_net_nc: electrode charge from this pulse's start to the next pulse's start,
    passive-discharge current included (an R-(R||C) load returns its stored charge through the bridge's ground
    path). partial: cut by the capture window (a pulse in progress at the window start keeps its true t_ns and
    widths; its charges and amplitudes cover only the part inside the window).
    """
    t_ns: int
    polarity: str
    widths_ns: list
    gap_ns: int | None = None
    amp_ua: list = field(default_factory=list)
    peak_ua: list = field(default_factory=list)
    q_nc: list = field(default_factory=list)
    q_src_net_nc: float = 0.0
    q_net_nc: float = 0.0
    balanced: bool = True
    partial: bool = False

    @property
    def active(self) -> bool:
        return any(abs(p) > ACTIVE_UA for p in self.peak_ua)


@dataclass
class Capture:
    """What the rig measured over [t0_ns, t1_ns]: pulses, net charge, DC component, counts and a trace."""
    t0_ns: int
    t1_ns: int
    pulses: list = field(default_factory=list)
    dc_ua: float = 0.0
    q_total_nc: float = 0.0
    n_shoot_through: int = 0
    hv_on_ns: int = 0
    max_abs_ua: float = 0.0
    max_abs_v: float = 0.0
    board: str = ""
    load: dict = field(default_factory=dict)
    faults: dict = field(default_factory=dict)
    envelope: dict = field(default_factory=dict)     # {"t_ns", "min_ua", "max_ua", "mean_ua"} per bin
    pieces: list | None = None                       # compact closed-form waveform (virtual rig only)

    # -- summary numbers --------------------------------------------------------------------------------------
    @property
    def duration_s(self) -> float:
        return (self.t1_ns - self.t0_ns) * 1e-9

    @property
    def n_pulses(self) -> int:
        return len(self.pulses)

    @property
    def n_active(self) -> int:
        return sum(1 for p in self.pulses if p.active)

    @property
    def n_unbalanced(self) -> int:
        return sum(1 for p in self.pulses if not p.balanced and not p.partial)

    @property
    def rate_hz(self) -> float:
        """Pulse repetition rate from the first to the last pulse start (0 with fewer than two pulses)."""
        act = [p.t_ns for p in self.pulses if p.active] or [p.t_ns for p in self.pulses]
        if len(act) < 2:
            return 0.0
        return (len(act) - 1) / ((act[-1] - act[0]) * 1e-9)

    def active_pulses(self) -> list:
        """Pulses that carry current, the last one excluded when the window cut it."""
        return [p for p in self.pulses if p.active and not p.partial]

    @property
    def dc_periods_ua(self) -> float:
        """DC over whole repetition periods: electrode charge from the first to the last pulse start in the window,
        so a pulse cut by the window edge does not bias it (falls back to dc_ua with fewer than two pulses)."""
        ps = [p for p in self.pulses if p.t_ns >= self.t0_ns]
        if len(ps) < 2:
            return self.dc_ua
        q = sum(p.q_net_nc for p in ps[:-1])
        return q / ((ps[-1].t_ns - ps[0].t_ns) * 1e-9) * 1e-3

    def summary(self) -> dict:
        act = self.active_pulses()
        amps = [abs(a) for p in act for a in p.amp_ua]
        return {"t0_ns": self.t0_ns, "t1_ns": self.t1_ns, "duration_s": self.duration_s,
                "n_pulses": self.n_pulses, "n_active": len(act), "n_unbalanced": self.n_unbalanced,
                "n_shoot_through": self.n_shoot_through, "dc_ua": self.dc_ua, "dc_periods_ua": self.dc_periods_ua,
                "q_total_nc": self.q_total_nc,
                "rate_hz": self.rate_hz, "max_abs_ua": self.max_abs_ua, "max_abs_v": self.max_abs_v,
                "amp_ua_min": min(amps) if amps else 0.0, "amp_ua_max": max(amps) if amps else 0.0,
                "max_abs_q_net_nc": max((abs(p.q_net_nc) for p in act), default=0.0),
                "hv_on_s": self.hv_on_ns * 1e-9, "load": self.load}

    # -- trace --------------------------------------------------------------------------------------------------
    def trace(self, n_points: int = 2000, t0_ns: int | None = None, t1_ns: int | None = None) -> Trace:
        """The electrode current sampled at n_points uniform instants of [t0_ns, t1_ns] (default: the window)."""
        import numpy as np
        n_points = int(n_points)
        if n_points < 2 or n_points > 10_000_000:
            raise RigError("n_points must be 2..10000000")
        a = self.t0_ns if t0_ns is None else int(t0_ns)
        b = self.t1_ns if t1_ns is None else int(t1_ns)
        if not self.t0_ns <= a < b <= self.t1_ns:
            raise RigError(f"trace window must lie inside the capture [{self.t0_ns}, {self.t1_ns}]")
        t = np.linspace(a, b, n_points).round().astype(np.int64)
        if self.pieces:
            arr = np.asarray(self.pieces, dtype=float)
            starts = arr[:, 0].astype(np.int64)
            k = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(arr) - 1)
            x = (t - starts[k]) * 1e-9
            rows = arr[k]
            i = rows[:, 4] + rows[:, 5] * np.exp(-x / rows[:, 6]) + rows[:, 7] * np.exp(-x / rows[:, 8])
            v = rows[:, 9] + rows[:, 10] * np.exp(-x / rows[:, 11]) + rows[:, 12] * np.exp(-x / rows[:, 13])
            return Trace(t, i * 1e6, v)
        env = self.envelope
        i = np.interp(t, np.asarray(env["t_ns"], dtype=float), np.asarray(env["mean_ua"], dtype=float))
        return Trace(t, i, None)

    # -- serialisation ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["summary"] = self.summary()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Capture":
        if not isinstance(d, dict):
            raise RigError("capture must be an object")
        names = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in names}
        try:
            pulse_fields = set(Pulse.__dataclass_fields__)
            kw["pulses"] = [Pulse(**{k: v for k, v in p.items() if k in pulse_fields}) for p in d.get("pulses", [])]
            return cls(**kw)
        except (TypeError, AttributeError) as e:
            raise RigError(f"malformed capture: {e}") from e


# ---- analysis ---------------------------------------------------------------------------------------------------

def _peak(p, a, b):
    """Signed value of the largest |i| of piece p over [a, b] (ns)."""
    xa, xb = (a - p.t0) * 1e-9, (b - p.t0) * 1e-9
    best = 0.0
    for x in ld.monotone_breaks(p.i, xa, xb):
        v = ld.ev(p.i, x)
        if abs(v) > abs(best):
            best = v
    return best


def analyse(pieces, t0: int, t1: int, *, trace_bins: int = 2000, keep_pieces: bool = True, board: str = "",
            load: dict | None = None, faults: dict | None = None) -> Capture:
    """Measure the electrode waveform `pieces` (front-end Pieces covering [t0, t1]; pieces before t0 back to where
    the pulse chain began are context for pairing phases into pulses)."""
    cap = Capture(t0_ns=t0, t1_ns=t1, board=board, load=load or {}, faults=faults or {})
    starts, cum = [], [0.0]          # charge prefix sums at clipped piece starts
    clipped = []
    phases = []                      # [pol, ts, te, q, peak, starts_before_window]
    q_total = 0.0
    max_i = max_v = 0.0
    st_prev = False
    for p in pieces:
        a, b = max(p.t0, t0), min(p.t1, t1)
        inside = b > a
        q = pk = 0.0
        if inside:
            clipped.append((p, a, b))
            q = p.charge(a, b)
            starts.append(a)
            q_total += q
            cum.append(q_total)
            pk = _peak(p, a, b)
            max_i = max(max_i, abs(pk))
            xa, xb = (a - p.t0) * 1e-9, (b - p.t0) * 1e-9
            for x in ld.monotone_breaks(p.v, xa, xb):
                max_v = max(max_v, abs(ld.ev(p.v, x)))
            if p.hv:
                cap.hv_on_ns += b - a
            if p.pol == 2:
                if not st_prev:
                    cap.n_shoot_through += 1
                st_prev = True
            else:
                st_prev = False
        if p.pol in (1, -1):
            # phases before the window are context: they decide how the window's phases pair up
            ps, pe = p.t0, min(p.t1, t1)
            if pe <= ps:
                continue
            q_src = q if p.src else 0.0
            if phases and phases[-1][0] == p.pol and phases[-1][2] == ps:
                ph = phases[-1]
                ph[2] = pe
                ph[3] += q_src
                if abs(pk) > abs(ph[4]):
                    ph[4] = pk
            else:
                phases.append([p.pol, ps, pe, q_src, pk, ps < t0])

    def charge_between(ta, tb):
        def at(t):
            k = bisect.bisect_right(starts, t) - 1
            if k < 0:
                return 0.0
            p, a, b = clipped[k]
            return cum[k] + p.charge(a, min(t, b))
        return at(tb) - at(ta)

    # group phases into pulses: a phase followed closely by one of opposite polarity is a pair
    groups = []
    for ph in phases:
        last = groups[-1] if groups else None
        if (last is not None and len(last) == 1 and last[0][0] == -ph[0]
                and ph[1] - last[0][2] <= MAX_PAIR_GAP_NS):
            last.append(ph)
        else:
            groups.append([ph])
    # a pulse that began before the window is reported (partial) when part of it lies inside
    groups = [g for g in groups if not g[0][5] or g[-1][2] > t0]
    for n, g in enumerate(groups):
        t_start = g[0][1]
        t_next = groups[n + 1][0][1] if n + 1 < len(groups) else t1
        qs = [ph[3] for ph in g]
        widths = [ph[2] - ph[1] for ph in g]
        seen = [max(0, ph[2] - max(ph[1], t0)) for ph in g]           # the part of each phase inside the window
        partial = t_start < t0 or g[-1][2] >= t1 or (len(g) == 1 and t1 - g[0][2] <= MAX_PAIR_GAP_NS
                                                       and abs(qs[0]) > 0 and n + 1 == len(groups))
        q_src = sum(qs)
        tol = max(UNBALANCED_REL * max(abs(q) for q in qs), UNBALANCED_ABS_NC * 1e-9)
        cap.pulses.append(Pulse(
            t_ns=int(t_start), polarity="".join("+" if ph[0] > 0 else "-" for ph in g),
            widths_ns=[int(w) for w in widths], gap_ns=int(g[1][1] - g[0][2]) if len(g) == 2 else None,
            amp_ua=[ph[3] / (w * 1e-9) * 1e6 if w else 0.0 for ph, w in zip(g, seen)],
            peak_ua=[ph[4] * 1e6 for ph in g], q_nc=[q * 1e9 for q in qs],
            q_src_net_nc=q_src * 1e9, q_net_nc=charge_between(t_start, t_next) * 1e9,
            balanced=abs(q_src) <= tol, partial=bool(partial)))
    cap.q_total_nc = q_total * 1e9
    cap.dc_ua = q_total / ((t1 - t0) * 1e-9) * 1e6 if t1 > t0 else 0.0
    cap.max_abs_ua = max_i * 1e6
    cap.max_abs_v = max_v
    cap.envelope = _envelope(clipped, t0, t1, trace_bins)
    if keep_pieces and len(clipped) <= MAX_KEPT_PIECES:
        cap.pieces = [_compact(p, a, b) for p, a, b in clipped]
    return cap


def _compact(p, a, b):
    """[start, end, pol, src, i(5), v(5)] with the closed forms re-based to start at `a`."""
    dx = (a - p.t0) * 1e-9

    def rebase(f):
        c0, c1, t1, c2, t2 = f
        return [c0, c1 * math.exp(-dx / t1), t1, c2 * math.exp(-dx / t2), t2]
    return [int(a), int(b), int(p.pol), int(p.src)] + rebase(p.i) + rebase(p.v)


def _envelope(clipped, t0, t1, n_bins):
    """Per-bin min/max/mean of the electrode current (like an oscilloscope's peak-detect mode)."""
    import numpy as np
    n_bins = max(1, int(n_bins))
    width = (t1 - t0) / n_bins
    lo = np.full(n_bins, np.inf)
    hi = np.full(n_bins, -np.inf)
    q = np.zeros(n_bins)
    edges = t0 + width * np.arange(n_bins + 1)
    for p, a, b in clipped:
        ka = min(n_bins - 1, int((a - t0) / width))
        kb = min(n_bins - 1, int((b - 1 - t0) / width)) if b > a else ka
        if kb - ka <= 2:
            for k in range(ka, kb + 1):
                sa, sb = max(a, edges[k]), min(b, edges[k + 1])
                if sb < sa:
                    continue
                pk_vals = [ld.ev(p.i, x) for x in ld.monotone_breaks(p.i, (sa - p.t0) * 1e-9,
                                                                       (sb - p.t0) * 1e-9)]
                lo[k] = min(lo[k], min(pk_vals))
                hi[k] = max(hi[k], max(pk_vals))
                q[k] += p.charge(int(math.floor(sa)), int(math.ceil(sb)))
        else:
            ts = np.clip(edges[ka:kb + 2], a, b)
            vals = ld.ev_array(p.i, (ts - p.t0) * 1e-9)
            lo[ka:kb + 1] = np.minimum(lo[ka:kb + 1], np.minimum(vals[:-1], vals[1:]))
            hi[ka:kb + 1] = np.maximum(hi[ka:kb + 1], np.maximum(vals[:-1], vals[1:]))
            for k in range(ka, kb + 1):
                q[k] += p.charge(int(math.floor(max(a, edges[k]))), int(math.ceil(min(b, edges[k + 1]))))
    lo[~np.isfinite(lo)] = 0.0
    hi[~np.isfinite(hi)] = 0.0
    centers = (edges[:-1] + edges[1:]) / 2
    return {"t_ns": [int(c) for c in centers], "min_ua": (lo * 1e6).tolist(), "max_ua": (hi * 1e6).tolist(),
            "mean_ua": (q / (width * 1e-9) * 1e6).tolist()}


# ---- the instrument ---------------------------------------------------------------------------------------------

def _number(v, what, lo, hi):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise RigError(f"{what} must be a number {lo}..{hi}, got {v!r}")
    return v


class VirtualRig:
    """The instrument on the virtual board. `board` offers chip, profile, now_ns(), wait_until(t_ns), hang(),
    power_cut(during_write, seed), power_restore(). Uses the board's front end (chip.analog) or attaches one."""

    def __init__(self, board, *, load="2k", seed=0):
        self.board = board
        # The board serialises Chip access on its own thread; rig requests come from server threads. A board that
        # offers `chip_lock` (a re-entrant lock held around Chip calls) gets rig-side Chip/front-end changes under it.
        self._chip_lock = getattr(board, "chip_lock", None) or contextlib.nullcontext()
        fe = getattr(board.chip, "analog", None)
        if not isinstance(fe, FrontEnd):
            fe = FrontEnd(board.profile, board.chip, load, seed=seed)
        self.frontend = fe
        self._seed = seed
        self._cap_ids = itertools.count()

    @property
    def profile(self):
        return self.board.profile

    def _fe(self) -> FrontEnd:
        chip = self.board.chip
        if self.frontend.chip is not chip or getattr(chip, "analog", None) is not self.frontend:
            with self._chip_lock:
                self.frontend.attach(chip)      # the board replaced its Chip (power cycle)
        return self.frontend

    # -- measurement ------------------------------------------------------------------------------------------
    def capture(self, duration_s, start_s=None, *, trace_bins: int = 2000, keep_pieces: bool = True) -> Capture:
        """Capture the electrode current over [start, start + duration] (start defaults to now); returns once virtual
        time has passed the window end."""
        duration_s = _number(duration_s, "duration_s", 1e-6, MAX_CAPTURE_S)
        trace_bins = int(_number(trace_bins, "trace_bins", 1, 1_000_000))
        fe = self._fe()
        now = self.board.now_ns()
        t0 = now if start_s is None else int(round(_number(start_s, "start_s", 0, 1e7) * 1e9))
        t1 = t0 + int(round(duration_s * 1e9))
        key = ("capture", next(self._cap_ids))
        fe.hold(key, t0)
        try:
            self.board.wait_until(t1)
            try:
                pieces = fe.pieces(fe.chain_start(t0, MAX_PAIR_GAP_NS), t1)
            except ValueError as e:
                raise RigError(str(e)) from None
            if fe.t < t1:
                raise RigError(f"virtual time stopped at {fe.t} ns before the window end {t1} ns")
            return analyse(pieces, t0, t1, trace_bins=trace_bins, keep_pieces=keep_pieces,
                           board=self.profile.get("name", ""), load=fe.load.describe(), faults=fe.faults())
        finally:
            fe.release(key)

    def current_ua(self) -> float:
        """The electrode current right now (a multimeter reading)."""
        with self._chip_lock:
            fe = self._fe()
            return fe.current_ua(fe.t)

    # -- load and faults -------------------------------------------------------------------------------------------
    def set_load(self, spec, at_s=None) -> dict:
        """Change the load now, or at the virtual instant at_s (seconds since power-on, not in the past): the
        change lands exactly there, whatever the firmware is doing (no round trip needed)."""
        try:
            if at_s is not None:
                new = ld.parse_load(spec)
                self._schedule(at_s, "load", spec)
                return new.describe()
            with self._chip_lock:
                return self._fe().set_load(spec).describe()
        except ld.LoadError as e:
            raise RigError(str(e)) from None

    def _schedule(self, at_s, what, *args):
        t = int(round(_number(at_s, "at_s", 0, 1e7) * 1e9))
        try:
            with self._chip_lock:
                self._fe().at(t, what, *args)
        except ValueError as e:
            raise RigError(str(e)) from None

    def load(self) -> dict:
        return self._fe().load.describe()

    def inject(self, fault: str, at_s=None, **kw) -> dict:
        """Inject a fault: contact_loss, contact_return, short, overcurrent(factor), adc_stuck(channel, raw),
        fault_n(ms), hang, power_loss(during_write, seed), power_restore, charging(on), clear.
        at_s: inject at that virtual instant (seconds since power-on, not in the past) instead of now; the onset
        then lands exactly there, not at the next board round trip (front-end faults only: not hang/power_*).
        Returns the faults in force now (a scheduled one shows once its instant has passed)."""
        fe = self._fe()
        allowed = {"contact_loss": (), "contact_return": (), "short": ("on",), "overcurrent": ("factor",),
                   "adc_stuck": ("channel", "raw"), "fault_n": ("ms",), "hang": (),
                   "power_loss": ("during_write", "seed"), "power_restore": (), "charging": ("on",), "clear": ()}
        if fault not in allowed:
            raise RigError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        extra = set(kw) - set(allowed[fault])
        if extra:
            raise RigError(f"fault {fault!r} takes {list(allowed[fault]) or 'no arguments'}, got {sorted(extra)}")
        if at_s is not None:
            if fault in ("hang", "power_loss", "power_restore"):
                raise RigError(f"fault {fault!r} cannot be scheduled (at_s): it acts on the board, not the front end")
            self._schedule(at_s, *self._fault_change(fault, kw))
            return fe.faults()
        try:
            # board-level faults take the board's own locks; the rest touch the Chip through the front end
            board_level = fault in ("hang", "power_loss", "power_restore")
            with contextlib.nullcontext() if board_level else self._chip_lock:
                self._apply_fault(fe, fault, kw)
        except RigError:
            raise
        except ValueError as e:
            raise RigError(str(e)) from None
        return fe.faults()

    def _apply_fault(self, fe, fault, kw):
        if fault == "contact_loss":
            fe.set_contact(False)
        elif fault == "contact_return":
            fe.set_contact(True)
        elif fault == "short":
            fe.set_short(_bool(kw.get("on", True), "on"))
        elif fault == "overcurrent":
            fe.set_gain_error(_number(kw.get("factor", 1.3), "factor", 0, 10))
        elif fault == "adc_stuck":
            fe.set_adc_stuck(self._adc_channel(kw.get("channel", 0)), kw.get("raw", 4095))
        elif fault == "fault_n":
            fe.force_fault_n(_number(kw.get("ms", 1.0), "ms", 1e-3, 60_000))
        elif fault == "hang":
            self.board.hang()
        elif fault == "power_loss":
            seed = kw.get("seed", self._seed)
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise RigError(f"seed must be an int, got {seed!r}")
            self.board.power_cut(during_write=_bool(kw.get("during_write", False), "during_write"), seed=seed)
        elif fault == "power_restore":
            self.board.power_restore()
        elif fault == "charging":
            fe.set_charging(_bool(kw.get("on", True), "on"))
        elif fault == "clear":
            fe.clear_faults()

    def _fault_change(self, fault, kw):
        """The front-end change (FrontEnd.at arguments) a fault makes."""
        if fault == "contact_loss":
            return ("contact", False)
        if fault == "contact_return":
            return ("contact", True)
        if fault == "short":
            return ("short", _bool(kw.get("on", True), "on"))
        if fault == "overcurrent":
            return ("gain_error", _number(kw.get("factor", 1.3), "factor", 0, 10))
        if fault == "adc_stuck":
            return ("adc_stuck", self._adc_channel(kw.get("channel", 0)), kw.get("raw", 4095))
        if fault == "fault_n":
            return ("fault_n", _number(kw.get("ms", 1.0), "ms", 1e-3, 60_000))
        if fault == "charging":
            return ("charging", _bool(kw.get("on", True), "on"))
        return ("clear",)

    def faults(self) -> dict:
        return self._fe().faults()

    def _adc_channel(self, ch):
        if isinstance(ch, str):
            gpio = self.profile["pins"].get(ch.upper())
            if ch.lower() in ("temp", "core_temp"):
                return 4
            if not isinstance(gpio, int) or not ADC_FIRST_GPIO <= gpio < ADC_FIRST_GPIO + 4:
                raise RigError(f"unknown ADC signal {ch!r}")
            return gpio - ADC_FIRST_GPIO
        if isinstance(ch, bool) or not isinstance(ch, int) or not 0 <= ch <= 4:
            raise RigError(f"ADC channel must be 0..4 or a signal name, got {ch!r}")
        return ch

    # -- user interface --------------------------------------------------------------------------------------------
    def press(self, button: str, ms=100) -> dict:
        if button not in BUTTON_PINS:
            raise RigError(f"unknown button {button!r}; known: {', '.join(BUTTON_PINS)}")
        ms = _number(ms, "ms", 1e-3, 60_000)
        with self._chip_lock:
            self._fe().press(self.profile["pins"][BUTTON_PINS[button]], ms)
        return {"button": button, "ms": ms, "t_ns": self.board.now_ns()}

    def leds(self) -> dict:
        """LED_STATUS / LED_RED duty (0..1) and VIBRATION level now; None for what the board does not have."""
        out = {}
        with self._chip_lock:
            chip = self.board.chip
            now = self.board.now_ns()
            for key, pin_name in (("status", "LED_STATUS"), ("red", "LED_RED"), ("vibration", "VIBRATION")):
                gpio = self.profile["pins"].get(pin_name)
                if gpio is None:
                    out[key] = None
                    continue
                tl = chip.pwm_duty_timeline(gpio, now, now)
                out[key] = float(tl[-1][1]) if tl else float(chip.pin_level(gpio, now))
        return out

    def iset_log(self, since_ns: int = 0) -> list:
        since_ns = int(_number(since_ns, "since_ns", 0, 2 ** 63))
        return [dict(e) for e in getattr(self.board.chip, "iset_log", []) if e["t_ns"] >= since_ns]

    def now_s(self) -> float:
        return self.board.now_ns() * 1e-9

    def wait(self, seconds) -> float:
        seconds = _number(seconds, "seconds", 0, 3600)
        self.board.wait_until(self.board.now_ns() + int(round(seconds * 1e9)))
        return self.now_s()

    def info(self) -> dict:
        return {"rig": "virtual", "board": self.profile.get("name", ""), "load": self.load(),
                "faults": self.faults(), "now_s": self.now_s()}


def _bool(v, what):
    if not isinstance(v, bool):
        raise RigError(f"{what} must be true or false, got {v!r}")
    return v
