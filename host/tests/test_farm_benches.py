"""Bench lists -> labgrid exporter configuration (read back by labgrid's own config loader), bad bench lists, and
the virtual rig on a pty (the serial face a farm exports)."""
from __future__ import annotations

import json
import os
import time

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from picostim.farm.benches import BenchListError, check_benches, exporter_config, parse_bench_option, place_matches

GOOD = [{"name": "on",   # YAML 1.1 would read a bare on as true
         "dut": "/dev/serial/by-id/usb-x-if00", "rig": "/dev/serial/by-id/usb-y-if00"},
        {"name": "rack1-1", "dut": "/dev/serial/by-id/usb-MicroPython_Board_in_FS_mode_e6614c-if00",
         "rig": "/dev/serial/by-id/usb-MicroPython_Board_in_FS_mode_e6605f-if00", "board": "handheld-pro"},
        {"name": "rack1-2", "dut": "/dev/ttyACM2", "rig": "/dev/ttyACM3"}]


def _labgrid_load(text: str, tmp_path) -> dict:
    """What labgrid-exporter makes of the file (its jinja2 rendering + YAML loading)."""
    from labgrid.remote.config import ResourceConfig
    p = tmp_path / "exporter.yaml"
    p.write_text(text)
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        return ResourceConfig(str(p)).data


def test_exporter_config_is_what_labgrid_reads(tmp_path):
    data = _labgrid_load(exporter_config(GOOD), tmp_path)
    assert list(data) == ["on", "rack1-1", "rack1-2"]
    for bench in GOOD:
        group = data[bench["name"]]
        for key in ("dut", "rig"):
            assert dict(group[key]) == {"cls": "RawSerialPort", "port": bench[key], "speed": 115200}
    assert "handheld-pro" in data["rack1-1"]["location"]
    assert "handheld-home" in data["rack1-2"]["location"]       # the default board
    assert place_matches("rack1", "rack1-2") == ["rack1/rack1-2/NetworkSerialPort/dut",
                                                 "rack1/rack1-2/NetworkSerialPort/rig"]


@pytest.mark.parametrize("entry, words", [
    ({"name": "a", "dut": "/dev/ttyACM0"}, "rig must be"),
    ({"name": "a", "dut": "ttyACM0", "rig": "/dev/ttyACM1"}, "under /dev/"),
    ({"name": "a", "dut": "/dev/", "rig": "/dev/ttyACM1"}, "under /dev/"),
    ({"name": "a", "dut": "/dev/tty ACM0", "rig": "/dev/ttyACM1"}, "without spaces"),
    ({"name": "a", "dut": "/dev/{{x}}", "rig": "/dev/ttyACM1"}, "without spaces"),
    ({"name": "a", "dut": "/dev/a,b", "rig": "/dev/ttyACM1"}, "without spaces"),
    ({"name": "a b", "dut": "/dev/ttyACM0", "rig": "/dev/ttyACM1"}, "name must be"),
    ({"name": "a", "dut": "/dev/ttyACM0", "rig": "/dev/ttyACM1", "board": "../etc"}, "board must be"),
    ({"name": "a", "dut": "/dev/ttyACM0", "rig": "/dev/ttyACM1", "board": "nope"}, "unknown board"),
    ({"name": "a", "dut": "/dev/ttyACM0", "rig": "/dev/ttyACM1", "extra": 1}, "unknown keys"),
    ({"name": "a", "dut": "/dev/ttyACM0", "rig": "/dev/ttyACM1", "location": "# {% x %}"}, "location"),
])
def test_bad_bench_entries_are_refused_with_the_reason(entry, words):
    with pytest.raises(BenchListError, match=words.replace("{", r"\{")):
        check_benches([entry])


def test_names_and_ports_belong_to_one_bench():
    with pytest.raises(BenchListError, match="unique"):
        check_benches([GOOD[1], dict(GOOD[1], dut="/dev/x", rig="/dev/y")])
    with pytest.raises(BenchListError, match="one bench only"):
        check_benches([GOOD[1], dict(GOOD[1], name="other")])
    with pytest.raises(BenchListError, match="non-empty"):
        check_benches([])
    with pytest.raises(BenchListError, match="NAME,DUT_PORT,RIG_PORT"):
        parse_bench_option("a,/dev/x")


_DEV = st.from_regex(r"/dev/[a-zA-Z0-9_./-]{1,16}", fullmatch=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.fixed_dictionaries(
    {"name": st.one_of(st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True), st.text(max_size=12)),
     "dut": st.one_of(_DEV, st.text(max_size=20), st.text(alphabet="abc09_-./{}%#, ", max_size=16).map(lambda s: "/dev/" + s)),
     "rig": st.one_of(_DEV, st.integers(), st.none())},
    optional={"board": st.sampled_from(["handheld-home", "pico-devkit", "x", ""]), "location": st.text(max_size=30)}),
    max_size=4))
def test_any_bench_list_is_refused_clearly_or_read_back_exactly_by_labgrid(tmp_path, entries):
    try:
        benches = check_benches(entries)
    except BenchListError:
        event("refused")
        return
    event("valid")
    data = _labgrid_load(exporter_config(benches), tmp_path)
    assert list(data) == [b["name"] for b in benches]
    for b in benches:
        assert data[b["name"]]["dut"]["port"] == b["dut"] and data[b["name"]]["rig"]["port"] == b["rig"]


