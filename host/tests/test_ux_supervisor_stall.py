"""Issue 15: when the supervisor's samples do not land (late or outside the phase, valid samples flat), the CLI
says so loudly; selftest explains instead of `measured None ohm`. Reproduced deterministically with a virtual
board whose peripheral calls cost more than the firmware's sampling schedule allows (model clock)."""
import json

import pytest
from click.testing import CliRunner

from picostim import boards, deploy
from picostim.cli import main as cli
from picostim.cli._common import supervisor_stall
from picostim.device import Device
from picostim.sim import VirtualBoard
from picostim.transport import SerialTransport
from simhelp import vb_ready

BOARD = "handheld-home"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def slow_vb(tmp_path_factory):
    prof = boards.load(BOARD)
    costs = prof["mcu"]["vclock"]["call_cost_us"]
    costs["mem_r"] = costs["mem_w"] = 30          # 5x an RP2040's: the supervisor's looks miss their phase
    p = tmp_path_factory.mktemp("slowboard") / f"{BOARD}.json"
    p.write_text(json.dumps(prof))
    with VirtualBoard(board=str(p), clock="model") as b:
        vb_ready(b)
        with SerialTransport(b.port) as t:
            deploy.deploy(t, BOARD)
        yield b


def test_stall_detection_rule():
    assert supervisor_stall({"samples": 5, "late": 0, "missed": 0}, {"samples": 5, "late": 3, "missed": 0})
    assert supervisor_stall({"samples": 5, "late": 0, "missed": 0}, {"samples": 5, "late": 0, "missed": 9})
    assert supervisor_stall({"samples": 5, "late": 0, "missed": 0}, {"samples": 9, "late": 3, "missed": 2}) is None
    assert supervisor_stall({"samples": 5, "late": 1, "missed": 1}, {"samples": 5, "late": 1, "missed": 1}) is None


def test_selftest_says_the_supervisor_took_no_sample(slow_vb):
    r = CliRunner().invoke(cli, ["selftest", "--expect-ohm", "2000", "-p", slow_vb.port])
    assert r.exit_code == 1, r.output
    assert "WARNING: the safety supervisor took no current sample" in r.output, r.output
    assert "measured None" not in r.output and "measured nothing" in r.output
    r = CliRunner().invoke(cli, ["selftest", "--expect-ohm", "2000", "--json", "-p", slow_vb.port])
    doc = json.loads(r.output[r.output.index("{"):])
    assert doc["supervisor"]["stalled"] and doc["supervisor"]["samples"] == 0
    assert slow_vb.rig.capture(0.5).n_active == 0


def test_monitor_warns_when_samples_do_not_land(slow_vb):
    r = CliRunner().invoke(cli, ["monitor", "-p", slow_vb.port, "--start-level", "1", "--program", "lift",
                                 "--duration", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "WARNING: the safety supervisor took no current sample" in r.output, r.output
    with Device(slow_vb.port) as dev:
        assert dev.status()["state"] == "idle"
