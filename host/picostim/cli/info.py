"""`picostim info`: what a board says about itself (hello + status), or what is attached (--list)."""
from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from . import main
from ._common import device_session, friendly_errors, port_option


@main.command()
@port_option
@click.option("--list", "list_only", is_flag=True, help="list attached MicroPython ports and BOOTSEL drives")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@friendly_errors
def info(port, list_only, as_json):
    """Firmware version, board, unique id, caps, levels and state of a board."""
    console = Console()
    if list_only:
        from ..transport import list_ports
        from ..uf2 import find_drives
        ports = list_ports()
        drives = [{"path": str(d.path), **d.info} for d in find_drives()]
        if as_json:
            click.echo(json.dumps({"ports": ports, "bootsel_drives": drives}, indent=1))
            return
        t = Table(title="attached")
        for c in ("port", "kind", "serial", "description"):
            t.add_column(c)
        for p in ports:
            t.add_row(p["port"], "MicroPython" if p["micropython"] else "serial", str(p["serial"] or ""),
                      str(p["description"] or ""))
        for d in drives:
            t.add_row(d["path"], "BOOTSEL drive", "", d.get("Board-ID", ""))
        console.print(t)
        return
    with device_session(port) as (dev, _tgt):
        hello = dev.hello()
        status = dev.status()
    if as_json:
        click.echo(json.dumps({"hello": hello, "status": status}, indent=1))
        return
    t = Table(title=f"picostim board on {port}", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    for k in ("board", "uid", "fw", "bundle", "proto", "cap_ua", "ceiling_ua", "levels_ua", "programs", "reset_cause",
              "config_status"):
        t.add_row(k, str(hello.get(k)))
    for k in ("state", "level", "setpoint_ua", "program", "remaining_s", "fault", "charging", "contact"):
        t.add_row(k, str(status.get(k)))
    console.print(t)
