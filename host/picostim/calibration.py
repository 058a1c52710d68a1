"""Per-device calibration against the rig's reference resistor (issue 12): the public API behind
`picostim calibrate` and the production station's calibration step.

    from picostim.calibration import calibrate
    result = calibrate(dev, rig, operator="alice")      # dev: picostim.device.Device, rig: a rig (client)

Flow: put the reference resistor on the electrodes, measure the unit as it is (its record in force: the "before"
table), clear the record and drive setpoints across the range with the rig measuring the delivered amplitude and the
device reporting what its own sense path reads (telemetry), fit the output gain/offset (rig vs commanded nominal
current) and the sense gain/offset (device reading vs rig), write the record (calib_set: checked and audited on
the device), and measure every level again ("after"). The rig is the reference (0.1 %); every number judged comes
from it.

Limits the result is judged against (issue 12): delivered within +-1 % + 2 uA of the level, the device's own reading
within +-2 % + 2 uA of the rig. A level above the device's cap bound (the amplitude the worst-case parts could push
over the cap; firmware/lib/calib.py cap_level) is delivered at that bound: the table says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .device import DeviceError, utc_now

ACC_PCT, ACC_UA = 1.0, 2.0          # delivered vs level, after calibration
DEV_PCT, DEV_UA = 2.0, 2.0          # the device's own reading vs the rig
REFERENCE_LOAD = "2k"               # the rig's reference resistor
PHASE_US, GAP_US, RATE_HZ = 300, 50, 100
SETPOINT_FRACS = (0.1, 0.25, 0.45, 0.65, 0.85)
G1 = 100000


class CalibrationError(Exception):
    pass


def allowed(level_ua: float, pct: float, ua: float) -> float:
    return abs(level_ua) * pct / 100 + ua


@dataclass
class Point:
    target_ua: float                 # what was asked
    applied_ua: float                # what the device says it applies (calibrated prediction; cap bound)
    rig_ua: float                    # delivered, measured by the rig (mean |amplitude| of complete pulses)
    device_ua: float | None          # the device's own reading (mean of its telemetry samples)
    n_pulses: int = 0
    n_samples: int = 0
    device_mv: float | None = None   # the device's electrode voltage reading (mean of its telemetry samples)

    @property
    def error_ua(self) -> float:
        return self.rig_ua - self.target_ua

    @property
    def error_pct(self) -> float:
        return 100 * self.error_ua / self.target_ua if self.target_ua else 0.0

    @property
    def bounded(self) -> bool:
        """The device holds this level at its cap bound (below the level)."""
        return self.applied_ua < self.target_ua - 1

    @property
    def device_error_ua(self) -> float | None:
        return None if self.device_ua is None else self.device_ua - self.rig_ua

    def ok(self) -> bool:
        ref = self.applied_ua if self.bounded else self.target_ua
        return abs(self.rig_ua - ref) <= allowed(ref, ACC_PCT, ACC_UA)

    def device_ok(self) -> bool:
        return self.device_ua is not None and abs(self.device_ua - self.rig_ua) <= allowed(self.rig_ua, DEV_PCT, DEV_UA)

    def to_dict(self) -> dict:
        return {"target_ua": self.target_ua, "applied_ua": self.applied_ua, "rig_ua": round(self.rig_ua, 3),
                "error_ua": round(self.error_ua, 3), "error_pct": round(self.error_pct, 3), "bounded": self.bounded,
                "device_ua": None if self.device_ua is None else round(self.device_ua, 3),
                "device_error_ua": None if self.device_error_ua is None else round(self.device_error_ua, 3),
                "ok": self.ok(), "device_ok": self.device_ok(), "n_pulses": self.n_pulses,
                "n_samples": self.n_samples, "device_mv": None if self.device_mv is None else round(self.device_mv, 2)}


@dataclass
class Result:
    record: dict | None = None                  # the record written (calib.py units)
    fit: dict = field(default_factory=dict)     # the fitted values as floats
    before: list = field(default_factory=list)  # [Point] at every level, the unit as it came
    raw: list = field(default_factory=list)     # [Point] at the setpoints, no record in force (what the fit used)
    after: list = field(default_factory=list)   # [Point] at every level, the new record in force
    cap_bound_ua: int | None = None
    passed: bool = False
    reason: str = ""

    def summary(self, points) -> dict:
        if not points:
            return {}
        free = [p for p in points if not p.bounded]
        return {"worst_error_pct": max((abs(p.error_pct) for p in free), default=None),
                "worst_error_ua": max((abs(p.error_ua) for p in free), default=None),
                "worst_device_error_ua": max((abs(p.device_error_ua) for p in points if p.device_ua is not None),
                                             default=None),
                "all_ok": all(p.ok() for p in points), "device_all_ok": all(p.device_ok() for p in points),
                "bounded_levels": [p.target_ua for p in points if p.bounded]}

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reason": self.reason, "record": self.record, "fit": self.fit,
                "cap_bound_ua": self.cap_bound_ua,
                "before": [p.to_dict() for p in self.before], "before_summary": self.summary(self.before),
                "raw": [p.to_dict() for p in self.raw],
                "after": [p.to_dict() for p in self.after], "after_summary": self.summary(self.after)}


def _fit(xs, ys):
    """Least squares y = g*x + o."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx <= 0:
        raise CalibrationError("setpoints do not span a range")
    g = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return g, my - g * mx


