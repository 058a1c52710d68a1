"""Host-side checks of config and level tables against the board profiles (hypothesis)."""
import pytest
from hypothesis import given, strategies as st

from picostim import boards, settings
from picostim.shared import codes

PROFILES = [boards.load(n) for n in boards.names() if boards.load(n).get("kind") != "rig"]


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p["name"])
def test_profile_defaults_pass(profile):
    assert settings.check_levels(profile, profile["levels_ua"]) == profile["levels_ua"]


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p["name"])
@given(data=st.data())
def test_levels_accepted_iff_valid(profile, data):
    n = len(profile["levels_ua"])
    cap = profile["limits"]["cap_ua"]
    levels = data.draw(st.one_of(
        st.lists(st.integers(-50, codes.FIRMWARE_CEILING_UA + 500), min_size=n, max_size=n),
        st.lists(st.integers(1, cap), min_size=0, max_size=n + 2),
        st.lists(st.one_of(st.integers(1, cap), st.floats(1, cap), st.text(max_size=3), st.none(), st.booleans()),
                 min_size=n, max_size=n)))
    valid = (len(levels) == n and all(isinstance(x, int) and not isinstance(x, bool) for x in levels)
             and all(1 <= x <= cap for x in levels) and all(a < b for a, b in zip(levels, levels[1:])))
    if valid:
        assert settings.check_levels(profile, levels) == levels
    else:
        with pytest.raises(settings.SettingsError) as ei:
            settings.check_levels(profile, levels)
        assert ei.value.code in codes.ERROR_CODES
        if len(levels) == n and all(isinstance(x, int) and not isinstance(x, bool) for x in levels) \
                and any(x > cap for x in levels):
            assert ei.value.code == codes.E_OVER_CAP


def test_over_cap_message_names_cap():
    p = boards.load("handheld-home")
    with pytest.raises(settings.SettingsError, match="cap of 400 uA") as ei:
        settings.with_level(p, p["levels_ua"], 5, 401)
    assert ei.value.code == codes.E_OVER_CAP


@given(st.dictionaries(st.sampled_from(["session_s", "default_level", "default_program", "volume"]),
                       st.one_of(st.integers(-10, 5000), st.text(max_size=12), st.none(), st.floats(0, 10),
                                 st.sampled_from(["ems", "microcurrent", "lift", "nope"]))))
def test_config_check(cfg):
    p = boards.load("handheld-home")
    mx = p["limits"]["session_max_s"]
    ok = True
    for k, v in cfg.items():
        if k == "session_s":
            ok &= isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= mx
        elif k == "default_level":
            ok &= isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= len(p["levels_ua"])
        elif k == "default_program":
            ok &= v is None or v in p["programs"]
        else:
            ok = False
    if ok:
        assert settings.check_config(p, cfg) == cfg
    else:
        with pytest.raises(settings.SettingsError):
            settings.check_config(p, cfg)
