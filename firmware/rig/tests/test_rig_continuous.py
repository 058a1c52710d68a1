"""Continuous capture on the rig firmware (MicroPython unix port, fake hardware streaming PIO words and phase
means): pulses assembled across poll boundaries, a capture window that starts in the past (before a fault was
injected) served from the history, and windows older than the history refused."""
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

SCRIPT = r'''
import json, sys
import rigserve, rigcapture

PERIOD = 1000000; PHASE = 200000; GAP = 100000; START = 50000; CYCLE = 8
X = 0xFFFFFFFF

def tap_words(first_rise):
    # level durations (low first) for pulses every PERIOD, as the PIO program pushes them
    out = []
    t = 0          # cycle at which each segment starts (mirrors rigcapture's cycle model)
    edges = []
    for k in range(40):
        r = first_rise + k * PERIOD
        edges += [r, r + PHASE]
    level = 0
    for e in edges:
        target = e // CYCLE
        n = max(0, (target + 1 - t - 1) // 2)
        detect = t + 1 + 2 * n
        out.append((detect, X - n))
        level = 1 - level
        t = detect + (2 if level == 1 else 3)
    return out

class FakeHW:
    def __init__(self):
        self.t = 0
        self.a = tap_words(START)
        self.b = tap_words(START + PHASE + GAP)
    def now_ns(self): return self.t
    def sleep_us(self, us): self.t += us * 1000
    def uid(self): return "e6614103e7452d2f"
    def fault_n_level(self): return 1
    def _take(self, lst):
        out = []
        while lst and lst[0][0] * CYCLE <= self.t:
            out.append(lst.pop(0)[1])
        return out
    def poll_words(self): return self._take(self.a), self._take(self.b)
    def phase_mean_na(self, a, b): return 400000 if b <= self.t else None

profile = json.loads(sys.stdin.readline())
hw = FakeHW()
rig = rigserve.Rig(hw, profile)
rig.wait(5.3e-3)                        # a few ms of stimulation stream in while the host does other things
t_mark = rig.now_s()
rig.wait(2e-3)                          # (the host injects a fault here)
back = rig.capture(0.004, start_s=t_mark - 0.002)     # window started before "now"
fwd = rig.capture(0.003)
rig.wait(31)
try:
    rig.capture(0.001, start_s=0.0)
    old = "served"
except rigserve.RigError as e:
    old = str(e)
print(json.dumps({"back": back, "fwd": fwd, "old": old, "cont": rig.continuous}))
'''


def test_continuous_history_and_past_windows():
    profile = json.dumps(boards.load("hil-rig"))
    proc = subprocess.run([str(MICROPYTHON), "-c", SCRIPT], input=profile + "\n", capture_output=True, text=True,
                          env={"MICROPYPATH": str(RIG)}, timeout=60)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    out = json.loads(proc.stdout)
    assert out["cont"] is True
    back = Capture.from_dict(out["back"])
    starts = [round((p.t_ns - 50_000) / 1_000_000) for p in back.pulses]
    assert starts == [4, 5, 6, 7], starts          # window [3.3 ms, 7.3 ms): pulses starting 4.05..7.05 ms
    for p in back.pulses:
        assert abs(p.widths_ns[0] - 200_000) <= 24 and abs(p.widths_ns[1] - 200_000) <= 24
        assert abs(p.gap_ns - 100_000) <= 24
        assert p.amp_ua == [400.0, -400.0] and p.balanced
    fwd = Capture.from_dict(out["fwd"])
    assert len(fwd.pulses) == 3 and fwd.pulses[0].t_ns > back.pulses[-1].t_ns
    assert "no longer retained" in out["old"]
