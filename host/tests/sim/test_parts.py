"""Virtual units with tolerances (issue 12, host/picostim/sim/parts.py): each unit's part values come from its seed
(by default its unique_id), inside the board profile's tolerance ranges; its ADC has the RP2040-E11 wide codes and
~8.7 ENOB; ideal parts stay ideal."""
import pytest

from picostim import boards
from picostim.sim.board import BoardError, unit_parts
from picostim.sim.parts import DNL_CODES, Parts, enob, seed_from_uid

PROF = boards.load("handheld-home")
TOL = PROF["tolerances"]


def test_every_drawn_value_inside_the_profile_ranges_and_spread_over_them():
    units = [Parts.draw(PROF, s) for s in range(200)]
    src, sense = TOL["current_source"], TOL["sense"]
    g = [u.src_gain for u in units]
    o = [u.src_offset_a * 1e6 for u in units]
    assert all(abs(x - 1) <= src["gain_pct"] / 100 for x in g) and all(abs(x) <= src["offset_ua"] for x in o)
    assert max(g) - min(g) > 1.6 * src["gain_pct"] / 100          # spread over the range, not clustered
    assert all(abs(u.sense_gain - 1) <= sense["gain_pct"] / 100 for u in units)
    assert all(abs(u.sense_offset_v * 1e3) <= sense["offset_mv"] for u in units)
    assert all(abs(u.el_div - 1) <= TOL["electrode_divider_pct"] / 100 for u in units)
    lo, hi = TOL["adc"]["dnl_lsb"]
    assert all(lo <= w <= hi for u in units for w in u.adc_dnl_lsb)
    r = [u.rise_s * 1e6 for u in units]
    assert 1.4 < min(r) and max(r) < 2.6


def test_same_seed_same_unit_other_seed_other_unit():
    assert Parts.draw(PROF, 7).to_dict() == Parts.draw(PROF, 7).to_dict()
    assert Parts.draw(PROF, 7).to_dict() != Parts.draw(PROF, 8).to_dict()
    uid = "e6614c311b2a7f01"
    assert unit_parts(PROF, uid).to_dict() == Parts.draw(PROF, seed_from_uid(uid)).to_dict()   # default: the uid
    assert unit_parts(PROF, uid, unit_seed=3).to_dict() == Parts.draw(PROF, 3).to_dict()
    ideal = unit_parts(PROF, uid, ideal=True)
    assert ideal.ideal and ideal.src_gain == 1.0 and ideal.adc_dnl_lsb == (0.0,) * 4
    with pytest.raises(BoardError):
        unit_parts(PROF, uid, unit_seed=-1)


def test_adc_wide_codes_at_the_e11_positions():
    u = Parts.draw(PROF, 5)
    hits = {}
    for k in range(0, 4096 * 20):
        code = u.adc_code(k / 20 / 4096 * 3.3, 3.3)
        hits[code] = hits.get(code, 0) + 1
    widths = {c: hits.get(c, 0) / 20 for c in range(1, 4095)}
    wide = sorted(c for c, w in widths.items() if w > 3)
    assert wide == list(DNL_CODES), wide
    for c, w in zip(DNL_CODES, u.adc_dnl_lsb):
        assert abs(widths[c] - (w + 1)) < 0.3, (c, widths[c], w)


def test_enob_about_8_7():
    vals = [enob(Parts.draw(PROF, s), noise_lsb=PROF["analog"]["adc_noise_lsb"], n=20000) for s in range(8)]
    assert 8.4 <= min(vals) and max(vals) <= 9.1, vals
    assert enob(Parts(), noise_lsb=1.0, n=20000) > 9.9          # ideal: quantisation + noise only


def test_ripple_from_pwm_frequency_and_rc():
    u = Parts.draw(PROF, 1)
    an = PROF["analog"]
    tau = an["iset_rc_tau_us"] * 1e-6
    vals = [u.ripple_a(t, 1e-3, 0.5, an["iset_pwm_hz"], tau) for t in range(0, 10_000, 50)]
    pp = max(vals) - min(vals)
    want = 1e-3 * u.src_gain * 0.25 / (an["iset_pwm_hz"] * tau)
    assert abs(pp - want) < 0.05 * want and abs(sum(vals) / len(vals)) < 0.05 * want
