"""`picostim selftest`: the device's self-test, optionally with a known resistor on the electrodes (--expect-ohm)."""
from __future__ import annotations

import json

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import main
from ._common import (device_session, friendly_errors, output_idle_on_exit, port_option, supervisor_stall,
                      warn_loudly)


@main.command()
@port_option
@click.option("--expect-ohm", type=click.IntRange(1, 1_000_000), default=None,
              help="a known resistor is on the electrodes: probe it and check the measured impedance")
@click.option("--tol-pct", type=click.IntRange(1, 50), default=None, help="tolerance on --expect-ohm (device default 10)")
@click.option("--probe", is_flag=True, help="probe the output path without a known resistor (board contact range)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@friendly_errors
def selftest(port, expect_ohm, tol_pct, probe, as_json):
    """Run the device self-test; exit status 1 if a check fails."""
    with device_session(port) as (dev, _tgt):
        before = dev.status()
        with output_idle_on_exit(dev, always=False):
            r = dev.selftest(expect_ohm=expect_ohm, tol_pct=tol_pct, probe=True if probe else None)
        after = dev.status()
    r = {k: v for k, v in r.items() if k not in ("id", "ok")}
    stall = supervisor_stall(before, after) if "measured_ohm" in r else None
    if stall:
        r["supervisor"] = {"stalled": True, "explanation": stall,
                           **{k: after.get(k, 0) - before.get(k, 0) for k in ("samples", "late", "missed")}}
        warn_loudly(stall)
    if as_json:
        click.echo(json.dumps(r, indent=1))
    else:
        t = Table(title=f"selftest on {port}")
        t.add_column("check", style="bold")
        t.add_column("result")
        t.add_column("detail")
        for c in r.get("checks", []):
            t.add_row(c["name"], "[green]pass[/]" if c["ok"] else "[red]FAIL[/]", str(c.get("detail") or ""))
        console = Console()
        console.print(t)
        if "measured_ohm" in r and r["measured_ohm"] is None:
            why = r.get("stopped") or ("the supervisor took no sample (see the warning)" if stall else
                                       f"no current flowed at the {r.get('probe_ua')} uA probe")
            console.print(escape(f"measured nothing: {why}; accepted {r.get('accept_ohm')} ohm"))
        elif "measured_ohm" in r:
            console.print(f"measured {r['measured_ohm']} ohm ({r.get('measured_ua')} uA, {r.get('measured_mv')} mV, "
                          f"{r.get('looks')} samples) with a {r.get('probe_ua')} uA probe; accepted "
                          f"{r.get('accept_ohm')}")
        console.print("[green]PASSED[/]" if r.get("passed") else "[red]FAILED[/]")
    if not r.get("passed"):
        raise SystemExit(1)
