"""`picostim calibrate`: calibrate a unit against the rig's reference resistor (a thin CLI over
picostim.calibration.calibrate): error tables before and after, the record written on the unit."""
from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from . import main
from ._common import (check_operator, device_session, emit_json, friendly_errors, json_option, operator_default,
                      output_idle_on_exit, port_option)


def _table(title, points) -> Table:
    t = Table(title=title)
    for c in ("level µA", "applied µA", "rig µA", "error", "device µA", "device − rig", ""):
        t.add_column(c, justify="right")
    for p in points:
        note = "cap bound" if p.bounded else ""
        ok = p.ok() and p.device_ok()
        t.add_row(f"{p.target_ua:g}", f"{p.applied_ua:g}", f"{p.rig_ua:.2f}",
                  f"{p.error_ua:+.2f} µA ({p.error_pct:+.2f} %)",
                  "-" if p.device_ua is None else f"{p.device_ua:.2f}",
                  "-" if p.device_error_ua is None else f"{p.device_error_ua:+.2f} µA",
                  ("[green]ok[/]" if ok else "[red]out[/]") + (f" {note}" if note else ""))
    return t


@main.command("calibrate")
@port_option
@click.option("--rig", default=None, help="the rig's address (its serial port, or host:port); default for -p sim: "
              "the virtual board's own rig")
@click.option("--reference", default="2k", show_default=True,
              help="the rig's reference resistor put on the electrodes while calibrating")
@click.option("--operator", default=operator_default, callback=check_operator,
              help="who calibrates (the unit's audit log); default $PICOSTIM_OPERATOR or $USER")
@json_option
@friendly_errors
def calibrate_cmd(port, rig, reference, operator, as_json):
    """Drive setpoints into the rig's reference resistor, fit output and sense gain/offset, write the unit's
    calibration record and measure every level again. Exit status 1 when a level or the unit's own reading is
    still outside its limit (+-1 % + 2 uA delivered, +-2 % + 2 uA reading)."""
    from ..calibration import CalibrationError, calibrate

    with device_session(port) as (dev, tgt):
        rig_obj, own = _rig(tgt, rig)
        try:
            with output_idle_on_exit(dev):
                say = (lambda m: None) if as_json else (lambda m: click.echo(m, err=True))
                try:
                    res = calibrate(dev, rig_obj, operator=operator, reference=reference, progress=say)
                except CalibrationError as e:
                    raise click.ClickException(f"calibration failed: {e}") from None
        finally:
            if own:
                rig_obj.close()
    if as_json:
        emit_json(res.to_dict())
    else:
        c = Console()
        c.print(_table("before (the unit as it came)", res.before))
        c.print(_table("after (new calibration record)", res.after))
        f = res.fit
        c.print(f"record: output gain {f['out_gain']:.5f} offset {f['out_offset_ua']:+.2f} µA, sense gain "
                f"{f['sense_gain']:.5f} offset {f['sense_offset_ua']:+.2f} µA; cap bound {res.cap_bound_ua} µA")
        c.print("[green]PASSED[/]" if res.passed else f"[red]FAILED[/]: {res.reason}")
    if not res.passed:
        raise SystemExit(1)


def _rig(tgt, address):
    """(rig, whether to close it): the virtual board's own rig for -p sim, else a client of the rig at `address`."""
    if tgt.vb is not None and address in (None, "sim"):
        return tgt.vb.rig, False
    if not address:
        raise click.UsageError("a real unit needs --rig ADDR (the rig with the reference resistor)")
    from ..sim.rigproto import RigClient
    return RigClient(address), True
