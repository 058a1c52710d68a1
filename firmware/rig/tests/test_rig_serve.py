"""Rig firmware protocol and capture assembly, run on the MicroPython unix port with a fake hardware layer:
same request/reply lines and error codes as the virtual rig (picostim.sim.rigproto), and a capture assembled from
PIO edge words + ADC samples comes back as a Capture the host's RigClient understands, with the right numbers.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from picostim import boards
from picostim.sim.rig import Capture

RIG = Path(__file__).resolve().parents[1]
MICROPYTHON = Path(sys.executable).with_name("micropython")
pytestmark = pytest.mark.skipif(not MICROPYTHON.exists(), reason="MicroPython unix port not installed")

FAKE_HW = r'''
import json, sys
import rigserve, rigcapture

class FakeHW:
    def __init__(self):
        self.t = 0
        self.calls = []
        self.raw = None
    def now_ns(self): return self.t
    def sleep_us(self, us): self.t += us * 1000
    def uid(self): return "e6614103e7452d2f"
    def select_load(self, i): self.calls.append(["load", i])
    def set_contact(self, on): self.calls.append(["contact", on])
    def set_power(self, on): self.calls.append(["power", on])
    def set_charging(self, on): self.calls.append(["charging", on])
    def fault_n_level(self): return 1
    def pulse_fault_n(self, ms): self.calls.append(["fault_n", ms])
    def press(self, gpio, ms): self.calls.append(["press", gpio, ms])
    def led_duty(self): return 0.5
    def adc_shunt(self): return 1241          # ~1000 mV -> 1000 uA through 100 ohm x 10
    def capture(self, us): return self.raw

profile = json.loads(sys.stdin.readline())
hw = FakeHW()
rig = rigserve.Rig(hw, profile)
'''


def _run(script_tail: str, stdin_lines: list[str]) -> str:
    profile = json.dumps(boards.load("hil-rig"))
    proc = subprocess.run([str(MICROPYTHON), "-c", FAKE_HW + script_tail], input="\n".join([profile] + stdin_lines)
                          + "\n", capture_output=True, text=True, env={"MICROPYPATH": str(RIG)}, timeout=60)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout


SERVE = r'''
def read_chunk():
    return sys.stdin.buffer.read(1)
rigserve.serve(rig, read_chunk, sys.stdout.buffer.write)
print(json.dumps(hw.calls))
'''


def test_protocol_lines_and_errors():
    reqs = [
        '{"id": 1, "op": "ping"}',
        '{"id": 2, "op": "set_load", "kw": {"spec": "10k"}}',
        '{"id": 3, "op": "set_load", "kw": {"spec": "3k"}}',
        'this is not json',
        '[1,2]',
        '{"id": 4}',
        '{"id": 5, "op": "launch"}',
        '{"id": 6, "op": "press", "kw": {"button": "up", "ms": 120}}',
        '{"id": 7, "op": "press", "kw": {"button": "up", "force": 1}}',
        '{"id": 8, "op": "inject", "kw": {"fault": "hang"}}',
        '{"id": 9, "op": "inject", "kw": {"fault": "contact_loss"}}',
        '{"id": 10, "op": "faults"}',
        '{"id": 11, "op": "current_ua"}',
        '{"id": true, "op": "ping"}',
        '{"id": 12, "op": "press", "kw": {"button": "up", "ms": "long"}}',
        '{"id": 13, "op": "x"}' + " " * 70000,
        '{"id": 14, "op": "iset_log"}',
    ]
    out = _run(SERVE, reqs).strip().splitlines()
    replies = [json.loads(x) for x in out[:-1]]
    calls = json.loads(out[-1])
    by_id = {r["id"]: r for r in replies if r.get("id") is not None}
    assert by_id[1] == {"id": 1, "ok": True, "result": {"proto": 1}}
    assert by_id[2]["ok"] and by_id[2]["result"] == {"kind": "resistive", "r_s": 10000.0}
    assert by_id[3]["error"] == "rig_error"
    anon = [r["error"] for r in replies if r.get("id") is None]
    assert anon == ["bad_json", "bad_request", "bad_request", "line_too_long"]
    assert by_id[4]["error"] == "bad_request"
    assert by_id[5]["error"] == "unknown_op"
    assert by_id[6]["ok"] and by_id[6]["result"]["button"] == "up"
    assert by_id[7]["error"] == "bad_request"
    assert by_id[8]["error"] == "rig_error" and "virtual board" in by_id[8]["detail"]
    assert by_id[9]["ok"] and by_id[10]["result"]["contact"] is False
    assert abs(by_id[11]["result"] - 999.8) < 1.0
    assert by_id[12]["error"] == "rig_error"
    assert by_id[14]["error"] == "rig_error"
    # only the valid requests touched the hardware, in order
    assert calls == [["load", 3], ["press", 22, 120], ["contact", False]]


def _words(levels_ns, cycle_ns=8):
    """Inverse of rigcapture.durations_to_edges: level durations (ns, alternating low/high) -> PIO words."""
    words, t = [], 0
    for i, d in enumerate(levels_ns):
        n = max(0, round(d / cycle_ns / 2))
        words.append(0xFFFFFFFF - n)
    return words


CAPTURE = r'''
raw = json.loads(sys.stdin.readline())
print(json.dumps(rig.assemble(raw, 100)))
'''


def test_capture_from_edges_and_adc_matches_capture_format():
    # +200 us, gap 100 us, -200 us every 1 ms, 400 uA; the tap durations are built from the cycle model
    period, phase, gap, t_start, n = 1_000_000, 200_000, 100_000, 50_000, 8
    a_levels, b_levels = [t_start], [t_start + phase + gap]
    for k in range(n):
        a_levels += [phase, period - phase]
        b_levels += [phase, period - phase]
    dt = 2000
    adc = []
    code_400ua = round(400 * 4096 / 3300)          # 400 uA -> 400 mV at the shunt amplifier
    for i in range(n * period // dt + 200):
        t = i * dt
        k, r = divmod(t - t_start, period)
        on = 0 <= k < n and (r < phase or phase + gap <= r < 2 * phase + gap) and t >= t_start
        adc.append(code_400ua if on else 0)
    raw = {"t0_ns": 0, "duration_ns": (n + 1) * period, "words_a": _words(a_levels), "words_b": _words(b_levels),
           "adc": adc, "adc_dt_ns": dt, "hv_on_ns": 0}
    cap = Capture.from_dict(json.loads(_run(CAPTURE, [json.dumps(raw)])))
    full = [p for p in cap.pulses if not p.partial]
    assert len(full) >= n - 1
    for p in full:
        assert abs(p.widths_ns[0] - phase) <= 24 and abs(p.widths_ns[1] - phase) <= 24
        assert abs(p.gap_ns - gap) <= 24
        assert abs(p.amp_ua[0] - 400) < 2 and abs(p.amp_ua[1] + 400) < 2
        assert p.balanced
    assert abs(cap.dc_ua) < 1.0 and cap.n_shoot_through == 0
    assert abs(cap.rate_hz - 1000) < 1
