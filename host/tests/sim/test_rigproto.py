"""Rig protocol: a RigClient over TCP (and over a serial line) returns what the VirtualRig returns; bad lines get
error replies and change nothing."""
import json
import os
import socket
import sys
import threading
import tty

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))
from _analog_timeline_chip import TimelineBoard, TimelineChip  # noqa: E402

from picostim import boards  # noqa: E402
from picostim.sim.rig import RigError, VirtualRig  # noqa: E402
from picostim.sim.rigproto import MAX_REQUEST, RigClient, handle_line, serve_rig, serve_stream  # noqa: E402

HOME = boards.load("handheld-home")
MS = 1_000_000
US = 1_000


def make_rig(load="2k"):
    chip = TimelineChip(HOME)
    pins = HOME["pins"]
    chip.set_level(pins["HV_EN"], 0, 1)
    chip.set_duty(pins["ISET"], 0, 0.4)
    chip.biphasic(pins, 1 * MS, 400, 2 * MS, 200 * US, 100 * US)
    board = TimelineBoard(chip, HOME)
    return chip, board, VirtualRig(board, load=load)


@pytest.fixture
def served():
    chip, board, rig = make_rig()
    server = serve_rig(rig)
    client = RigClient(server.address, timeout=30)
    yield chip, board, rig, server, client
    client.close()
    server.close()


def test_client_returns_what_the_rig_measures(served):
    chip, board, rig, server, client = served
    assert server.address.startswith("tcp://127.0.0.1:")
    assert client.ping() == {"proto": 1}
    cap = client.capture(0.1)
    local = rig.capture(0.1, start_s=0.0)
    assert cap.summary() == local.summary() and cap.pulses == local.pulses
    assert cap.n_pulses == 50 and cap.pulses[0].amp_ua == pytest.approx([400.0, -400.0])
    assert cap.trace(50).i_ua.tolist() == local.trace(50).i_ua.tolist()
    assert client.set_load("10k") == {"kind": "resistive", "r_s_ohm": 10000.0} == client.load()
    assert client.capture(0.01).pulses[0].amp_ua[0] == pytest.approx(400.0)        # 4 V < 10.5 V compliance
    assert client.inject("overcurrent", factor=1.25)["gain_error"] == 1.25
    assert client.inject("clear")["gain_error"] == 1.0
    assert client.press("down", 20)["button"] == "down"
    assert client.wait(0.05) == pytest.approx(client.now_s())
    assert client.leds() == {"status": 0.0, "red": None, "vibration": None}
    assert [e["duty"] for e in client.iset_log()] == [0.4]
    assert client.info()["board"] == "handheld-home"
    assert client.current_ua() == pytest.approx(rig.current_ua())


def test_errors_come_back_as_rig_errors_and_change_nothing(served):
    chip, board, rig, server, client = served
    before = (rig.load(), rig.faults())
    for call, code in [(lambda: client.inject("melt"), "rig_error"), (lambda: client.set_load("zz"), "rig_error"),
                       (lambda: client.capture(-1), "rig_error"), (lambda: client.call("format_disk"), "unknown_op"),
                       (lambda: client.call("capture", duration_s=0.1, colour="red"), "bad_request"),
                       (lambda: client.call("set_load"), "bad_request"), (lambda: client.call("inject"), "bad_request")]:
        with pytest.raises(RigError) as e:
            call()
        assert e.value.code == code
    assert (rig.load(), rig.faults()) == before
    assert client.ping() == {"proto": 1}                       # still talking


def _raw(server, payload: bytes, n_lines: int):
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        s.sendall(payload)
        f = s.makefile("rb")
        return [json.loads(f.readline()) for _ in range(n_lines)]


def test_garbage_and_oversized_lines_get_error_replies(served):
    chip, board, rig, server, client = served
    replies = _raw(server, b"\xff\xfe garbage\n[1,2]\n{\"id\": 3}\n{\"id\": [1], \"op\": \"ping\"}\n"
                           b"{\"id\": 5, \"op\": \"ping\", \"kw\": 7}\n" + b"x" * (MAX_REQUEST + 10) +
                   b"\n{\"id\": 9, \"op\": \"ping\"}\n", 7)
    assert [r["ok"] for r in replies] == [False] * 6 + [True]
    assert [r.get("error") for r in replies[:6]] == ["bad_json", "bad_request", "bad_request", "bad_request",
                                                     "bad_request", "line_too_long"]
    assert replies[6] == {"id": 9, "ok": True, "result": {"proto": 1}}


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                           max_leaves=8)


