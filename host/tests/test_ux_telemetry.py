"""Issue 15: telemetry says when it has no fresh measurement (EMS burst-off: the supervisor holds its last value
while the rig sees no pulse), and names the program and the burst phase; monitor's CSV and plot follow it."""
import csv

import pytest
from click.testing import CliRunner

from picostim import deploy
from picostim.cli import main as cli
from picostim.cli.monitor import fresh_points
from picostim.device import Device
from picostim.sim import VirtualBoard
from picostim.transport import SerialTransport
from simhelp import vb_ready, wait_state

BOARD = "handheld-home"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def vb():
    with VirtualBoard(board=BOARD, clock="model") as b:
        vb_ready(b)
        with SerialTransport(b.port) as t:
            deploy.deploy(t, BOARD)
        yield b


def _off_fraction_at_electrodes(vb, seconds=6.0) -> float:
    """Share of the window in which the rig sees no pulse for longer than 100 ms (EMS bursts at 50 Hz)."""
    cap = vb.rig.capture(seconds)
    starts = [p.t_ns for p in cap.pulses if p.active] + [cap.t1_ns]
    gaps = [b - a for a, b in zip([cap.t0_ns] + starts, starts) if b - a > 100e6]
    return sum(gaps) / (cap.t1_ns - cap.t0_ns)


def test_burst_off_telemetry_has_no_stale_current(vb):
    with Device(vb.port) as dev:
        applied = dev.start(level=2, program="ems", duration_s=600)
        assert applied["program"] == "ems"
        wait_state(dev, ("running",))
        off_frac = _off_fraction_at_electrodes(vb)
        samples = list(dev.telemetry(rate_hz=20, duration_s=8))
        st = dev.status()
        dev.stop()
    assert 0.3 < off_frac < 0.7, off_frac        # 2 s on / 2 s off, as the rig measures it
    assert {s.get("program") for s in samples} == {"ems"}
    assert {s.get("burst") for s in samples} == {"on", "off"}
    stale = [s for s in samples if s["i_ua"] is None]
    # no sample repeats the last burst's current while the output is off
    assert not [s for s in samples if s["burst"] == "off" and s["age_ms"] > 60 and s["i_ua"] is not None]
    assert all(not s["fresh"] for s in stale) and all(s["fresh"] for s in samples if s["i_ua"] is not None)
    stale_frac = len(stale) / len(samples)
    assert abs(stale_frac - off_frac) < 0.2, (stale_frac, off_frac)
    assert st["program"] == "ems" and st["burst"] in ("on", "off") and "i_age_ms" in st
    if st["burst"] == "off" and st["i_age_ms"] > 200:
        assert st["i_ua"] is None


def test_monitor_csv_and_plot_mark_stale_samples(vb, tmp_path):
    out_csv, out_png = tmp_path / "m.csv", tmp_path / "m.png"
    r = CliRunner().invoke(cli, ["monitor", "-p", vb.port, "--start-level", "2", "--program", "ems", "--duration",
                                 "6", "--quiet", "--csv", str(out_csv), "--plot", str(out_png)])
    assert r.exit_code == 0, r.output
    assert "program ems" in r.output
    rows = list(csv.DictReader(out_csv.open()))
    stale = [x for x in rows if x["fresh"] == "False"]
    assert stale and all(x["i_ua"] == "" for x in stale)
    assert {x["burst"] for x in rows} >= {"on", "off"}
    samples = [{"t_ms": float(x["t_ms"]), "i_ua": float(x["i_ua"]) if x["i_ua"] else None} for x in rows]
    t, i = fresh_points(samples)
    assert len(i) == len(rows) - len(stale)
    assert out_png.read_bytes()[:4] == b"\x89PNG"
    with Device(vb.port) as dev:
        assert dev.status()["state"] == "idle"
