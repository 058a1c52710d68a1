"""Issue 15: the audit table shows operator names as typed (no rich markup), each entry carries the host's UTC
time, and an empty operator is refused by the host (usage error) and by the device."""
import datetime as dt

import pytest
from click.testing import CliRunner

from picostim import deploy
from picostim.cli import main as cli
from picostim.device import Device, DeviceError
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
    return CliRunner().invoke(cli, list(args), terminal_width=200)


def test_audit_table_keeps_operator_names_and_host_utc(vb):
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    for ua, op in ((150, "tech [night shift]"), (160, "[bold]"), (170, "[/]")):
        r = run("levels", "set", "2", str(ua), "--operator", op, "-p", vb.port)
        assert r.exit_code == 0, r.output
    r = run("levels", "audit", "-p", vb.port)
    assert r.exit_code == 0, r.output
    assert "tech [night shift]" in r.output and "[bold]" in r.output and "[/]" in r.output, r.output
    with Device(vb.port) as dev:
        entries = dev.audit()
        dev.levels_set(level=2, ua=160, operator="restore")
    for e in entries[-3:]:
        stamp = dt.datetime.strptime(e["utc"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
        assert before <= stamp <= dt.datetime.now(dt.timezone.utc)
        assert e["utc"] in r.output


@pytest.mark.parametrize("op", ["", "   "])
def test_empty_operator_refused_by_host_and_device(vb, op):
    with Device(vb.port) as dev:
        table = dev.levels_get()
        n_audit = len(dev.audit())
    r = run("levels", "set", "2", "150", "--operator", op, "-p", vb.port)
    assert r.exit_code == 2 and "operator" in r.output, r.output
    with Device(vb.port) as dev:
        with pytest.raises(DeviceError) as ei:
            dev.levels_set(level=2, ua=150, operator=op)
        assert ei.value.code == "out_of_range"
        assert dev.levels_get() == table and len(dev.audit()) == n_audit
