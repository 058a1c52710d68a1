"""Issue 15 / issue 11: a stalled current supervisor fails safe and the CLI says so loudly. The supervisor's samples
are taken by hardware (sampler slice + DMA), so slow register access no longer starves it; what can still stall it is
its scan interrupt being held off. Reproduced deterministically with a virtual board whose hard-IRQ entry costs 200 ms
(model clock): longer than the sample ring holds at 200 Hz (~155 ms), shorter than the 500 ms watchdog."""
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
    prof["mcu"]["vclock"]["call_cost_us"]["irq_entry"] = 200_000     # every hard IRQ held off 200 ms
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


def test_selftest_says_the_supervisor_took_no_sample_and_the_output_is_off(slow_vb):
    r = CliRunner().invoke(cli, ["selftest", "--expect-ohm", "2000", "-p", slow_vb.port])
    assert r.exit_code == 1, r.output
    assert "WARNING: the safety supervisor took no current sample" in r.output, r.output
    assert "lost unjudged" in r.output and "measured None" not in r.output and "measured nothing" in r.output
    with Device(slow_vb.port) as dev:
        st = dev.status()
        # the held-off scan found its ring lapped: it judged nothing and latched a stall (output off), not "no fault"
        assert st["state"] == "fault" and st["fault"]["reason"] == "supervisor_stall", st
        assert st["samples"] == 0 and st["missed"] > 0
        dev.clear_fault()
    r = CliRunner().invoke(cli, ["selftest", "--expect-ohm", "2000", "--json", "-p", slow_vb.port])
    doc = json.loads(r.output[r.output.index("{"):])
    assert doc["supervisor"]["stalled"] and doc["supervisor"]["samples"] == 0
    assert slow_vb.rig.capture(0.5).n_active == 0
    with Device(slow_vb.port) as dev:
        dev.clear_fault()


def test_session_with_a_stalled_scanner_is_stopped_by_the_watchdog(slow_vb):
    # At 10 Hz the ring would outlast the hold-offs, but every scan and telemetry interrupt holds the CPU 200 ms:
    # the main loop cannot feed the watchdog, which resets the chip (output off by the reset).
    boots = slow_vb.boot_count
    t0 = slow_vb.now_ns()
    r = CliRunner().invoke(cli, ["monitor", "-p", slow_vb.port, "--start-level", "1", "--program", "lift",
                                 "--duration", "2", "--quiet"])
    assert r.exit_code != 0, r.output
    assert slow_vb.boot_count > boots and slow_vb.reset_cause == 3, (slow_vb.boot_count, slow_vb.reset_cause)
    wdt_ns = slow_vb.profile["limits"]["wdt_timeout_ms"] * 1_000_000
    cap = slow_vb.rig.capture((slow_vb.now_ns() - t0) / 1e9, start_s=t0 / 1e9)
    pairs = [p.t_ns for p in cap.pulses]
    assert pairs, "the session never started (no pulse pairs at the bridge)"
    assert not [t for t in pairs if t > pairs[0] + 2 * wdt_ns], "pulses went on after the watchdog period"
    assert slow_vb.rig.capture(0.5).n_active == 0
