"""Treatment-zone profile checks (issue 17) under CPython + hypothesis: the device's check (firmware/lib/board.py,
which runs firmware/lib/zones.py) and the host's (picostim.boards) accept and reject exactly the same zones; a
limit above the cap, an unknown program or a malformed zone is refused with a message naming the zone, and a bad
profile never reaches a device (the deploy image is not built)."""
import copy
import json
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import fwload
from picostim import boards as host_boards
from picostim import deploy

sys.path.insert(0, str(fwload.LIB))     # board.validate imports zones.py when it runs (then drops it again)
fw_board = fwload.load("board")
codes = fwload.load("pscodes")

BASE = json.loads((fwload.FW_DIR.parent / "boards" / "handheld-home.json").read_text())
CAP = BASE["limits"]["cap_ua"]
ZONES = [z["name"] for z in BASE["zones"]["list"]]
PROGS = BASE["programs"]


def outcome(check, b):
    try:
        check(b)
        return True, ""
    except ValueError as e:        # BoardError on both sides
        return False, str(e)


limit_st = st.one_of(st.fixed_dictionaries({"limit_ua": st.integers(-50, 2 * CAP)}),
                     st.fixed_dictionaries({"limit_frac": st.floats(-0.5, 2.0, allow_nan=False)}),
                     st.fixed_dictionaries({"limit_ua": st.sampled_from(["160", None, 1.5, True])}),
                     st.just({}), st.just({"limit_ua": 100, "limit_frac": 0.5}))
programs_st = st.lists(st.sampled_from(PROGS + ["tesla", ""]), max_size=4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(i=st.integers(0, len(ZONES) - 1), limit=limit_st, programs=programs_st,
       extra=st.sampled_from([{}, {"max_rate_hz": 10}, {"max_rate_hz": 0}, {"max_phase_us": 250},
                              {"max_phase_us": 5000}, {"session_max_s": 60}, {"session_max_s": 10 ** 6},
                              {"limit_uA": 5}]))
def test_device_and_host_agree_on_every_zone(i, limit, programs, extra):
    b = copy.deepcopy(BASE)
    z = b["zones"]["list"][i]
    for k in ("limit_ua", "limit_frac", "programs"):
        z.pop(k, None)
    z.update(limit)
    z["programs"] = programs
    z.update(extra)
    fw_ok, fw_msg = outcome(fw_board.validate, b)
    host_ok, host_msg = outcome(host_boards.validate, b)
    assert fw_ok == host_ok, (fw_msg, host_msg)
    lim = limit.get("limit_ua") if "limit_ua" in limit else None
    over = (isinstance(lim, int) and not isinstance(lim, bool) and lim > CAP) or \
        (len(limit) == 1 and isinstance(limit.get("limit_frac"), float) and limit["limit_frac"] > 1)
    if over:
        assert not fw_ok and z["name"] in fw_msg, fw_msg
        if "limit_uA" not in extra:     # (a misspelt key is named first: the profile's author sees the typo)
            assert "above the board cap" in fw_msg, fw_msg
    if any(p not in PROGS for p in programs):
        assert not fw_ok
    if fw_ok:       # accepted: the resolved limit is inside [probe, cap] and every program is the board's
        t = host_boards.zone_table(b)[i]
        assert codes.ZONE_MIN_LIMIT_UA <= t["limit_ua"] <= CAP and set(t["programs"]) <= set(PROGS)
    else:
        assert z["name"] in fw_msg or "zones" in fw_msg, fw_msg


def test_limit_frac_resolves_the_same_everywhere():
    for frac in (0.05, 0.1, 0.3, 0.333, 0.4, 0.5, 0.7, 0.9999, 1.0):
        b = copy.deepcopy(BASE)
        b["zones"]["list"][2] = {"name": "periorbital", "limit_frac": frac, "programs": ["microcurrent"]}
        ok, _ = outcome(host_boards.validate, b)
        if ok:
            assert host_boards.zone_table(b)[2]["limit_ua"] == int(frac * 10000 + 0.5) * CAP // 10000


def test_bad_profile_never_reaches_a_device(tmp_path):
    b = copy.deepcopy(BASE)
    b["zones"]["list"][2]["limit_frac"] = 1.5
    p = tmp_path / "bad-zone.json"
    p.write_text(json.dumps(b))
    with pytest.raises(host_boards.BoardError, match="periorbital.*above the board cap"):
        deploy.build_image(str(p), compile=False)


def test_shipped_profiles_zone_values():
    """home: sensitive zones as fractions of its 400 uA cap; pro: absolute uA well under its 800 uA cap."""
    home = {z["name"]: z for z in host_boards.zone_table(host_boards.load("handheld-home"))}
    pro = {z["name"]: z for z in host_boards.zone_table(host_boards.load("handheld-pro"))}
    for zt, cap in ((home, 400), (pro, 800)):
        assert zt["face"]["default"] and zt["face"]["limit_ua"] == cap
        for name in ("periorbital", "neck", "near_ear"):
            assert zt[name]["limit_ua"] <= cap // 2 and "ems" not in zt[name]["programs"]
            assert zt[name]["max_phase_us"] and zt[name]["max_rate_mhz"] and zt[name]["session_max_ms"]
        assert zt["periorbital"]["limit_ua"] < zt["neck"]["limit_ua"]
