"""`picostim flash`: MicroPython UF2 (optional) + the application, on one board or many at once."""
from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from . import main
from ._common import PORT_HELP, check_board, key_file_option, signer_for, check_port, emit_json, friendly_errors, json_option


@main.command()
@click.option("--board", "-b", default=None, help="board profile from boards/ (e.g. handheld-home); "
              "with --bundle, the bundle's board")
@click.option("--bundle", "bundle_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="flash this firmware bundle (from `picostim build`) instead of building from source")
@click.option("--port", "-p", "ports", multiple=True, help=PORT_HELP + "; repeat for several boards")
@click.option("--all", "all_ports", is_flag=True, help="every attached MicroPython board (USB 2E8A:0005)")
@click.option("--uf2", "uf2_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="install this MicroPython UF2 first (board goes to BOOTSEL, file copied to RPI-RP2)")
@click.option("--firmware-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="application source tree (default: the repo's firmware/)")
@click.option("--verify", is_flag=True, help="hash every file on the unit even when it reports this bundle already")
@click.option("--reprovision", is_flag=True, help="allow flashing a unit that carries another board profile")
@click.option("--no-handshake", is_flag=True, help="skip the protocol version check at the end")
@key_file_option
@json_option
@friendly_errors
def flash(board, bundle_file, ports, all_ports, uf2_file, firmware_dir, verify, reprovision, no_handshake,
          as_json, key_file):
    """Flash the application (only changed files, every file hash-verified, stale files removed, board profile
    provisioned, version handshake); with --uf2 install MicroPython first. A unit that already reports the bundle
    is left as it is (one round trip) unless --verify."""
    from .. import boards, multi
    from ..target import BoardMismatch, check_sim_board, default_port
    from ..transport import list_ports

    bundle = None
    if bundle_file is not None:
        from ..bundle import BundleError, read
        if firmware_dir is not None:
            raise click.UsageError("--bundle and --firmware-dir exclude each other")
        try:
            bundle = read(bundle_file)
        except BundleError as e:
            raise click.ClickException(str(e)) from e
        if board is not None and board != bundle.board:
            raise click.UsageError(f"--board {board} but the bundle is for {bundle.board}")
        board = bundle.board
    if board is None:
        raise click.UsageError("give --board BOARD or --bundle FILE")
    check_board(board)  # a bad (or rig) profile stops everything before any board is touched
    signer = signer_for(key_file)   # a locked unit: unlock, flash, lock again (issue 14)
    if uf2_file is not None:      # a bad image too
        from ..uf2 import check_uf2
        check_uf2(uf2_file)
    for spec in ports:
        check_port(spec)
    specs = list(ports)
    if all_ports:
        specs += [p["port"] for p in list_ports() if p["micropython"] and p["port"] not in specs]
    if not specs:
        p = default_port()
        if p is None:
            raise click.ClickException("no board found: pass --port PORT (several allowed), --all, or --port sim")
        specs = [p]
    for spec in specs:
        try:
            check_sim_board(spec, board)
        except BoardMismatch as e:
            raise click.UsageError(str(e)) from e
    # with --json the progress and tables go to stderr: stdout carries only the JSON result
    console = Console(width=max(120, Console().width), stderr=as_json)
    results = multi.flash_many(specs, board, uf2_file=uf2_file, firmware_dir=firmware_dir, console=console,
                               handshake=not no_handshake, bundle=bundle, verify=verify, reprovision=reprovision,
                               signer=signer)
    console.print(multi.summary_table(results))
    for r in results:
        if r.ok and r.quick:
            console.print(f"{r.port}: bundle {r.bundle[:12]} already on the unit (bundle reported in one round trip, "
                          f"{r.seconds * 1000:.0f} ms); nothing sent")
        elif r.ok and r.written == 0 and r.removed == 0:
            console.print(f"{r.port}: nothing changed, nothing sent")
    if as_json:
        emit_json([{"port": r.port, "uid": r.unique_id, "board": r.board, "version": r.version, "result": r.result,
                    "ok": r.ok, "seconds": round(r.seconds, 3), "written": r.written, "removed": r.removed,
                    "detail": r.detail} for r in results])
    from ..target import is_sim
    if any(is_sim(s) for s in specs):
        click.echo("note: a `-p sim` board lives only for its command: it is gone now, and what was flashed with it. "
                   "Keep one running with `picostim sim` and pass its port.", err=True)
    bad = [r for r in results if not r.ok]
    if bad:
        raise click.ClickException(f"{len(bad)} of {len(results)} board(s) failed: "
                                   + "; ".join(f"{r.port}: {r.detail}" for r in bad))
