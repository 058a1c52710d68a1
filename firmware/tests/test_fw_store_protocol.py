"""Config store (S12) and protocol parsing under CPython + hypothesis."""
import json
import os

import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from fwload import load

store = load("store")
config = load("config")
protocol = load("protocol")
board = load("board")
codes = load("pscodes")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def profile(name="handheld-home"):
    with open(os.path.join(REPO, "boards", name + ".json")) as f:
        return json.load(f)


json_obj = st.recursive(st.none() | st.booleans() | st.integers(-2**31, 2**31) | st.text(max_size=8),
                        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                        max_leaves=12)


# ---------------------------------------------------------------- store
@given(json_obj)
def test_store_round_trip(obj):
    assert store.decode(store.encode(obj)) == obj


@settings(max_examples=300)
@given(st.data())
def test_any_corruption_is_rejected(data):
    obj = data.draw(json_obj)
    blob = bytearray(store.encode({"v": obj}))
    i = data.draw(st.integers(0, len(blob) - 1))
    flip = data.draw(st.integers(1, 255))
    blob[i] ^= flip
    with pytest.raises(store.StoreError):
        store.decode(bytes(blob))


@given(st.binary(max_size=64))
def test_garbage_file_rejected(b):
    try:
        store.decode(b)
    except store.StoreError:
        return
    raise AssertionError("garbage accepted")


def test_truncation_rejected():
    blob = store.encode({"levels_ua": [1, 2, 3]})
    for n in range(len(blob)):
        with pytest.raises(store.StoreError):
            store.decode(blob[:n])


def test_power_cut_between_temp_write_and_rename_leaves_old(tmp_path, monkeypatch):
    path = str(tmp_path / "levels.bin")
    store.write_atomic(path, {"levels_ua": [1, 2]})

    def cut(*a):
        raise OSError("power lost")
    monkeypatch.setattr(store.os, "rename", cut)
    with pytest.raises(OSError):
        store.write_atomic(path, {"levels_ua": [3, 4]})
    monkeypatch.undo()
    assert store.read(path) == {"levels_ua": [1, 2]}      # old record, and the temp file is gone
    assert not os.path.exists(path + ".tmp")


def test_commit_reports_current_record_when_rename_fails_on_its_way_out(tmp_path, monkeypatch):
    """store.commit raises only while the old record is current: a rename that did its work and then raised (e.g.
    MemoryError) counts as committed; one that raised before renaming leaves the old record."""
    path = str(tmp_path / "levels.bin")
    store.write_atomic(path, {"levels_ua": [1, 2]})
    real_rename = os.rename

    def rename_then_fail(a, b):
        real_rename(a, b)
        raise MemoryError()
    monkeypatch.setattr(store.os, "rename", rename_then_fail)
    store.commit(path, store.encode({"levels_ua": [3, 4]}))          # no exception: the new record is current
    monkeypatch.undo()
    assert store.read(path) == {"levels_ua": [3, 4]}

    def fail_before(a, b):
        raise MemoryError()
    monkeypatch.setattr(store.os, "rename", fail_before)
    with pytest.raises(MemoryError):
        store.commit(path, store.encode({"levels_ua": [5, 6]}))
    monkeypatch.undo()
    assert store.read(path) == {"levels_ua": [3, 4]} and not os.path.exists(path + ".tmp")


@given(st.integers(0, 60))
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_power_cut_mid_temp_write_leaves_old_or_new(tmp_path, cut_at):
    path = str(tmp_path / "c.bin")
    old, new = {"session_s": 100}, {"session_s": 200, "pad": "x" * 20}
    store.write_atomic(path, old)
    # a partial temp file (power lost while writing it), never renamed
    with open(path + ".tmp", "wb") as f:
        f.write(store.encode(new)[:cut_at])
    assert store.read(path) in (old, new)
    store.write_atomic(path, new)
    assert store.read(path) == new