@given(st.dictionaries(st.sampled_from(["id", "op", "kw", "x"]), json_values, max_size=4),
       st.sampled_from(["capture", "set_load", "inject", "press", "wait", "iset_log", "ping", "load", None]))
@settings(max_examples=150, deadline=None)
def test_any_request_object_gets_one_reply_and_bad_ones_change_nothing(req, op):
    chip, board, rig = make_rig()
    if op is not None:
        req = dict(req, op=op)
    before = (rig.load(), rig.faults(), len(chip.driven), board.now_ns())
    reply = handle_line(rig, json.dumps(req).encode())
    assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool)
    json.dumps(reply, allow_nan=False)
    if not reply["ok"]:
        assert reply["error"] in ("bad_json", "bad_request", "unknown_op", "rig_error")
        assert (rig.load(), rig.faults(), len(chip.driven), board.now_ns()) == before


def test_same_lines_over_a_serial_port():
    chip, board, rig = make_rig()
    master, slave = os.openpty()
    tty.setraw(master)
    rfile, wfile = os.fdopen(master, "rb", buffering=0), os.fdopen(os.dup(master), "wb", buffering=0)

    class Reader:                                   # readline over a raw fd
        def readline(self, limit=-1):
            out = bytearray()
            while not out.endswith(b"\n") and (limit < 0 or len(out) < limit):
                try:
                    b = rfile.read(1)
                except OSError:
                    return bytes(out)
                if not b:
                    break
                out += b
            return bytes(out)

    t = threading.Thread(target=serve_stream, args=(rig, Reader(), wfile), daemon=True)
    t.start()
    client = RigClient(os.ttyname(slave), timeout=30)
    try:
        cap = client.capture(0.02)
        assert cap.n_pulses == 10 and cap.pulses[0].widths_ns == [200_000, 200_000]
        assert client.set_load("500")["r_s_ohm"] == 500.0
        with pytest.raises(RigError):
            client.inject("bogus")
    finally:
        client.close()
        os.close(slave)
        wfile.close()
        rfile.close()


def test_pyserial_url_reaches_the_same_server(served):
    chip, board, rig, server, client = served
    with RigClient(f"socket://{server.host}:{server.port}", timeout=30) as via_url:
        assert via_url.ping() == {"proto": 1}
        assert via_url.capture(0.01).n_pulses == 5


def test_bad_addresses():
    with pytest.raises(RigError):
        RigClient("tcp://nohost")
    with pytest.raises(OSError):
        RigClient("/dev/does-not-exist-rig", timeout=1)


def test_scheduled_injection_and_load_change_over_the_protocol(served):
    # Pulses every 2 ms from 1 ms (200 us phases, 100 us gap): an over-current scheduled inside the +phase of the
    # pulse at 5 ms lands exactly there, mid-phase; a load change scheduled for later lands at its own instant.
    chip, board, rig, server, client = served
    t_on = 5 * MS + 73 * US + 411
    assert client.inject("overcurrent", at_s=t_on / 1e9, factor=1.5)["gain_error"] == 1.0      # not yet
    assert client.set_load("10k", at_s=0.0081) == {"kind": "resistive", "r_s_ohm": 10000.0}
    assert client.load()["r_s_ohm"] == 2000.0
    cap = client.capture(0.012, start_s=0.0)
    tr = cap.trace(12_000 * 8)      # 125 ns bins
    dt = tr.t_ns[1] - tr.t_ns[0]
    over = [t for t, i in zip(tr.t_ns, tr.i_ua) if i > 500]
    assert over and abs(over[0] - t_on) <= dt
    assert all(abs(p.amp_ua[0] - 400.0) < 1 for p in cap.pulses if p.t_ns + 200 * US <= t_on)
    assert client.faults()["gain_error"] == 1.5 and client.load()["r_s_ohm"] == 10000.0
    # in the past, or a board-level fault: refused, nothing changes
    for call in (lambda: client.inject("contact_loss", at_s=0.001), lambda: client.set_load("500", at_s=0.002),
                 lambda: client.inject("hang", at_s=1.0), lambda: client.inject("overcurrent", at_s="soon")):
        with pytest.raises(RigError) as e:
            call()
        assert e.value.code == "rig_error"
    assert client.faults()["contact"] is True and client.load()["r_s_ohm"] == 10000.0
