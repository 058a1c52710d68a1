"""Loads: spec parsing and the closed-form electrode response, checked against an independent numeric integration."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from picostim.sim.chip import load as ld
from picostim.sim.chip.load import DRIVE, FLOAT, GROUND, LIMIT, LoadError, parse_load


# ---- parsing -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, kind, r_s", [
    ("500", "resistive", 500.0), ("2k", "resistive", 2000.0), ("10k", "resistive", 10000.0),
    ("1.5M", "resistive", 1.5e6), ("470ohm", "resistive", 470.0), (" 2K ", "resistive", 2000.0),
    (220, "resistive", 220.0), (3300.5, "resistive", 3300.5), ("open", "open", ld.OPEN_OHM),
    ("short", "short", 0.0), ("0", "short", 0.0), ({"kind": "resistive", "r_s_ohm": 750}, "resistive", 750.0),
    ({"kind": "resistive", "ohm": "2k"}, "resistive", 2000.0), ({"kind": "open"}, "open", ld.OPEN_OHM),
])
def test_parse_resistive_open_short(spec, kind, r_s):
    load = parse_load(spec)
    assert load.kind == kind and load.r_s == r_s and not load.has_cap


def test_parse_skin_defaults_and_values():
    skin = parse_load("skin")
    assert (skin.r_s, skin.r_p, skin.c_p) == (1000.0, 100e3, 470e-9)
    assert skin.tau_c == pytest.approx(47e-3)
    assert skin.tau_g == pytest.approx(470e-9 * 1000 * 100e3 / 101e3)
    custom = parse_load("skin:rs=2k,rp=20k,cp=47n")
    assert (custom.r_s, custom.r_p, custom.c_p) == (2000.0, 20000.0, pytest.approx(47e-9))
    d = parse_load({"kind": "skin", "r_s_ohm": 500, "c_p_f": "1u"})
    assert (d.r_s, d.r_p, d.c_p) == (500.0, 100e3, pytest.approx(1e-6))
    assert parse_load(d.describe()) == d          # describe() round-trips


@pytest.mark.parametrize("bad", ["abc", "2x", "-5", "", "k", "skin:rs", "skin:foo=1", "skin:rs=0", "skinny",
                                 -5, float("nan"), float("inf"), True, None, [], {"kind": "bogus"},
                                 {"kind": "resistive", "r_s_ohm": -1}, {"kind": "resistive"}])
def test_parse_rejects_bad_specs(bad):
    with pytest.raises(LoadError):
        parse_load(bad)


@given(st.one_of(st.text(max_size=30), st.floats(), st.integers(), st.none(), st.booleans(),
                 st.dictionaries(st.sampled_from(["kind", "r_s_ohm", "r_p", "c_p", "ohm"]),
                                 st.one_of(st.text(max_size=8), st.floats(), st.integers()), max_size=4)))
@settings(max_examples=300, deadline=None)
def test_parse_never_fails_with_another_error(spec):
    try:
        load = parse_load(spec)
    except LoadError:
        return
    assert load.r_s >= 0 and math.isfinite(load.r_s)
    if load.has_cap:
        assert load.r_p > 0 and load.c_p > 0


# ---- closed forms vs numeric integration ---------------------------------------------------------------------------

def rk4(deriv, v0, t_end, n=20000):
    """Independent reference: classic RK4 on dv/dt = deriv(t, v)."""
    h = t_end / n
    v, t = v0, 0.0
    for _ in range(n):
        k1 = deriv(t, v)
        k2 = deriv(t + h / 2, v + h / 2 * k1)
        k3 = deriv(t + h / 2, v + h / 2 * k2)
        k4 = deriv(t + h, v + h * k3)
        v += h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        t += h
    return v


SKIN = parse_load("skin:rs=1k,rp=10k,cp=100n")      # tau_c 1 ms: the pulse-scale dynamics are visible


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("vc0", [0.0, 0.3, -0.5])
def test_drive_matches_numeric_ode(sign, vc0):
    a, b, tau = 300e-6, -250e-6, 500e-6             # setpoint rising from 50 uA towards 300 uA (ISET RC)
    i, v, vc = ld.response(SKIN, DRIVE, sign, vc0, iset=(a, b, tau))
    iset = lambda t: a + b * math.exp(-t / tau)   # noqa: E731
    deriv = lambda t, u: (sign * iset(t) - u / SKIN.r_p) / SKIN.c_p   # noqa: E731
    for t_end in (50e-6, 200e-6, 1e-3):
        assert ld.ev(vc, t_end) == pytest.approx(rk4(deriv, vc0, t_end, 4000), abs=1e-9)
        assert ld.ev(i, t_end) == pytest.approx(sign * iset(t_end), rel=1e-12)
        assert ld.ev(v, t_end) == pytest.approx(ld.ev(i, t_end) * SKIN.r_s + ld.ev(vc, t_end), abs=1e-12)
    assert ld.ev(vc, 0.0) == pytest.approx(vc0, abs=1e-15)


def test_drive_with_tau_equal_to_load_tau_is_still_right():
    skin = parse_load("skin:rs=1k,rp=5k,cp=100n")      # tau_c = 500 us = the ISET filter's tau
    i, v, vc = ld.response(skin, DRIVE, 1, 0.0, iset=(400e-6, -400e-6, 500e-6))
    deriv = lambda t, u: (400e-6 * (1 - math.exp(-t / 500e-6)) - u / skin.r_p) / skin.c_p   # noqa: E731
    assert ld.ev(vc, 700e-6) == pytest.approx(rk4(deriv, 0.0, 700e-6, 4000), rel=1e-5)


@pytest.mark.parametrize("r_extra, v_src", [(0.0, 3.5), (100.0, 12.0)])
def test_limit_matches_numeric_ode(r_extra, v_src):
    r = SKIN.r_s + r_extra
    i, v, vc = ld.response(SKIN, LIMIT, -1, 0.2, v_src=v_src, r_extra=r_extra)
    deriv = lambda t, u: ((-v_src - u) / r - u / SKIN.r_p) / SKIN.c_p   # noqa: E731
    for t_end in (30e-6, 300e-6):
        u = rk4(deriv, 0.2, t_end, 4000)
        assert ld.ev(vc, t_end) == pytest.approx(u, abs=1e-9)
        assert ld.ev(i, t_end) == pytest.approx((-v_src - u) / r, rel=1e-7)
        assert ld.ev(v, t_end) == pytest.approx(ld.ev(i, t_end) * SKIN.r_s + u, abs=1e-8)


def test_ground_discharges_through_rs_and_float_through_rp():
    i, v, vc = ld.response(SKIN, GROUND, 0, 0.7)
    assert ld.ev(i, 0) == pytest.approx(-0.7 / 1000)            # -v_c/R_s through the bridge's ground path
    assert ld.ev(vc, SKIN.tau_g) == pytest.approx(0.7 / math.e)
    assert ld.ev(v, 1e-5) == 0.0                                # terminals tied together
    # all the stored charge leaves, split between R_s (electrode current) and R_p
    q_rs = ld.integral(i, 0, 1.0)
    assert q_rs == pytest.approx(-0.7 * SKIN.c_p * SKIN.r_p / (SKIN.r_s + SKIN.r_p), rel=1e-9)
    i, v, vc = ld.response(SKIN, FLOAT, 1, 0.7)
    assert ld.ev(i, 1e-4) == 0.0 and ld.ev(v, SKIN.tau_c) == pytest.approx(0.7 / math.e)


def test_resistive_load_drive_and_limit():
    r10k = parse_load("10k")
    i, v, _ = ld.response(r10k, DRIVE, 1, 0.0, iset=(400e-6, 0.0, 5e-4))
    assert ld.ev(v, 1e-4) == pytest.approx(4.0)
    i, v, _ = ld.response(r10k, LIMIT, 1, 0.0, v_src=3.5)
    assert ld.ev(i, 0) == pytest.approx(350e-6) and ld.ev(v, 0) == pytest.approx(3.5)


# ---- root finding and integrals -------------------------------------------------------------------------------------

expo = st.tuples(st.floats(-2, 2), st.floats(-2, 2), st.floats(1e-5, 1e-2), st.floats(-2, 2), st.floats(1e-5, 1e-2))


@given(expo, st.floats(-1, 1))
@settings(max_examples=100, deadline=None)
def test_crossings_agree_with_dense_sampling(f, level):
    xb = 5e-3
    found = ld.crossings(f, level, 0.0, xb, resolution=1e-10)
    assert len(found) <= 2                                # at most one extremum: at most two crossings
    n = 3000
    xs = [xb * k / n for k in range(n + 1)]
    tol = 1e-9 * (1 + abs(f[0]) + abs(f[1]) + abs(f[3]))  # values within rounding of the level are "on" it
    state, changes = None, []
    for k, x in enumerate(xs):
        y = ld.ev(f, x) - level
        s = True if y > tol else (False if y < -tol else None)
        if s is None:
            continue
        if state is not None and s != state:
            changes.append((k, s))
        state = s
    # every clear crossing the grid sees is found, inside its grid step and in the right direction
    for k, rising in changes:
        assert any(xs[k - 1] - 1e-9 <= x <= xs[k] + 1e-9 and r == rising for x, r in found)
    first = ld.first_above(f, level, 0.0, xb)
    y0 = ld.ev(f, 0.0) - level
    if y0 > 0:
        assert first == 0.0
    elif first is not None:
        assert ld.ev(f, first) > level and all(ld.ev(f, x) <= level + tol for x in xs if x < first - 1e-9)
    else:
        assert not any(r for _, r in changes)


@given(expo, st.floats(0, 3e-3), st.floats(0, 3e-3))
@settings(max_examples=100, deadline=None)
def test_integral_matches_simpson(f, xa, span):
    xb = xa + span
    n = 2 * max(100, int(span / min(f[2], f[4]) * 20))          # Simpson, step <= tau/40
    h = span / n
    simpson = (ld.ev(f, xa) + ld.ev(f, xb) + sum((4 if k % 2 else 2) * ld.ev(f, xa + k * h)
                                                  for k in range(1, n))) * h / 3
    scale_ = max(1e-12, max(abs(c) for c in (f[0], f[1], f[3])) * span)
    assert ld.integral(f, xa, xb) == pytest.approx(simpson, abs=1e-6 * scale_)