def test_cli_exporter_config_writes_the_file_and_refuses_a_bad_list(tmp_path):
    from picostim.cli import main
    good = tmp_path / "lab.json"
    good.write_text(json.dumps(GOOD))
    out = tmp_path / "exporter.yaml"
    r = CliRunner().invoke(main, ["farm", "exporter-config", "--benches", str(good), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_text() == exporter_config(GOOD)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = CliRunner().invoke(main, ["farm", "exporter-config", "--benches", str(bad), "-o", str(tmp_path / "x.yaml")])
    assert r.exit_code == 1 and "cannot read bench list" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x.yaml").exists()
    r = CliRunner().invoke(main, ["farm", "exporter-config"])
    assert r.exit_code == 2 and "--bench" in r.output


class _Rig:
    def info(self):
        return {"kind": "test-rig"}


def test_virtual_rig_on_a_pty_serves_the_rig_protocol_per_client(tmp_path):
    """The rig protocol over a pty: answers, refuses garbage and over-long lines, and a request cut off when a
    client closes the port is not glued to the next client's first line."""
    import serial

    from picostim.sim import rigproto
    from picostim.sim.rigpty import RigSerialPort
    link = str(tmp_path / "rig")
    with RigSerialPort(_Rig(), link=link) as port:
        assert os.path.realpath(link) == port.path and port.path.startswith("/dev/")
        s = serial.Serial(link, 115200, timeout=5)
        s.write(b'{"id": 1, "op": "info"}\nnot json\n' + b"x" * (rigproto.MAX_REQUEST + 10) + b'\n{"id": 2, "op": "ping"}\n')
        replies = [json.loads(s.readline()) for _ in range(4)]
        assert replies[0] == {"id": 1, "ok": True, "result": {"kind": "test-rig"}}
        assert replies[1]["error"] == "bad_json" and replies[2]["error"] == "line_too_long"
        assert replies[3] == {"id": 2, "ok": True, "result": {"proto": rigproto.PROTOCOL_VERSION}}
        s.write(b'{"id": 3, "op": "pi')           # the client goes away mid-request
        s.close()
        time.sleep(0.3)
        with rigproto.RigClient(link, timeout=5) as c:
            assert c.info() == {"kind": "test-rig"}
    assert not os.path.lexists(link)


def test_hil_on_places_without_a_reachable_coordinator_says_so_in_one_line(tmp_path):
    import socket
    import subprocess
    import sys
    from pathlib import Path
    with socket.socket() as s:          # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = str(Path(sys.executable).parent / "picostim")
    env = {k: v for k, v in os.environ.items() if k != "LG_COORDINATOR"}
    r = subprocess.run([exe, "hil", "--lg-place", "rack-*", "--lg-coordinator", f"127.0.0.1:{port}",
                        "--report", str(tmp_path / "r")], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr
    assert f"labgrid coordinator 127.0.0.1:{port}: Could not connect" in r.stdout
    assert not (tmp_path / "r").exists()                    # nothing ran, nothing written
    r = subprocess.run([exe, "hil", "--lg-place", "rack-*"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 1 and "no labgrid coordinator: give --lg-coordinator" in r.stdout
    r = subprocess.run([exe, "hil", "--lg-place", "rack-*", "--dut", "/dev/ttyACM0"], capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 2 and "--lg-place takes the DUT, rig and board from the places" in r.stderr


def test_places_are_picked_by_name_glob_or_tag_each_once():
    from types import SimpleNamespace

    from picostim.farm.coordinator import Coordinator, FarmError
    c = object.__new__(Coordinator)           # no coordinator needed: resolve() reads the place list only
    c._session = SimpleNamespace(places={
        "rack1-1": SimpleNamespace(tags={"board": "handheld-home"}),
        "rack1-2": SimpleNamespace(tags={"board": "handheld-pro"}),
        "rack2-1": SimpleNamespace(tags={"board": "handheld-pro"}),
        "odd[1]": SimpleNamespace(tags={})})
    assert c.resolve(["rack1-*"]) == ["rack1-1", "rack1-2"]
    assert c.resolve(["board=handheld-pro", "rack1-*"]) == ["rack1-2", "rack2-1", "rack1-1"]
    assert c.resolve(["odd[1]"]) == ["odd[1]"]                 # an exact name wins over glob syntax
    with pytest.raises(FarmError, match="no labgrid place named 'rack3'"):
        c.resolve(["rack3"])
    with pytest.raises(FarmError, match="no labgrid place matches 'rack3-\\*'"):
        c.resolve(["rack3-*"])
    with pytest.raises(FarmError, match="tagged 'board=x'"):
        c.resolve(["board=x"])


def test_picostim_sim_serial_dir_gives_a_bench_two_serial_devices(tmp_path):
    """`picostim sim --serial-dir DIR`: DIR/dut is the board's USB port (REPL answers), DIR/rig the rig protocol."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import serial

    from picostim.sim.rigproto import RigClient
    d = tmp_path / "bench"
    log = tmp_path / "sim.log"
    p = subprocess.Popen([str(Path(sys.executable).parent / "picostim"), "sim", "--clock", "model",
                          "--serial-dir", str(d)], stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "rig-serial=" not in log.read_text():
            assert p.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert f"dut-serial={d / 'dut'}" in log.read_text()
        with RigClient(str(d / "rig"), timeout=30) as rig:
            assert rig.ping() == {"proto": 1}
            assert rig.load()
        s = serial.Serial(str(d / "dut"), 115200, timeout=0.5)
        s.write(b"\r\x03")
        got = b""
        while b">>> " not in got and time.monotonic() < deadline:
            got += s.read(256)
        s.close()
        assert b">>> " in got
    finally:
        p.send_signal(signal.SIGTERM)
        rc = p.wait(30)
    assert rc == 0 and not os.path.lexists(d / "dut") and not os.path.lexists(d / "rig")
