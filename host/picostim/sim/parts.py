"""One virtual unit's analog parts: component values drawn from the board profile's tolerance ranges.

A production run of handhelds is not ideal: the current source has gain and offset errors, the sense amplifier its
own, the electrode divider resistors their 1 %, the ISET RC filter its ripple, the source a finite rise and fall
time, and the RP2040 ADC its documented non-linearity (erratum RP2040-E11: wide codes at 512, 1536, 2560 and 3584,
a sawtooth INL between them, ~8.7 ENOB with the noise). A `Parts` is one unit's set of values, drawn from a seed
(by default derived from the unit's unique_id), so the same unit comes back with the same parts after every reset.
The ranges are data: `tolerances` in boards/<name>.json. `Parts.ideal()` keeps every part at nominal.

The front end (chip/frontend.py) and the ADC (chip/adc.py) apply a Parts through small hooks only; the rig is the
reference instrument and is not touched by any of this (its own stated accuracy is 0.1 %).
"""
from __future__ import annotations

import math
import random

DNL_CODES = (512, 1536, 2560, 3584)     # RP2040-E11: these codes are wide (DNL spikes)


def _uniform(rng, half):
    return rng.uniform(-half, half) if half else 0.0


class Parts:
    """Component values of one unit (SI units; factors are multiplicative, 1.0 = nominal)."""

    def __init__(self, *, src_gain=1.0, src_offset_a=0.0, sense_gain=1.0, sense_offset_v=0.0, el_div=1.0,
                 iset_rc=1.0, rise_s=0.0, fall_s=0.0, adc_dnl_lsb=(0.0, 0.0, 0.0, 0.0), adc_offset_lsb=0.0,
                 adc_gain=1.0, iset_ripple=False, seed=None, ideal=True):
        self.src_gain = float(src_gain)
        self.src_offset_a = float(src_offset_a)
        self.sense_gain = float(sense_gain)
        self.sense_offset_v = float(sense_offset_v)
        self.el_div = float(el_div)
        self.iset_rc = float(iset_rc)
        self.rise_s = float(rise_s)
        self.fall_s = float(fall_s)
        self.adc_dnl_lsb = tuple(float(w) for w in adc_dnl_lsb)
        self.adc_offset_lsb = float(adc_offset_lsb)
        self.adc_gain = float(adc_gain)
        self.iset_ripple = bool(iset_ripple)
        self.seed = seed
        self.ideal = ideal
        # the ADC transfer as anchor points (x: ideal code position, y: real code position), see adc_code
        xs, ys = [0.0], [0.0]
        for c, w in zip(DNL_CODES, self.adc_dnl_lsb):
            if w > 0:
                xs += [c - w, float(c)]
                ys += [float(c), float(c)]
        xs.append(4096.0)
        ys.append(4096.0)
        self._xs, self._ys = xs, ys

    @classmethod
    def ideal_parts(cls) -> "Parts":
        return cls()

    @classmethod
    def draw(cls, profile: dict, seed: int) -> "Parts":
        """This unit's values: each uniform in the profile's `tolerances` range (a profile without one is ideal)."""
        tol = profile.get("tolerances") if isinstance(profile, dict) else None
        if not tol:
            p = cls()
            p.seed = seed
            return p
        rng = random.Random(f"picostim-unit-{seed}")
        src, sense, adc = tol.get("current_source", {}), tol.get("sense", {}), tol.get("adc", {})
        rise = float(src.get("rise_fall_us", 0.0)) * 1e-6
        rise_tol = float(src.get("rise_fall_pct", 0.0)) / 100
        lo, hi = adc.get("dnl_lsb", [0.0, 0.0])
        return cls(
            src_gain=1.0 + _uniform(rng, float(src.get("gain_pct", 0.0)) / 100),
            src_offset_a=_uniform(rng, float(src.get("offset_ua", 0.0))) * 1e-6,
            sense_gain=1.0 + _uniform(rng, float(sense.get("gain_pct", 0.0)) / 100),
            sense_offset_v=_uniform(rng, float(sense.get("offset_mv", 0.0))) * 1e-3,
            el_div=1.0 + _uniform(rng, float(tol.get("electrode_divider_pct", 0.0)) / 100),
            iset_rc=1.0 + _uniform(rng, float(tol.get("iset_rc_pct", 0.0)) / 100),
            rise_s=rise * (1.0 + _uniform(rng, rise_tol)),
            fall_s=rise * (1.0 + _uniform(rng, rise_tol)),
            adc_dnl_lsb=tuple(rng.uniform(float(lo), float(hi)) for _ in DNL_CODES),
            adc_offset_lsb=_uniform(rng, float(adc.get("offset_lsb", 0.0))),
            adc_gain=1.0 + _uniform(rng, float(adc.get("gain_pct", 0.0)) / 100),
            iset_ripple=bool(tol.get("iset_ripple", False)),
            seed=seed, ideal=False)

    # ---- the ADC (hook: chip.adc.Adc.transfer) --------------------------------------------------------------------
    def adc_code(self, v: float, vref: float) -> int:
        """12-bit code for v volts at the pin (the front end has added the noise): gain and offset error, then the
        E11 transfer: below each wide code the codes are slightly narrower (the INL climbs to +w), the code itself
        is w+1 LSB wide (INL back to 0 after it)."""
        x = v / vref * 4096 * self.adc_gain + self.adc_offset_lsb
        if self._xs[1:-1]:
            xs, ys = self._xs, self._ys
            if 0.0 < x < 4096.0:
                k = 1
                while xs[k] < x:
                    k += 1
                x0, x1, y0, y1 = xs[k - 1], xs[k], ys[k - 1], ys[k]
                x = y0 + (x - x0) * (y1 - y0) / (x1 - x0) if x1 > x0 else y1
        raw = int(math.floor(x + 0.5))
        return 0 if raw < 0 else (4095 if raw > 4095 else raw)

    # ---- the front end (hooks in chip/frontend.py) ----------------------------------------------------------------
    def sense_volts(self, v_ideal: float) -> float:
        """I_SENSE amplifier output with this unit's gain and offset (an op-amp output does not go below 0 V)."""
        return max(0.0, v_ideal * self.sense_gain + self.sense_offset_v)

    def edge_factor(self, since_edge_s: float) -> float:
        """Fraction of the settled current `since_edge_s` after the phase began (first-order rise, 10-90 % time
        rise_s = 2.2 tau)."""
        if self.rise_s <= 0 or since_edge_s >= 30 * self.rise_s:
            return 1.0
        return 1.0 - math.exp(-max(0.0, since_edge_s) * 2.2 / self.rise_s)

    def ripple_a(self, t_ns: int, i_fs_a: float, duty: float, pwm_hz: float, tau_s: float) -> float:
        """ISET ripple (A) at t: the RC filter on a PWM of frequency f leaves a triangle of peak-to-peak
        I_fs*d*(1-d)/(f*tau) (first order, f*tau >> 1), zero mean."""
        if not self.iset_ripple or pwm_hz <= 0 or tau_s <= 0 or not 0 < duty < 1:
            return 0.0
        pp = i_fs_a * self.src_gain * duty * (1 - duty) / (pwm_hz * tau_s)
        ph = (t_ns * pwm_hz * 1e-9) % 1.0
        # rising while the PWM output is high (the first duty of the period), falling after
        tri = ph / duty if ph < duty else 1.0 - (ph - duty) / (1 - duty)
        return pp * (tri - 0.5)

    def to_dict(self) -> dict:
        return {"seed": self.seed, "ideal": self.ideal, "src_gain": self.src_gain,
                "src_offset_ua": self.src_offset_a * 1e6, "sense_gain": self.sense_gain,
                "sense_offset_mv": self.sense_offset_v * 1e3, "electrode_divider": self.el_div,
                "iset_rc": self.iset_rc, "rise_us": self.rise_s * 1e6, "fall_us": self.fall_s * 1e6,
                "adc_dnl_lsb": list(self.adc_dnl_lsb), "adc_offset_lsb": self.adc_offset_lsb,
                "adc_gain": self.adc_gain}


def seed_from_uid(uid: str) -> int:
    """The unit's seed from its 8-byte unique_id (16 hex digits): the same uid is the same unit."""
    return int(str(uid), 16) & 0x7FFFFFFF


def enob(parts: Parts, vref: float = 3.3, noise_lsb: float = 1.0, n: int = 40000, seed: int = 1) -> float:
    """Effective number of bits of this unit's ADC over a full-scale ramp with gaussian input noise (what the
    transfer, the quantisation and the noise do together; the gain/offset error is fitted out as a sine fit
    would)."""
    rng = random.Random(seed)
    xs, ys = [], []
    for k in range(n):
        x = (k + 0.5) / n * 4096
        v = x / 4096 * vref + rng.gauss(0.0, noise_lsb * vref / 4096)
        xs.append(x)
        ys.append(parts.adc_code(v, vref))
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(xs, ys))
    sxx = sum((a - mx) ** 2 for a in xs)
    g = sxy / sxx
    o = my - g * mx
    rms = math.sqrt(sum((b - (g * a + o)) ** 2 for a, b in zip(xs, ys)) / n)
    return 12 - math.log2(rms / (1 / math.sqrt(12)))