def _wait_settled(dev, rig, target, timeout_s=20.0):
    """Until the session runs at a steady setpoint (the ramp over: two polls 50 ms apart agree) and the ISET
    filter has settled."""
    t_end = rig.now_s() + timeout_s
    last = None
    while True:
        st = dev.status()
        if st.get("state") not in ("ramping", "running"):
            raise CalibrationError(f"the unit stopped stimulating ({st.get('state')}, fault {st.get('fault')})")
        if st.get("state") == "running" and last is not None and st.get("setpoint_ua") == last:
            break
        last = st.get("setpoint_ua") if st.get("state") == "running" else None
        if rig.now_s() > t_end:
            raise CalibrationError(f"the unit did not reach {target} uA within {timeout_s} s")
        rig.wait(0.05)
    rig.wait(0.01)                      # 20 ISET RC time constants
    return st


def _device_reading(dev, samples, key="i_ua") -> tuple[float | None, int]:
    vals = [s[key] for s in samples if s.get(key) is not None and s.get("i_ua") is not None
            and s.get("state") == "running"]
    return (sum(vals) / len(vals), len(vals)) if vals else (None, 0)


def measure_point(dev, rig, ua: int, level: int = 1, capture_s: float = 0.3, tel_hz: int = 40) -> Point:
    """Drive `ua` (a trial amplitude of the running session) and measure it: the rig's mean |amplitude| over the
    complete pulses of a capture_s window, and the mean of the device's telemetry readings over the same time."""
    r = dev.set_level(level, ua=int(ua))
    _wait_settled(dev, rig, ua)
    st = dev.status()
    dev.telemetry_enable(True, tel_hz)
    dev.poll_events()
    try:
        cap = rig.capture(capture_s)
    finally:
        samples = []
        for ev in dev.poll_events(timeout=0.2):
            if ev.get("ev") == "telemetry":
                samples.extend(dev.telemetry_samples(ev))
        dev.telemetry_enable(False)
        for ev in dev.poll_events(timeout=0.05):
            if ev.get("ev") == "telemetry":
                samples.extend(dev.telemetry_samples(ev))
    ps = [p for p in cap.pulses if p.active and not p.partial and len(p.widths_ns) == 2]
    if len(ps) < 3:
        raise CalibrationError(f"the rig saw {len(ps)} complete pulses at {ua} uA (is the reference resistor on?)")
    amps = [abs(a) for p in ps for a in p.amp_ua]
    dev_ua, n = _device_reading(dev, samples)
    dev_mv, _ = _device_reading(dev, samples, "v_mv")
    return Point(target_ua=float(ua), applied_ua=float(st.get("setpoint_ua", r.get("target_ua", ua))),
                 rig_ua=sum(amps) / len(amps), device_ua=dev_ua, n_pulses=len(ps), n_samples=n, device_mv=dev_mv)


def _session(dev):
    return dev.start(level=1, phase_us=PHASE_US, gap_us=GAP_US, rate_hz=RATE_HZ, program=None)


class CalibrationCancelled(Exception):
    """calibrate()'s `cancelled()` said stop: no record was written by this call after that point."""


def _points(dev, rig, uas, cancelled=None) -> list:
    out = []
    for ua in uas:
        if cancelled is not None and cancelled():
            raise CalibrationCancelled("calibration cancelled")
        out.append(measure_point(dev, rig, ua))
    return out


def measure_levels(dev, rig, levels, cancelled=None) -> list:
    """Every level of the unit's table, measured at the electrodes (one session, lowest level first)."""
    _session(dev)
    try:
        out = _points(dev, rig, levels, cancelled)
    finally:
        _stop(dev)
    return out


def _stop(dev):
    try:
        dev.stop()
    except DeviceError:
        pass