# ---------------------------------------------------------------- settings (config + levels)
@pytest.fixture
def fsdir(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CONFIG_PATH", str(tmp_path / "config.bin"))
    monkeypatch.setattr(config, "LEVELS_PATH", str(tmp_path / "levels.bin"))
    return tmp_path


def test_settings_defaults_then_persisted(fsdir):
    b = profile()
    s = config.Settings(b, {"ems": {}})
    assert s.status == config.STATUS_DEFAULTS and s.levels == b["levels_ua"]
    s.update_levels([50, 100, 150, 200, 250])
    s.update_config({"session_s": 600, "default_program": "ems"})
    s2 = config.Settings(b, {"ems": {}})
    assert s2.status == config.STATUS_OK
    assert s2.levels == [50, 100, 150, 200, 250] and s2.config["session_s"] == 600


def test_over_cap_levels_file_rejected_at_load(fsdir):
    b = profile()
    # written behind the firmware's back (e.g. a host bug or tampering): valid CRC, level above the 400 uA cap
    store.write_atomic(config.LEVELS_PATH, {"levels_ua": [80, 160, 240, 320, 401]})
    s = config.Settings(b, {})
    assert s.status == config.STATUS_CORRUPT
    assert s.levels == b["levels_ua"]


def test_corrupt_config_file_gives_defaults(fsdir):
    b = profile()
    store.write_atomic(config.CONFIG_PATH, {"session_s": 300, "default_level": 2, "default_program": None})
    with open(config.CONFIG_PATH, "r+b") as f:
        f.seek(20)
        f.write(b"\xff")
    s = config.Settings(b, {})
    assert s.status == config.STATUS_CORRUPT and s.config == config.defaults(b)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.integers(-10, 1200), st.floats(), st.text(max_size=2), st.none()), max_size=7))
def test_level_table_requests_validated_and_atomic(fsdir, levels):
    b = profile()
    s = config.Settings(b, {})
    before = list(s.levels)
    try:
        applied = s.update_levels(levels)
    except config.ConfigError as e:
        assert e.code in codes.ERROR_CODES
        assert s.levels == before
        assert config.Settings(b, {}).levels == before     # nothing persisted either
        if all(isinstance(x, int) and not isinstance(x, bool) for x in levels) and any(x > 400 for x in levels) \
                and len(levels) == 5:
            assert e.code == codes.E_OVER_CAP
        return
    assert all(0 < x <= 400 for x in applied) and applied == sorted(set(applied))


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["session_s", "default_level", "default_program", "bogus"]),
                       st.one_of(st.integers(-5, 5000), st.text(max_size=4), st.none(), st.floats(), st.booleans()),
                       max_size=3))
def test_config_updates_validated(fsdir, partial):
    b = profile()
    s = config.Settings(b, {"ems": {}})
    before = dict(s.config)
    try:
        new = s.update_config(partial)
    except config.ConfigError as e:
        assert e.code in codes.ERROR_CODES and s.config == before
        return
    assert 1 <= new["session_s"] <= b["limits"]["session_max_s"]


# ---------------------------------------------------------------- board profiles on the device side
@pytest.mark.parametrize("name", ["handheld-home", "handheld-pro", "pico-devkit"])
def test_shipped_profiles_validate_on_device(name):
    board.validate(profile(name))


@pytest.mark.parametrize("mutate", [
    lambda b: b["limits"].__setitem__("cap_ua", 1001),
    lambda b: b["analog"].__setitem__("i_fs_ua", 2000),
    lambda b: b.__setitem__("levels_ua", [80, 160, 240, 320, 500]),
    lambda b: b["limits"].__setitem__("wdt_timeout_ms", 2000),
    lambda b: b["pins"].__setitem__("BRIDGE_B", 5),
    lambda b: b["pins"].__setitem__("ISET", 8),
    lambda b: b["limits"].__setitem__("ramp_ms_per_level_step", 100),
])
def test_unsafe_profiles_refused(mutate):
    b = profile()
    mutate(b)
    with pytest.raises(board.BoardError):
        board.validate(b)


