"""`picostim demo` end to end: virtual board, flash, levels, rig capture, requested-vs-measured table, PNG."""
import re

import pytest
from click.testing import CliRunner

from picostim.cli import main as cli

pytestmark = pytest.mark.timeout(180)


def test_demo_measures_requested_levels_and_writes_plot(tmp_path):
    png = tmp_path / "demo.png"
    r = CliRunner().invoke(cli, ["demo", "--levels", "1,5", "--capture-s", "0.2", "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert "nothing sent" in r.output                         # the second flash found nothing to do
    rows = re.findall(r"│\s+(\d)\s+│\s+(\d+) / ([\d.]+)\s+│\s+([\d.]+) / ([\d.]+)\s+│\s+([\d.]+) / ([\d.]+)\s+│"
                      r"\s+([\d.]+) / ([\d.]+)\s+│\s+(-?[\d.]+)\s+│\s+(\d+)\s+│\s+(\d+)", r.output)
    assert [row[0] for row in rows] == ["1", "5"], r.output
    for (_lv, req_ua, amp, ph_req, ph, gap_req, gap, rate_req, rate, dc, pairs, unbal) in rows:
        assert abs(float(amp) - int(req_ua)) <= 0.03 * int(req_ua) + 2
        assert abs(float(ph) - float(ph_req)) <= 0.05
        assert abs(float(gap) - float(gap_req)) <= 0.05
        assert abs(float(rate) - float(rate_req)) <= 0.01 * float(rate_req)
        assert abs(float(dc)) <= 1.0                           # S6 goal
        assert int(pairs) >= 5 and int(unbal) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000
