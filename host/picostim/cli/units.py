"""`picostim units`: read the station's unit records back (list, show, export, yield)."""
from __future__ import annotations

import csv
import json
import sys

import click
from rich.console import Console
from rich.table import Table

from . import main
from .station import db_option


def _store(db):
    from ..unitdb import StoreError, open_store
    try:
        return open_store(db, must_exist=True)
    except StoreError as e:
        raise click.ClickException(str(e)) from e


def _records(db):
    with _store(db) as store:
        return store.records()


@main.group("units")
def units():
    """Unit records written by `picostim station`."""


@units.command("list")
@db_option
@click.option("--json", "as_json", is_flag=True)
def units_list(db, as_json):
    """One line per unit: first and latest result, number of records."""
    from ..unitdb import units as unit_rows
    rows = unit_rows(_records(db))
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    t = Table(title=f"units in {db}")
    for c in ("uid", "board", "records", "first", "latest", "reason", "bundle", "ended (UTC)"):
        t.add_column(c, no_wrap=c in ("uid", "bundle"))
    for r in rows:
        color = "green" if r["last_result"] == "PASS" else "red"
        t.add_row(r["uid"], r["board"], str(r["records"]), r["first_result"], f"[{color}]{r['last_result']}[/]",
                  r["last_reason"], r["bundle"][:12], r["last_ended_utc"])
    Console(width=max(160, Console().width)).print(t)


@units.command("show")
@click.argument("uid")
@db_option
@click.option("--json", "as_json", is_flag=True)
def units_show(uid, db, as_json):
    """Every record of one unit, with its measurements."""
    with _store(db) as store:
        recs = store.records(uid=uid)
    if not recs:
        raise click.ClickException(f"no records for uid {uid} in {db}")
    if as_json:
        click.echo(json.dumps(recs, indent=1))
        return
    console = Console(width=max(140, Console().width))
    for r in recs:
        color = "green" if r["result"] == "PASS" else "red"
        console.print(f"[bold]{r['uid']}[/] {r['board']} bundle {r['bundle'][:12]} fw {r['fw']}: [{color}]"
                      f"{r['result']}[/] {r['reason']}")
        console.print(f"  {r['started_utc']} -> {r['ended_utc']}  operator {r['operator']}  station {r['station']}  "
                      f"port {r['port']}  calibration before {r['calibration']['before']} after "
                      f"{r['calibration']['after']} ({r['calibration'].get('status', '')})")
        console.print("  steps: " + ", ".join(f"{s['name']} {s['outcome']}" for s in r["steps"]))
        t = Table(show_edge=False)
        for c in ("phase", "measurement", "value", "unit", "low", "high", "outcome"):
            t.add_column(c)
        for m in r["measurements"]:
            t.add_row(m["phase"], m["name"], str(m["value"]), m["unit"], str(m["low"]), str(m["high"]),
                      f"[{'green' if m['outcome'] == 'PASS' else 'red'}]{m['outcome']}[/]")
        console.print(t)


@units.command("export")
@db_option
@click.option("--csv", "as_csv", is_flag=True, help="one row per measurement, with its record's fields")
@click.option("--json", "as_json", is_flag=True, help="every record, complete")
@click.option("-o", "--output", type=click.File("w"), default="-", help="file (default stdout)")
def units_export(db, as_csv, as_json, output):
    """Export the records (CSV: one row per measurement; JSON: the records)."""
    if as_csv == as_json:
        raise click.UsageError("choose one of --csv or --json")
    with _store(db) as store:
        if as_json:
            json.dump(store.records(), output, indent=1)
            output.write("\n")
            return
        rows = store.measurement_rows()
    cols = ("uid", "board", "bundle", "result", "started_utc", "station", "operator", "record_id", "seq", "phase",
            "name", "value", "unit", "low", "high", "outcome")
    w = csv.DictWriter(output, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)


@units.command("yield")
@db_option
@click.option("--json", "as_json", is_flag=True)
def units_yield(db, as_json):
    """First-pass yield, final yield and failures by measurement."""
    from ..unitdb import yield_summary
    s = yield_summary(_records(db))
    if as_json:
        click.echo(json.dumps(s, indent=1))
        return
    pct = (lambda x: "-" if x is None else f"{100 * x:.1f} %")
    click.echo(f"units {s['units']}, records {s['records']} ({s['retests']} retests)")
    click.echo(f"first-pass yield {pct(s['first_pass_yield'])} ({s['first_pass']}/{s['units']}), "
               f"final yield {pct(s['final_yield'])} ({s['final_pass']}/{s['units']})")
    if s["failures_by_measurement"]:
        click.echo("failures by measurement:")
        for k, n in s["failures_by_measurement"].items():
            click.echo(f"  {n:4d}  {k}")
    if s["failures_by_step"]:
        click.echo("failures by step: " + ", ".join(f"{k} {n}" for k, n in s["failures_by_step"].items()))