def test_trip_limit_and_adc_scaling():
    b = profile()
    assert board.trip_limit_ua(b) == 420                 # 400 + max(20, 20)
    raw = board.ua_to_adc_raw(b, 420)
    assert abs(board.adc_raw_to_ua(b, raw) - 420) <= 1
    p = profile("handheld-pro")
    assert board.trip_limit_ua(p) == 840                 # 800 + max(40, 20)


# ---------------------------------------------------------------- protocol
@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_parse_garbage_gives_coded_error(line):
    try:
        rid, cmd, req = protocol.parse(line)
    except protocol.ProtoError as e:
        assert e.code in codes.ERROR_CODES
        return
    assert isinstance(cmd, str) and isinstance(req, dict)


@given(json_obj, st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]), st.sampled_from([None, 0, 2]))
def test_parse_any_json(obj, seps, indent):
    line = json.dumps(obj, separators=seps, indent=indent).replace("\n", " ").encode()
    try:
        rid, cmd, req = protocol.parse(line)
    except protocol.ProtoError as e:
        assert e.code == codes.E_BAD_REQUEST, e       # JSON, however spaced, is never refused as "not JSON"
        return
    assert req is obj or req == obj


def _token_starts(text):
    """Indices outside strings where a structural character or a string starts (a token boundary)."""
    out, in_str, esc = [], False, False
    for i, c in enumerate(text):
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
            continue
        if c in '{}[],:"':
            out.append(i)
        in_str = c == '"'
    return out


def _cpython_loads(text):
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


@settings(max_examples=400)
@given(json_obj.filter(lambda o: isinstance(o, (list, dict))), st.data())
def test_separator_check_agrees_with_a_strict_parser(obj, data):
    """MicroPython's json.loads takes ',' and ':' as white space; the firmware's check must refuse exactly what a
    strict parser refuses when a separator is dropped, doubled or put between two tokens."""
    text = json.dumps(obj)
    assert protocol._separators_ok(text)
    where = _token_starts(text)
    i = data.draw(st.sampled_from(where))
    how = data.draw(st.sampled_from(["drop", "double", "insert ,", "insert :"]))
    if how == "drop":
        if text[i] not in ",:":
            return
        mut = text[:i] + text[i + 1:]
    elif how == "double":
        mut = text[:i] + text[i] + text[i:]
    else:
        mut = text[:i] + how[-1] + text[i:]
    assert protocol._separators_ok(mut) == _cpython_loads(mut), mut


@settings(max_examples=100)
@given(st.lists(st.binary(min_size=1, max_size=3000), max_size=8))
def test_line_reader_bounds_memory(chunks):
    r = protocol.LineReader(64)
    for c in chunks:
        for item in r.feed(c):
            if isinstance(item, protocol.ProtoError):
                assert item.code == codes.E_LINE_TOO_LONG
            else:
                assert 0 < len(item) <= 64 and b"\n" not in item
        assert len(r.buf) <= 64


def test_line_reader_overlong_line_reported_once_then_recovers():
    r = protocol.LineReader(16)
    out = r.feed(b"x" * 100 + b"\n" + b'{"id":1}\n')
    assert isinstance(out[0], protocol.ProtoError) and out[0].code == codes.E_LINE_TOO_LONG
    assert out[1] == b'{"id":1}'


@given(st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=3), st.booleans(), st.none(),
                 st.lists(st.integers(), max_size=2)))
def test_arg_checks(v):
    req = {"x": v}
    try:
        got = protocol.get_int(req, "x", 1, 10)
    except protocol.ProtoError as e:
        assert e.code in (codes.E_BAD_TYPE, codes.E_OUT_OF_RANGE)
        assert not (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 10)
        return
    assert got is None and v is None or (1 <= got <= 10 and got == v)
    try:
        m = protocol.get_num_milli(req, "x", 500, 500000)
    except protocol.ProtoError as e:
        assert e.code in (codes.E_BAD_TYPE, codes.E_OUT_OF_RANGE)
        return
    assert m is None or 500 <= m <= 500000
