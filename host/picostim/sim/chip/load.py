"""Electrode loads and their response to the front end's current source (closed-form, piecewise-exponential).

A load is R_s in series with an optional (R_p || C_p) branch:

* resistive: R_s only ("500", "2k", "10k", 470.0, ...);
* skin (electrode-skin model): R_s + (R_p || C_p), defaults R_s 1 kOhm, R_p 100 kOhm, C_p 470 nF (gel electrodes
  of a few cm^2: R_p 10 k..1 MOhm, C_p 10 n..1 uF). Note the physics: a balanced biphasic pair followed by passive
  discharge leaves a net electrode charge of about (w/tau_c)*exp(-gap/tau_d) of a phase's charge (charge that
  leaked through R_p during the pair). These defaults give ~0.3 % at 200 us phases / 100 us gap; R_p 10 k with
  C_p 100 n (tau_c 1 ms) gives ~5 %.
* open: R_s = 1 TOhm (no measurable current, the source saturates at compliance);
* short: R_s = 0.

The front end drives the load in one of four electrical modes; each gives a closed form of the electrode current,
load voltage and capacitor voltage as ``c0 + c1*exp(-x/tau1) + c2*exp(-x/tau2)`` (x in seconds from the piece
start). Everything here is SI (A, V, s, F, Ohm); the front end and rig convert to uA / nC at their edges.

* DRIVE: the current source pushes s*I_set(x), I_set(x) = a + b*exp(-x/tau_iset) (the ISET RC filter output);
* LIMIT: the source is at compliance, a voltage source s*V through r_extra + R_s (compliance, or the "output shorted
  past the current source" fault with V = V_COMP and r_extra = 100 Ohm);
* GROUND: both bridge outputs low, the electrodes are tied together: the capacitor discharges through R_s;
* FLOAT: no path (HV off while a bridge leg drives): the capacitor leaks through R_p only.
"""
from __future__ import annotations

import math
import re

OPEN_OHM = 1e12

DEFAULT_SKIN = {"r_s": 1000.0, "r_p": 100e3, "c_p": 470e-9}

_SUFFIX = {"": 1.0, "r": 1.0, "k": 1e3, "m": 1e6, "meg": 1e6}
_CAP_SUFFIX = {"": 1.0, "f": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9, "p": 1e-12}


class LoadError(ValueError):
    """A load specification that cannot be understood or is not physical."""


def _parse_number(text: str, suffixes: dict, what: str) -> float:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not m:
        raise LoadError(f"cannot read {what} {text!r}")
    unit = m.group(2).lower()
    tails = ("ohms", "ohm") if what == "resistance" else ("f",)
    for tail in tails:
        if unit.endswith(tail):
            unit = unit[:-len(tail)]
            break
    if unit not in suffixes:
        raise LoadError(f"cannot read {what} {text!r}: unknown unit {m.group(2)!r}")
    return float(m.group(1)) * suffixes[unit]


