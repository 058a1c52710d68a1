"""Device client against a scripted protocol peer (a MicroPython script on a pty): id matching, events queued
while waiting for a reply, REPL chatter ignored, error replies raised with their code, telemetry seq gaps counted.
The firmware itself is exercised on the virtual board in test_sim_*.py."""
import time

import pytest

from picostim.device import Device, DeviceError, ProtocolTimeout
from upyport import UpyPort

PEER = r"""
import sys, json
seq = 0
while True:
    line = sys.stdin.readline()
    if not line:
        break
    try:
        req = json.loads(line)
    except ValueError:
        print(json.dumps({"id": None, "ok": False, "error": "bad_json", "detail": "x"}))
        continue
    cmd = req.get("cmd")
    rid = req.get("id")
    if cmd == "hello":
        print("some boot chatter that is not JSON")
        print(json.dumps({"ev": "button", "t_ms": 1, "button": "up"}))
        print(json.dumps({"id": rid, "ok": True, "fw": "0.1.0", "proto": 1, "board": "handheld-home"}))
    elif cmd == "telemetry":
        print(json.dumps({"id": rid, "ok": True, "rate_hz": req.get("rate_hz")}))
        if req.get("on"):
            for s in (1, 2, 3, 7, 8, 12):
                print(json.dumps({"ev": "telemetry", "seq": s, "t_ms": s * 10, "i_ua": 100, "state": "running"}))
    elif cmd == "levels_set":
        print(json.dumps({"id": rid, "ok": False, "error": "over_cap", "detail": "401 uA above the cap 400 uA"}))
    elif cmd == "stale":
        print(json.dumps({"id": 99999, "ok": True}))
        print(json.dumps({"id": rid, "ok": True, "fresh": 1}))
    elif cmd == "silent":
        pass
"""


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    script = tmp_path_factory.mktemp("peer") / "peer.py"
    script.write_text(PEER)
    with UpyPort(args=[str(script)]) as u:
        time.sleep(0.3)
        d = Device(u.port, timeout=3)
        yield d
        d.close()


def test_hello_skips_chatter_and_queues_events(dev):
    info = dev.hello()
    assert info["board"] == "handheld-home"
    assert any("boot chatter" in n for n in dev.noise)
    evs = dev.poll_events()
    assert evs and evs[0]["ev"] == "button"


def test_error_reply_raises_with_code(dev):
    with pytest.raises(DeviceError) as ei:
        dev.levels_set([1, 2, 3, 4, 401], operator="x")
    assert ei.value.code == "over_cap" and "cap" in str(ei.value)


def test_stale_reply_ids_are_ignored(dev):
    assert dev.request("stale")["fresh"] == 1


def test_timeout_is_reported(dev):
    with pytest.raises(ProtocolTimeout, match="silent"):
        dev.request("silent", timeout=0.5)


def test_telemetry_seq_gaps_counted(dev):
    samples = list(dev.telemetry(rate_hz=100, duration_s=1.0))
    assert [s["seq"] for s in samples] == [1, 2, 3, 7, 8, 12]
    st = dev.telemetry_stats
    assert (st.received, st.lost, st.gaps) == (6, 6, 2)
    assert samples[3]["gap"] == 3 and samples[5]["gap"] == 3


def test_oversized_request_refused_on_host(dev):
    with pytest.raises(ValueError, match="at most"):
        dev.request("hello", blob="x" * 2000)
