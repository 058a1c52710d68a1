"""CLI commands against a virtual board: info, config get/set/export/diff/import (host check, device check),
run/stop, monitor (CSV + PNG)."""
import csv
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
    with VirtualBoard(board=BOARD, rig_port=None, clock="model") as b:
        vb_ready(b)
        with SerialTransport(b.port) as t:
            deploy.deploy(t, BOARD)
        yield b


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_info_json(vb):
    r = run("info", "--port", vb.port, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["hello"]["board"] == BOARD and doc["hello"]["fw"] == deploy.firmware_version()
    assert doc["status"]["state"] == "idle"


def test_info_on_a_sim_port_starts_and_flashes_a_board():
    r = run("info", "--port", "sim:handheld-pro", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["hello"]["board"] == "handheld-pro" and doc["hello"]["cap_ua"] == 800


def test_config_set_get_export_diff_import(vb, tmp_path):
    r = run("config", "set", "session_s=600", "default_level=2", "--port", vb.port)
    assert r.exit_code == 0, r.output
    r = run("config", "get", "--json", "--port", vb.port)
    cfg = json.loads(r.output)
    assert cfg["session_s"] == 600 and cfg["default_level"] == 2
    exp = tmp_path / "dev.json"
    r = run("config", "export", str(exp), "--port", vb.port)
    assert r.exit_code == 0, r.output
    doc = json.loads(exp.read_text())
    assert doc["config"]["session_s"] == 600 and doc["board"] == BOARD
    r = run("config", "diff", str(exp), "--port", vb.port)
    assert "identical" in r.output
    doc["config"]["session_s"] = 300
    doc["levels_ua"] = [70, 150, 240, 320, 400]
    exp.write_text(json.dumps(doc))
    r = run("config", "diff", str(exp), "--port", vb.port)
    assert "session_s" in r.output and "levels_ua" in r.output
    r = run("config", "import", str(exp), "--operator", "clinic-a", "--port", vb.port)
    assert r.exit_code == 0, r.output
    with Device(vb.port) as dev:
        assert dev.config_get()["session_s"] == 300
        assert dev.levels_get() == [70, 150, 240, 320, 400]
        assert any(e["operator"] == "clinic-a" and e["level"] == 1 for e in dev.audit())
        dev.levels_set([80, 160, 240, 320, 400], operator="test-restore")


@pytest.mark.parametrize("assignment,host_msg,device_code", [
    ("session_s=99999", "session_s must be 1..1200", "out_of_range"),
    ("default_program=\"nope\"", "not allowed", "unknown_program"),
    ("volume=3", "unknown config key", "bad_request"),
    ("session_s=\"long\"", "whole number", "bad_type"),
])
def test_bad_config_refused_by_host_and_device(vb, assignment, host_msg, device_code):
    before = run("config", "get", "--json", "--port", vb.port).output
    r = run("config", "set", assignment, "--port", vb.port)
    assert r.exit_code != 0 and host_msg in r.output and "host check" in r.output
    r = run("config", "set", assignment, "--no-host-check", "--port", vb.port)
    assert r.exit_code != 0 and device_code in r.output
    assert run("config", "get", "--json", "--port", vb.port).output == before     # nothing changed


def test_import_refuses_corrupt_and_over_cap_files(vb, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = run("config", "import", str(bad), "--port", vb.port)
    assert r.exit_code != 0 and "not a picostim config export" in r.output
    bad.write_text(json.dumps({"picostim_export": 1, "board": BOARD, "config": {},
                               "levels_ua": [80, 160, 240, 320, 900]}))
    r = run("config", "import", str(bad), "--port", vb.port)
    assert r.exit_code != 0 and "cap" in r.output
    with Device(vb.port) as dev:
        assert dev.levels_get()[4] == 400


def test_run_stop_and_monitor_csv_plot(vb, tmp_path):
    r = run("run", "--level", "2", "--duration", "30", "--port", vb.port)
    assert r.exit_code == 0, r.output
    assert '"phase_us"' in r.output
    out_csv, out_png = tmp_path / "t.csv", tmp_path / "t.png"
    r = run("monitor", "--port", vb.port, "--duration", "1.5", "--rate", "50", "--quiet",
            "--csv", str(out_csv), "--plot", str(out_png))
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) >= 20
    seqs = [int(x["seq"]) for x in rows]
    assert seqs == sorted(seqs)
    assert "lost" in r.output
    assert out_png.read_bytes()[:4] == b"\x89PNG"
    assert max(float(x["i_ua"]) for x in rows) > 50          # measured current while stimulating at level 2
    r = run("stop", "--port", vb.port)
    assert r.exit_code == 0 and "idle" in r.output