def _check_value(v, what, allow_zero=False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise LoadError(f"{what} must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise LoadError(f"{what} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {v!r}")
    return v


class Load:
    """R_s + optional (R_p || C_p). Immutable; build with :func:`parse_load`."""

    __slots__ = ("kind", "r_s", "r_p", "c_p", "has_cap", "tau_c", "tau_g")

    def __init__(self, kind: str, r_s: float, r_p: float | None = None, c_p: float | None = None):
        self.kind = kind
        self.r_s = _check_value(r_s, "R_s", allow_zero=(kind == "short"))
        self.has_cap = c_p is not None
        if self.has_cap:
            self.r_p = _check_value(r_p, "R_p")
            self.c_p = _check_value(c_p, "C_p")
            if self.r_s < 1.0:
                raise LoadError("an R-(R||C) load needs R_s >= 1 Ohm (the discharge path)")
            self.tau_c = self.r_p * self.c_p                                          # floating: leak via R_p
            self.tau_g = self.c_p * self.r_s * self.r_p / (self.r_s + self.r_p)      # grounded: via R_s || R_p
        else:
            self.r_p = self.c_p = None
            self.tau_c = self.tau_g = None

    def describe(self) -> dict:
        d = {"kind": self.kind, "r_s_ohm": self.r_s}
        if self.has_cap:
            d.update(r_p_ohm=self.r_p, c_p_f=self.c_p)
        return d

    def dc_ohm(self) -> float:
        """Resistance seen by a steady current (what an impedance check settles to)."""
        return self.r_s + (self.r_p if self.has_cap else 0.0)

    def __eq__(self, other):
        return isinstance(other, Load) and self.describe() == other.describe()

    def __hash__(self):
        return hash(tuple(sorted(self.describe().items())))

    def __repr__(self):
        return f"Load({self.describe()})"


def parse_load(spec) -> Load:
    """A Load from a spec: ohms (number or "500", "2k", "10k", "1.5M"), "open", "short", "skin",
    "skin:rs=1k,rp=10k,cp=100n", a dict {"kind": "skin"|"resistive"|"open"|"short", ...} or a Load."""
    if isinstance(spec, Load):
        return spec
    if isinstance(spec, dict):
        return _load_from_dict(spec)
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return Load("resistive", _check_value(spec, "resistance"))
    if not isinstance(spec, str):
        raise LoadError(f"load spec must be a number, string or object, got {type(spec).__name__}")
    text = spec.strip().lower()
    if text == "open":
        return Load("open", OPEN_OHM)
    if text in ("short", "0"):
        return Load("short", 0.0)
    if text.startswith("skin"):
        vals = dict(DEFAULT_SKIN)
        rest = text[4:]
        if rest:
            if not rest.startswith(":"):
                raise LoadError(f"cannot read load {spec!r}; form: skin:rs=1k,rp=10k,cp=100n")
            for item in rest[1:].split(","):
                key, eq, val = item.partition("=")
                key = key.strip().replace("_", "")
                if not eq or key not in ("rs", "rp", "cp"):
                    raise LoadError(f"cannot read {item!r} in {spec!r}; keys: rs, rp, cp")
                if key == "cp":
                    vals["c_p"] = _parse_number(val, _CAP_SUFFIX, "capacitance")
                else:
                    vals["r_" + key[1]] = _parse_number(val, _SUFFIX, "resistance")
        return Load("skin", vals["r_s"], vals["r_p"], vals["c_p"])
    ohms = _parse_number(text, _SUFFIX, "resistance")
    if ohms == 0:
        return Load("short", 0.0)
    return Load("resistive", ohms)


make_load = parse_load


def _load_from_dict(d: dict) -> Load:
    kind = d.get("kind", "resistive")
    if kind == "open":
        return Load("open", OPEN_OHM)
    if kind == "short":
        return Load("short", 0.0)

    def val(*keys, default=None):
        for k in keys:
            if k in d:
                v = d[k]
                return parse_load(v).r_s if isinstance(v, str) and kind != "skin" else v
        return default

    if kind == "resistive":
        r = val("r_s_ohm", "ohm", "r_s")
        if isinstance(r, str):
            return parse_load(r)
        return Load("resistive", _check_value(r, "resistance"))
    if kind == "skin":
        out = {}
        for name, keys in (("r_s", ("r_s_ohm", "r_s")), ("r_p", ("r_p_ohm", "r_p")), ("c_p", ("c_p_f", "c_p"))):
            v = next((d[k] for k in keys if k in d), DEFAULT_SKIN[name])
            if isinstance(v, str):
                v = _parse_number(v, _CAP_SUFFIX if name == "c_p" else _SUFFIX,
                                  "capacitance" if name == "c_p" else "resistance")
            out[name] = v
        return Load("skin", out["r_s"], out["r_p"], out["c_p"])
    raise LoadError(f"unknown load kind {kind!r}; known: resistive, skin, open, short")


# ---- closed forms ---------------------------------------------------------------------------------------------
# An Expo is a tuple (c0, c1, tau1, c2, tau2): f(x) = c0 + c1*exp(-x/tau1) + c2*exp(-x/tau2).

ZERO = (0.0, 0.0, 1.0, 0.0, 1.0)


def ev(f, x: float) -> float:
    c0, c1, t1, c2, t2 = f
    r = c0
    if c1:
        r += c1 * math.exp(-x / t1)
    if c2:
        r += c2 * math.exp(-x / t2)
    return r


def integral(f, xa: float, xb: float) -> float:
    """Integral of f over [xa, xb]."""
    c0, c1, t1, c2, t2 = f
    d = xb - xa
    r = c0 * d
    if c1:      # e^{-xa/t} - e^{-xb/t} = e^{-xa/t} * -expm1(-d/t): no cancellation for short spans
        r -= c1 * t1 * math.exp(-xa / t1) * math.expm1(-d / t1)
    if c2:
        r -= c2 * t2 * math.exp(-xa / t2) * math.expm1(-d / t2)
    return r


def is_const(f) -> bool:
    return not f[1] and not f[3]


def scale(f, k: float):
    return (f[0] * k, f[1] * k, f[2], f[3] * k, f[4])


def ev_array(f, x):
    """Vectorised ev for a numpy array of x."""
    import numpy as np
    c0, c1, t1, c2, t2 = f
    r = np.full(np.shape(x), c0, dtype=float)
    if c1:
        r += c1 * np.exp(-x / t1)
    if c2:
        r += c2 * np.exp(-x / t2)
    return r


def monotone_breaks(f, xa: float, xb: float) -> list:
    """[xa, (x_extremum), xb]: f is monotone between consecutive points (a sum of two exponentials has at most
    one extremum)."""
    c0, c1, t1, c2, t2 = f
    pts = [xa]
    if c1 and c2 and t1 != t2 and (c1 > 0) != (c2 > 0):
        # f'(x) = 0  <=>  (c1/t1) e^{-x/t1} = -(c2/t2) e^{-x/t2}
        den = c2 * t1
        k = 1.0 / t1 - 1.0 / t2
        if den != 0 and k != 0:                       # (denormal coefficients: no usable extremum)
            ratio = -(c1 * t2) / den
            if 0 < ratio < math.inf:
                xs = math.log(ratio) / k
                if xa < xs < xb:
                    pts.append(xs)
    pts.append(xb)
    return pts


def first_above(f, level: float, xa: float, xb: float, resolution: float = 1e-10):
    """Smallest x in [xa, xb] with f(x) > level (to `resolution` seconds, xa if already above), or None."""
    if ev(f, xa) > level:
        return xa                    # already above: the condition holds from xa on
    pts = monotone_breaks(f, xa, xb)
    for lo, hi in zip(pts, pts[1:]):
        if ev(f, hi) > level:        # monotone on [lo, hi] and not above at lo: one crossing inside
            while hi - lo > resolution:
                mid = 0.5 * (lo + hi)
                if ev(f, mid) > level:
                    hi = mid
                else:
                    lo = mid
            return hi
    return None


def crossings(f, level: float, xa: float, xb: float, resolution: float = 1e-10) -> list:
    """All (x, rising) where f crosses `level` in (xa, xb] (rising: goes above)."""
    out = []
    pts = monotone_breaks(f, xa, xb)
    state = ev(f, xa) > level
    for lo, hi in zip(pts, pts[1:]):
        fhi = ev(f, hi) > level
        if fhi != state:
            a, b = lo, hi
            while b - a > resolution:
                mid = 0.5 * (a + b)
                if (ev(f, mid) > level) == fhi:
                    b = mid
                else:
                    a = mid
            out.append((b, fhi))
            state = fhi
    return out


# ---- one piece of electrode waveform ----------------------------------------------------------------------------

DRIVE, LIMIT, GROUND, FLOAT = "drive", "limit", "ground", "float"


def _nudge(tau_a: float, tau_b: float) -> float:
    """Keep two time constants apart so the particular solution exists (equal taus: t*e^-t term)."""
    if abs(tau_a - tau_b) <= 1e-9 * tau_b:
        return tau_a * (1 + 1e-6)
    return tau_a


def response(load: Load, mode: str, sign: int, vc0: float, *, iset=(0.0, 0.0, 1.0), v_src: float = 0.0,
             r_extra: float = 0.0):
    """Closed forms (i, v, vc) of electrode current, load voltage and capacitor voltage for one piece.

    iset = (a, b, tau): source setpoint a + b*exp(-x/tau) in A (DRIVE); v_src (> 0) and r_extra for LIMIT.
    """
    if mode == DRIVE:
        a, b, tau1 = iset
        if not load.has_cap:
            i = (sign * a, sign * b, tau1, 0.0, 1.0)
            return i, scale(i, load.r_s), ZERO
        rp, c, tc = load.r_p, load.c_p, load.tau_c
        tau1 = _nudge(tau1, tc)
        k = sign * b / (c * (1.0 / tc - 1.0 / tau1)) if b else 0.0
        vinf = sign * a * rp
        vc = (vinf, vc0 - vinf - k, tc, k, tau1)
        i = (sign * a, sign * b, tau1, 0.0, 1.0)
        v = (vinf + sign * a * load.r_s, vc0 - vinf - k, tc, k + sign * b * load.r_s, tau1)
        return i, v, vc
    if mode == LIMIT:
        r = load.r_s + r_extra
        vs = sign * v_src
        if not load.has_cap:
            if r == 0:
                raise ValueError("LIMIT mode into zero ohms")
            i = (vs / r, 0.0, 1.0, 0.0, 1.0)
            return i, scale(i, load.r_s), ZERO
        rp, c = load.r_p, load.c_p
        vinf = vs * rp / (r + rp)
        tau = c * r * rp / (r + rp)
        vc = (vinf, vc0 - vinf, tau, 0.0, 1.0)
        i = ((vs - vinf) / r, -(vc0 - vinf) / r, tau, 0.0, 1.0)
        k = load.r_s / r
        v = (k * vs + (1 - k) * vinf, (1 - k) * (vc0 - vinf), tau, 0.0, 1.0)
        return i, v, vc
    if mode == GROUND:
        if not load.has_cap or vc0 == 0.0:
            return ZERO, ZERO, ZERO
        vc = (0.0, vc0, load.tau_g, 0.0, 1.0)
        return (0.0, -vc0 / load.r_s, load.tau_g, 0.0, 1.0), ZERO, vc
    if mode == FLOAT:
        if not load.has_cap or vc0 == 0.0:
            return ZERO, ZERO, ZERO
        vc = (0.0, vc0, load.tau_c, 0.0, 1.0)
        return ZERO, vc, vc
    raise ValueError(f"unknown mode {mode!r}")
