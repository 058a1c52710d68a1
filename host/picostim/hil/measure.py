"""OpenHTF-style measurements: a named value with a unit and limits, judged PASS/FAIL and recorded on the test.

    def test_amplitude(dut, rig, measure):
        cap = rig.capture(...)
        measure("amplitude_pos", cap.amp_pos_ua, "uA", low=380, high=420)

`measure(...)` records a Measurement on the current test (it lands in the JSON record, JUnit XML properties and the
HTML report) and fails the test at once with a message showing the value, the limits and the unit when the value is
out of limits. `measure(..., check=False)` records without failing (the outcome still says FAIL), for tests that
want to gather several values before asserting.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

PASS = "PASS"
FAIL = "FAIL"

# user_properties keys: survive pytest-xdist (workers -> controller) and land in JUnit XML.
PROP_MEASUREMENT = "picostim_measurement"
PROP_WAVEFORM = "picostim_waveform"
PROP_DUT = "picostim_dut"
PROP_RIG = "picostim_rig"
PROP_ATTEMPT = "picostim_attempt"
PROP_BUNDLE = "picostim_bundle"        # the DUT's firmware bundle hash (hello), per test: lands in JUnit
PROP_PLACE = "picostim_place"     # the bench / labgrid place a test ran on
PROPS = (PROP_MEASUREMENT, PROP_WAVEFORM, PROP_DUT, PROP_RIG, PROP_ATTEMPT, PROP_BUNDLE, PROP_PLACE)


def prop(value) -> str:
    """A user_property value as JSON text: JUnit XML then carries JSON, and xdist ships it as a plain string."""
    return json.dumps(value, default=str, separators=(",", ":"))

_MAX_WAVEFORM_POINTS = 4000  # per trace, keeps records small; a plot has no more pixels than this anyway


class MeasurementFailure(AssertionError):
    """A measurement was outside its limits (an AssertionError, so pytest reports a plain test failure)."""

    def __init__(self, m: "Measurement"):
        self.measurement = m
        super().__init__(m.describe())


def _num(v, what):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"measurement {what} must be a number, got {type(v).__name__} {v!r}")
    if isinstance(v, float) and math.isnan(v):
        raise ValueError(f"measurement {what} is NaN")
    return v


TIME_UNITS = ("us", "ms", "s")


def fmt_value(v, unit: str = "") -> str:
    """A number for people: times with fixed decimals (µs to the ns), never exponent notation."""
    if v is None:
        return "-"
    if isinstance(v, bool) or not isinstance(v, float):
        return str(v)
    if unit in TIME_UNITS:
        return f"{v:.3f}"
    text = f"{v:.6g}"
    return f"{v:.3f}" if "e" in text else text


_fmt = fmt_value


@dataclass
class Measurement:
    name: str
    value: float
    unit: str
    low: float | None = None
    high: float | None = None
    outcome: str = PASS
    attempt: int = 1
    note: str = ""

    def judge(self) -> str:
        ok = True
        if self.low is not None and self.value < self.low:
            ok = False
        if self.high is not None and self.value > self.high:
            ok = False
        self.outcome = PASS if ok else FAIL
        return self.outcome

    def limits_text(self) -> str:
        u = self.unit
        if self.low is not None and self.high is not None:
            return f"[{_fmt(self.low, u)}, {_fmt(self.high, u)}] {u}"
        if self.low is not None:
            return f">= {_fmt(self.low, u)} {u}"
        if self.high is not None:
            return f"<= {_fmt(self.high, u)} {u}"
        return "(no limits)"

    def describe(self) -> str:
        s = f"measurement {self.name} = {_fmt(self.value, self.unit)} {self.unit}, limits {self.limits_text()}: {self.outcome}"
        if self.note:
            s += f" ({self.note})"
        return s

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Waveform:
    """A captured trace for the HTML report: time in us, one or more named series (e.g. current in uA)."""
    name: str
    t_us: list
    series: dict
    unit: str = "uA"
    title: str = ""
    attempt: int = 1
    requested: float | None = None     # the value asked for (drawn as a line)
    limits: list | None = None         # [low, high] the measurements judge against (drawn as a band; a side may be None)

    def to_dict(self) -> dict:
        return asdict(self)


def _decimate(t, ys: dict):
    n = len(t)
    if n <= _MAX_WAVEFORM_POINTS:
        return list(t), {k: list(v) for k, v in ys.items()}
    # Keep min and max of each bucket so narrow pulses stay visible after decimation.
    buckets = _MAX_WAVEFORM_POINTS // 2
    step = n / buckets
    t_out, y_out = [], {k: [] for k in ys}
    key0 = next(iter(ys))
    for b in range(buckets):
        lo, hi = int(b * step), max(int((b + 1) * step), int(b * step) + 1)
        seg = ys[key0][lo:hi]
        i_min = lo + min(range(len(seg)), key=seg.__getitem__)
        i_max = lo + max(range(len(seg)), key=seg.__getitem__)
        for i in sorted((i_min, i_max)):
            t_out.append(t[i])
            for k, v in ys.items():
                y_out[k].append(v[i])
    return t_out, y_out


@dataclass
class TestMeasurements:
    """The `measure` fixture: callable, collects this test's measurements and waveforms."""
    nodeid: str = ""
    measurements: list = field(default_factory=list)
    waveforms: list = field(default_factory=list)
    attempt: int = 1
    _sink: object = None  # callable(key, value) that stores a user_property on the pytest item
    defer: bool = False   # OpenHTF style (the plugin's fixture): record every measurement, fail after the test body
    _deferred: list = field(default_factory=list)

    def __call__(self, name: str, value, unit: str, low=None, high=None, *, check: bool = True,
                 note: str = "") -> Measurement:
        __tracebackhide__ = True  # pytest shows the test's line, not this one
        if not isinstance(name, str) or not name:
            raise ValueError("measurement name must be a non-empty string")
        if not isinstance(unit, str):
            raise TypeError("measurement unit must be a string (use '' for dimensionless)")
        if isinstance(value, bool):
            value = int(value)
        value = _num(value, f"{name} value")
        if low is not None:
            low = _num(low, f"{name} low limit")
        if high is not None:
            high = _num(high, f"{name} high limit")
        if low is not None and high is not None and low > high:
            raise ValueError(f"measurement {name}: low limit {low} above high limit {high}")
        if unit == "ns":    # times are recorded and shown in µs (3 decimals keep the ns)
            value, unit = value / 1000, "us"
            low = None if low is None else low / 1000
            high = None if high is None else high / 1000
        m = Measurement(name=name, value=value, unit=unit, low=low, high=high, attempt=self.attempt, note=note)
        m.judge()
        self.measurements.append(m)
        if self._sink:
            self._sink(PROP_MEASUREMENT, prop(m.to_dict()))
        if check and m.outcome == FAIL:
            if self.defer:
                self._deferred.append(m)
            else:
                raise MeasurementFailure(m)
        return m

    def pop_deferred(self) -> list:
        """Failed (checked) measurements recorded since the last call: the test fails on them after its body."""
        out, self._deferred[:] = list(self._deferred), []
        return out

    def waveform(self, name: str, t_us, series: dict, unit: str = "uA", title: str = "", *, requested=None,
                 limits=None) -> Waveform:
        """Attach a captured trace (plotted in the HTML report, with the requested value as a line and the limits
        as a band when given)."""
        t_us = [float(x) for x in t_us]
        series = {str(k): [float(x) for x in v] for k, v in series.items()}
        if not series or any(len(v) != len(t_us) for v in series.values()):
            raise ValueError(f"waveform {name}: every series needs one value per time point")
        t_us, series = _decimate(t_us, series)
        w = Waveform(name=name, t_us=t_us, series=series, unit=unit, title=title, attempt=self.attempt,
                     requested=None if requested is None else float(requested),
                     limits=None if limits is None else [None if x is None else float(x) for x in limits])
        self.waveforms.append(w)
        if self._sink:
            self._sink(PROP_WAVEFORM, prop(w.to_dict()))
        return w

    @property
    def failed(self) -> list:
        return [m for m in self.measurements if m.outcome == FAIL]

    def assert_all(self):
        """Fail if any measurement recorded with check=False was out of limits."""
        bad = self.failed
        if bad:
            raise failure_of(bad)


def failure_of(bad: list, then: BaseException | None = None) -> AssertionError:
    """One assertion for the failed measurements of a test (and what the test body raised after them)."""
    e = MeasurementFailure(bad[0]) if len(bad) == 1 else AssertionError("; ".join(m.describe() for m in bad))
    if then is not None:
        first = str(then).splitlines()[0] if str(then) else ""
        e.args = (f"{e.args[0]}; then the test raised {type(then).__name__}: {first}",)
    return e


_current: TestMeasurements | None = None


def set_current(tm: TestMeasurements | None) -> None:
    global _current
    _current = tm


def measure(name: str, value, unit: str, low=None, high=None, **kw) -> Measurement:
    """Record a measurement on the test that is running now (module-level form of the `measure` fixture)."""
    if _current is None:
        raise RuntimeError("measure() called outside a test run by the picostim pytest plugin")
    return _current(name, value, unit, low, high, **kw)
