"""`picostim sim`: run a virtual board in the foreground; other tools connect to its port and rig address."""
import os
import signal
import threading

import click

from . import main
from ._common import EXIT_INTERRUPTED, check_board, check_load, friendly_errors


def _uid_param(ctx, param, value):
    if value is None:
        return None
    text = value.lower()
    if len(text) != 16 or any(c not in "0123456789abcdef" for c in text):
        raise click.BadParameter(f"{value!r}: 16 hex digits (8 bytes, as machine.unique_id())")
    return text


@main.command("sim")
@click.option("--board", "-b", default="handheld-home", show_default=True, help="board profile from boards/",
              callback=lambda c, p, v: check_board(v) and v)
@click.option("--flash-dir", type=click.Path(file_okay=False), default=None,
              help="the board's flash (persists across runs); default: a temporary directory")
@click.option("--load", default="2k", show_default=True, help="electrode load: 500, 2k, 10k, skin, open, short, any ohms",
              callback=lambda c, p, v: check_load(v))
@click.option("--clock", type=click.Choice(["cpu", "model", "realtime"]), default="model", show_default=True,
              help="virtual clock: deterministic cost model (as `-p sim`, HIL and the demo), RP2040-speed CPU time, "
                   "or wall time")
@click.option("--speed", type=float, default=1.0, show_default=True,
              help="virtual seconds per wall second while the firmware sleeps")
@click.option("--rig-port", type=int, default=0, show_default=True, help="TCP port for the rig protocol (0: any free)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--uid", default=None, callback=_uid_param, help="machine.unique_id() as 16 hex digits (default: a new "
              "random one per board)")
@click.option("--unit-seed", type=click.IntRange(min=0), default=None,
              help="this unit's analog part values (tolerances in the board profile) from this seed (default: from "
              "the uid, so the same uid is the same unit)")
@click.option("--ideal", is_flag=True, help="ideal analog parts (no tolerances)")
@click.option("--no-flash", is_flag=True, help="start a blank board (MicroPython only, no picostim application)")
@click.option("--engine", type=click.Choice(["unix", "emu"]), default=None,
              help="unix: the firmware on the MicroPython unix port with chip models; emu: the official MicroPython "
                   "image in an RP2040 emulator (default $PICOSTIM_ENGINE, else unix)")
@click.option("--micropython", type=click.Path(exists=True, dir_okay=False), default=None,
              help="MicroPython RPI_PICO v1.28.0 UF2 for --engine emu (default $PICOSTIM_MICROPYTHON_UF2)")
@click.option("--serial-dir", type=click.Path(file_okay=False), default=None,
              help="also serve the board as serial devices for a labgrid exporter: DIR/dut (its USB port) and "
              "DIR/rig (the rig protocol on a pty); DIR under /dev/ (e.g. /dev/shm/bench1) so ser2net serves it")
@friendly_errors
def sim_cmd(board, flash_dir, load, clock, speed, rig_port, seed, uid, unit_seed, ideal, no_flash, engine, micropython,
            serial_dir):
    """Run a virtual board until interrupted (flashed with the application unless --no-flash); prints
    port=<path>, rig=<address>, flash=<dir> and uid=<id> (and dut-serial=/rig-serial= with --serial-dir)."""
    from ..sim import BoardError, VirtualBoard, engine_from_env
    from ..target import wait_alive

    try:
        engine = engine_from_env(engine)
        vb = VirtualBoard(board=board, load=load, flash_dir=flash_dir, clock=clock, speed=speed, seed=seed,
                          rig_port=rig_port, engine=engine, micropython=micropython, uid=uid, unit_seed=unit_seed,
                          ideal=ideal)
    except (BoardError, RuntimeError) as e:
        raise click.ClickException(str(e)) from None
    rig_serial = None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    interrupted = False
    try:
        vb.start()
        if not no_flash:
            from .. import deploy
            from ..transport import SerialTransport
            wait_alive(vb.port)
            with SerialTransport(vb.port) as t:
                r = deploy.deploy(t, board)
            click.echo(f"flashed: {r.summary()}", err=True)
        click.echo(f"port={vb.port}")
        click.echo(f"rig={vb.rig_address}")
        if vb.flash_dir is not None:
            click.echo(f"flash={vb.flash_dir}")
        click.echo(f"uid={getattr(vb, 'uid', None)}")
        click.echo(f"unit_seed={getattr(vb, 'unit_seed', None)}{' (ideal parts)' if ideal else ''}")
        if serial_dir:
            from ..farm.virtual import serial_links
            try:
                dut_link, rig_serial = serial_links(vb, serial_dir)
            except OSError as e:
                raise click.ClickException(f"--serial-dir {serial_dir}: {e}")
            click.echo(f"dut-serial={dut_link}")
            click.echo(f"rig-serial={rig_serial.link}")
        nxt = (f"picostim flash -b {board} -p {vb.port}" if no_flash else f"picostim info -p {vb.port}")
        click.echo(f"next: {nxt}   (Ctrl-C stops the board)", err=True)
        stop.wait()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if rig_serial is not None:
            rig_serial.close()
            try:
                os.unlink(os.path.join(serial_dir, "dut"))
            except OSError:
                pass
        vb.close()
    if interrupted:
        raise SystemExit(EXIT_INTERRUPTED)
