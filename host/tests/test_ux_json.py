"""Issue 15 (scripting): --json on flash, levels show/audit, run, monitor, config diff (+ --exit-code); -v and
--log FILE with a serial trace; exit codes 2 (usage) and 130 (Ctrl-C)."""
import json

import pytest
from click.testing import CliRunner

from picostim import deploy
from picostim.cli import main as cli
from picostim.device import Device
from picostim.sim import VirtualBoard
from picostim.transport import SerialTransport
from simhelp import vb_ready

BOARD = "handheld-home"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def vb():
    with VirtualBoard(board=BOARD, clock="model") as b:
        vb_ready(b)
        with SerialTransport(b.port) as t:
            deploy.deploy(t, BOARD)
        yield b


def run(*args):
    r = CliRunner().invoke(cli, list(args))
    return r


def stdout_json(r):
    return json.loads(r.stdout)


def test_flash_json(vb):
    r = run("flash", "-b", BOARD, "-p", vb.port, "--json")
    assert r.exit_code == 0, r.output
    doc = stdout_json(r)
    assert doc[0]["uid"] == vb.uid and doc[0]["ok"] is True and doc[0]["seconds"] > 0 and doc[0]["result"]


def test_levels_show_and_audit_json(vb):
    doc = stdout_json(run("levels", "show", "--json", "-p", vb.port))
    assert doc["levels_ua"] == [80, 160, 240, 320, 400] and doc["cap_ua"] == 400 and doc["uid"] == vb.uid
    assert run("levels", "set", "1", "70", "--operator", "json-test", "-p", vb.port).exit_code == 0
    doc = stdout_json(run("levels", "audit", "--json", "-p", vb.port))
    e = doc["entries"][-1]
    assert e["operator"] == "json-test" and e["before_ua"] == 80 and e["after_ua"] == 70 and e["utc"]
    with Device(vb.port) as dev:
        dev.levels_set(level=1, ua=80, operator="json-test")


def test_run_json_lines(vb):
    r = run("run", "-l", "1", "--phase-us", "200", "--gap-us", "50", "--rate-hz", "50", "--duration", "2", "--wait",
            "--json", "-p", vb.port)
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert lines[0]["started"]["phase_us"] == 200 and lines[-1] == {"state": "idle"}
    assert any(x.get("ev") == "session_end" for x in lines)


def test_monitor_json_lines(vb):
    r = run("monitor", "-p", vb.port, "--start-level", "1", "--program", "lift", "--duration", "1.5",
            "--rate-hz", "50", "--json")
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    samples, summary = lines[:-1], lines[-1]["summary"]
    assert len(samples) == summary["received"] >= 20
    assert all({"seq", "t_ms", "i_ua", "fresh", "program"} <= set(s) for s in samples)
    assert {s["program"] for s in samples} == {"lift"}


def test_config_diff_json_and_exit_code(vb, tmp_path):
    exp = tmp_path / "c.json"
    assert run("config", "export", str(exp), "-p", vb.port).exit_code == 0
    r = run("config", "diff", str(exp), "--json", "--exit-code", "-p", vb.port)
    assert r.exit_code == 0 and stdout_json(r) == {"identical": True, "file": str(exp), "differences": []}
    doc = json.loads(exp.read_text())
    doc["config"]["session_s"] = 301
    exp.write_text(json.dumps(doc))
    r = run("config", "diff", str(exp), "--json", "--exit-code", "-p", vb.port)
    assert r.exit_code == 1
    d = stdout_json(r)
    assert not d["identical"] and d["differences"][0]["setting"] == "config.session_s"
    assert d["differences"][0]["file"] == 301
    assert run("config", "diff", str(exp), "-p", vb.port).exit_code == 0      # without --exit-code


def test_log_file_has_a_serial_trace_and_v_logs(vb, tmp_path):
    log = tmp_path / "trace.log"
    r = run("--log", str(log), "info", "--json", "-p", vb.port)
    assert r.exit_code == 0, r.output
    text = log.read_text()
    assert "picostim.serial" in text and '"cmd":"hello"' in text and '"ok": true' in text
    r = run("-vv", "info", "--json", "-p", vb.port)
    assert "picostim.serial" in r.stderr
    r = run("--log", "/nonexistent/x.log", "info", "-p", vb.port)
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_usage_errors_exit_2_everywhere():
    for args in (["run"], ["monitor", "--rate-hz", "0"], ["levels", "set", "--operator"], ["flash"],
                 ["config", "diff"], ["hil", "--workers", "x"], ["sim", "--clock", "x"], ["demo", "--levels", ""],
                 ["selftest", "--expect-ohm", "0"], ["levels", "tune"], ["nosuch"]):
        r = run(*args)
        assert r.exit_code == 2, (args, r.output)


def test_flag_names_are_uniform():
    for cmd in (["flash"], ["demo"], ["sim"], ["hil"]):
        r = run(*cmd, "--help")
        assert "-b, --board" in r.output, (cmd, r.output)
    r = run("hil", "--help")
    assert "--firmware" in r.output and "--clock" in r.output
    for cmd in (["run"], ["monitor"], ["levels", "tune"], ["demo"]):
        r = run(*cmd, "--help")
        assert "--rate-hz" in r.output, (cmd, r.output)
    r = run("flash", "-b", "handheld-home", "-p", "/dev/nonexistent-port")
    assert r.exit_code == 2 and "no such serial port" in r.output
