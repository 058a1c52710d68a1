"""`picostim station`: the production station on several units at once -- flash (verified), calibrate, self-test,
quick HIL subset, one unit record each in SQLite (default) or PostgreSQL."""
from __future__ import annotations

import getpass
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import click

from . import main
from ._common import signer_for, PORT_HELP, friendly_errors

DB_HELP = "SQLite file (default station.sqlite, $PICOSTIM_DB) or postgresql://user@host/db"


def db_option(f):
    return click.option("--db", default=lambda: os.environ.get("PICOSTIM_DB", "station.sqlite"), show_default=
                        "station.sqlite", help=DB_HELP)(f)


class _Lines:
    """A progress line per unit: redrawn in place on a terminal, one printed line per change otherwise."""

    def __init__(self, labels: list[str]):
        self.labels = labels
        self.state = ["waiting"] * len(labels)
        self.t0 = time.monotonic()
        self.tty = sys.stdout.isatty()
        self.lock = threading.Lock()
        self.drawn = False

    def line(self, i: int) -> str:
        return f"unit {i + 1} {self.labels[i]:<24.24} {self.state[i]}"

    def __call__(self, i: int, stage: str, detail: str = "") -> None:
        with self.lock:
            self.state[i] = f"{stage:<9} {detail}".rstrip()[:100]
            if self.tty:
                if self.drawn:
                    sys.stdout.write(f"\x1b[{len(self.labels)}F")
                for k in range(len(self.labels)):
                    sys.stdout.write("\x1b[2K" + self.line(k) + "\n")
                self.drawn = True
            else:
                sys.stdout.write(f"[{time.monotonic() - self.t0:6.1f}s] {self.line(i)}\n")
            sys.stdout.flush()


@main.command("station")
@click.option("--board", "-b", default=None, help="board profile (the bundle is built from the packaged firmware)")
@click.option("--bundle", "bundle_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="firmware bundle to flash (from `picostim build`)")
@click.option("--port", "-p", "ports", multiple=True, help=PORT_HELP + "; repeat for several units")
@click.option("--all", "all_ports", is_flag=True, help="every attached MicroPython board")
@click.option("--rig", "rigs", multiple=True, help="rig address per real unit, in the order of their --port")
@db_option
@click.option("--operator", default=lambda: os.environ.get("PICOSTIM_OPERATOR") or getpass.getuser(),
              show_default="$PICOSTIM_OPERATOR or the login name", help="who runs the station")
@click.option("--station-id", default=socket.gethostname, show_default="host name", help="this station's name")
@click.option("--expect-ohm", type=click.IntRange(1, 1_000_000), default=2000, show_default=True,
              help="the fixture's known resistor on the electrodes")
@click.option("--tol-pct", type=click.IntRange(1, 50), default=None, help="self-test tolerance (device default 10)")
@click.option("--sim-load", "sim_loads", multiple=True,
              help="load on each virtual unit's electrodes, in order (default 2k; `open` = a broken unit)")
@click.option("--reprovision", is_flag=True, help="allow units that carry another board profile")
@click.option("--json", "as_json", is_flag=True, help="print the unit records as JSON at the end")
@click.option("--key-file", default=None, type=click.Path(dir_okay=False),
              help="the maker's line secret: lock every unit as the last step (`picostim lock`; $PICOSTIM_KEY_FILE)")
@friendly_errors
def station(board, bundle_file, ports, all_ports, rigs, db, operator, station_id, expect_ohm, tol_pct, sim_loads,
            reprovision, as_json, key_file):
    """Flash, calibrate, self-test and HIL-test every unit (and lock it, with --key-file); one unit record each. Exit 0 when every unit passed,
    1 when one failed, 130 when interrupted (units left idle, database consistent)."""
    from .. import bundle as bundle_mod
    from ..station import Station, StationConfig, UnitSpec
    from ..target import BoardMismatch, check_sim_board, is_sim
    from ..transport import list_ports
    from ..unitdb import StoreError, open_store

    if bundle_file is not None:
        try:
            b = bundle_mod.read(bundle_file)
        except bundle_mod.BundleError as e:
            raise click.ClickException(str(e)) from e
        if board and board != b.board:
            raise click.UsageError(f"--board {board} but the bundle is for {b.board}")
    elif board:
        b = bundle_mod.build(board)
    else:
        raise click.UsageError("give --board BOARD or --bundle FILE")
    specs = list(ports)
    if all_ports:
        specs += [p["port"] for p in list_ports() if p["micropython"] and p["port"] not in specs]
    if not specs:
        raise click.UsageError("no units: pass --port (several allowed), --all, or -p sim for virtual units")
    real = [s for s in specs if not is_sim(s)]
    if len(rigs) != len(real):
        raise click.UsageError(f"{len(real)} real unit(s) need as many --rig addresses (got {len(rigs)})")
    sims = [s for s in specs if is_sim(s)]
    if len(sim_loads) > len(sims):
        raise click.UsageError(f"{len(sim_loads)} --sim-load for {len(sims)} virtual unit(s)")
    units, rig_iter, load_iter = [], iter(rigs), iter(sim_loads)
    for s in specs:
        try:
            check_sim_board(s, b.board)
        except BoardMismatch as e:
            raise click.UsageError(str(e)) from e
        if is_sim(s):
            units.append(UnitSpec(port=s, sim_load=next(load_iter, "2k")))
        else:
            units.append(UnitSpec(port=s, rig=next(rig_iter)))
    try:
        store = open_store(db)
    except StoreError as e:
        raise click.ClickException(str(e)) from e
    with tempfile.TemporaryDirectory(prefix="picostim-station-") as d, store:
        path = bundle_file or bundle_mod.write(b, Path(d))
        cfg = StationConfig(bundle=b, bundle_file=str(path), operator=operator, station_id=station_id,
                            expect_ohm=expect_ohm, tol_pct=tol_pct, reprovision=reprovision,
                            signer=signer_for(key_file))
        lines = _Lines(specs)
        click.echo(f"station {station_id}: {len(units)} unit(s), {b.board} firmware {b.fw} bundle {b.hash[:12]}, "
                   f"operator {operator}, records -> {getattr(store, 'url', db)}")
        st = Station(cfg, store, progress=lines)
        t0 = time.monotonic()
        try:
            outcomes = st.run(units)
        except KeyboardInterrupt:
            not_idle = {i: v for i, v in st.idle_after.items() if v != "idle"}
            if not_idle:
                for i, v in sorted(not_idle.items()):
                    click.echo(f"unit {i + 1} {specs[i]}: NOT confirmed idle: {v}", err=True)
                click.echo("interrupted: units above may still be stimulating; units not finished have no record",
                           err=True)
            else:
                click.echo("interrupted: every unit stopped and left idle; units not finished have no record",
                           err=True)
            sys.exit(130)
    recorded = [o for o in outcomes if o.get("result") in ("PASS", "FAIL")]
    if as_json:
        click.echo(json.dumps(recorded, indent=1))
    npass = sum(1 for o in recorded if o["result"] == "PASS")
    click.echo(f"{npass} of {len(units)} unit(s) passed, {len(recorded)} record(s) written in "
               f"{time.monotonic() - t0:.1f} s")
    for i, o in enumerate(outcomes):
        if o.get("result") != "PASS":
            click.echo(f"unit {i + 1} {specs[i]}: {o.get('result')} uid {o.get('uid', '?')}: {o.get('reason', '')}")
    if npass != len(units):
        sys.exit(1)