def setpoints(cap_bound: int) -> list[int]:
    """Setpoints across the range the unit can drive: multiples of 4 uA (whole ISET counts at 1000 uA full scale
    and a 1250-count PWM period, so the commanded nominal current is exact)."""
    pts = sorted({max(8, int(cap_bound * f) // 4 * 4) for f in SETPOINT_FRACS})
    return [p for p in pts if p <= cap_bound]


def calibrate(dev, rig, operator: str = "unknown", *, reference: str | None = REFERENCE_LOAD,
              progress=None, cancelled=None) -> Result:
    """Calibrate the unit `dev` (picostim.device.Device, application running) with the rig `rig` (VirtualRig or
    RigClient). Writes the record only when the fit is plausible; raises CalibrationError when it cannot measure.
    A locked unit (issue 14) needs a Device with a signer: it signs calib_set itself. Returns the Result (before/after
    tables); `passed` says whether every level is within +-1 % + 2 uA and the device's own reading within
    +-2 % + 2 uA of the rig. `cancelled()`, asked before each point measured with a record in force, ends the run with CalibrationCancelled (the
    output stopped, the reference load put back)."""
    say = progress or (lambda msg: None)
    res = Result()
    prev_load = None
    if reference is not None:
        try:
            prev_load = rig.load()
            rig.set_load(reference)
        except Exception as e:  # noqa: BLE001 - a rig without a switchable load: the fixture's resistor is on
            if "not available" not in str(e):
                raise
            prev_load = None
    _stop(dev)
    try:
        info = dev.request("calib_get")
        levels = list(dev.levels_get())
        say("before: every level as the unit is")
        res.before = measure_levels(dev, rig, levels, cancelled)
        _set(dev, {"clear": True, "operator": operator, "utc": utc_now()})
        bound = int(dev.request("calib_get")["cap_bound_ua"])
        pts = setpoints(bound)
        say(f"raw: {len(pts)} setpoints {pts} uA, no record in force")
        _session(dev)
        try:
            res.raw = _points(dev, rig, pts)   # not cancelled here: the unit has no record in force
        finally:
            _stop(dev)
        nominal = [p.applied_ua for p in res.raw]      # identity record: applied = the commanded nominal current
        g, o = _fit(nominal, [p.rig_ua for p in res.raw])
        if any(p.device_ua is None for p in res.raw):
            raise CalibrationError("the unit reported no current reading at a setpoint (telemetry)")
        sg, so = _fit([p.rig_ua for p in res.raw], [p.device_ua for p in res.raw])
        res.fit = {"out_gain": g, "out_offset_ua": o, "sense_gain": sg, "sense_offset_ua": so,
                   "previous": info.get("calibration")}
        for name, v in (("output", g), ("sense", sg)):
            if not 0.8 <= v <= 1.2:
                raise CalibrationError(f"implausible {name} gain {v:.4f} from the setpoints (rig "
                                       f"{[round(p.rig_ua, 1) for p in res.raw]} uA, device "
                                       f"{[None if p.device_ua is None else round(p.device_ua, 1) for p in res.raw]} "
                                       f"uA): no record written")
        rec = {"out_gain": int(round(g * G1)), "out_off": int(round(o * 10)), "sense_gain": int(round(sg * G1)),
               "sense_off": int(round(so * 10))}
        # the electrode voltage reading against the reference resistor's voltage (rig current x its resistance)
        r_ref = _reference_ohm(rig)
        if r_ref and all(p.device_mv is not None for p in res.raw):
            vg, vo = _fit([p.rig_ua * r_ref / 1000 for p in res.raw], [p.device_mv for p in res.raw])
            res.fit.update(v_gain=vg, v_offset_mv=vo, reference_ohm=r_ref)
            rec.update(v_gain=int(round(vg * G1)), v_off=int(round(vo * 10)))
        say(f"fit: output gain {g:.5f} offset {o:+.2f} uA, sense gain {sg:.5f} offset {so:+.2f} uA")
        reply = _set(dev, {**rec, "operator": operator, "utc": utc_now()})
        res.record = reply.get("calibration")
        res.cap_bound_ua = int(dev.request("calib_get")["cap_bound_ua"])
        say("after: every level with the new record")
        res.after = measure_levels(dev, rig, levels, cancelled)
        bad = [p for p in res.after if not p.ok()]
        dbad = [p for p in res.after if not p.device_ok()]
        res.passed = not bad and not dbad
        if bad:
            res.reason = "levels outside +-1 % + 2 uA: " + ", ".join(f"{p.target_ua:g} uA ({p.error_pct:+.2f} %)"
                                                                  for p in bad)
        elif dbad:
            res.reason = "device reading outside +-2 % + 2 uA of the rig at " + ", ".join(
                f"{p.target_ua:g} uA ({p.device_error_ua:+.2f} uA)" for p in dbad)
        return res
    finally:
        _stop(dev)
        if prev_load is not None and reference is not None:
            try:
                rig.set_load(prev_load)
            except Exception:
                pass


def _reference_ohm(rig) -> float | None:
    try:
        d = rig.load()
    except Exception:  # noqa: BLE001 - a rig that cannot say what is on the electrodes: no voltage fit
        return None
    return float(d["r_s_ohm"]) if d.get("kind") == "resistive" and d.get("r_s_ohm") else None


def _set(dev, fields):
    try:
        return dev.request("calib_set", **fields)
    except DeviceError as e:
        raise CalibrationError(f"the unit refused the calibration record: {e.code}: {e.detail}") from None


def is_finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
