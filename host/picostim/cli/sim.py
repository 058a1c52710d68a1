"""`picostim sim`: run a virtual board in the foreground; other tools connect to its port and rig address."""
import os
import signal
import threading

import click

from . import main


@main.command("sim")
@click.option("--board", default="handheld-home", show_default=True, help="board profile from boards/")
@click.option("--flash-dir", type=click.Path(file_okay=False), default=None,
              help="the board's flash (persists across runs); default: a temporary directory")
@click.option("--load", default="2k", show_default=True, help="electrode load: 500, 2k, 10k, skin, open, short, any ohms")
@click.option("--clock", type=click.Choice(["cpu", "model", "realtime"]), default="cpu", show_default=True,
              help="virtual clock: RP2040-speed CPU time, deterministic cost model, or wall time")
@click.option("--speed", type=float, default=1.0, show_default=True,
              help="virtual seconds per wall second while the firmware sleeps")
@click.option("--rig-port", type=int, default=0, show_default=True, help="TCP port for the rig protocol (0: any free)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--engine", type=click.Choice(["unix", "emu"]), default=None,
              help="unix: the firmware on the MicroPython unix port with chip models; emu: the official MicroPython "
                   "image in an RP2040 emulator (default $PICOSTIM_ENGINE, else unix)")
@click.option("--micropython", type=click.Path(exists=True, dir_okay=False), default=None,
              help="MicroPython RPI_PICO v1.28.0 UF2 for --engine emu (default $PICOSTIM_MICROPYTHON_UF2)")
@click.option("--serial-dir", type=click.Path(file_okay=False), default=None,
              help="also serve the board as serial devices for a labgrid exporter: DIR/dut (its USB port) and "
              "DIR/rig (the rig protocol on a pty); DIR under /dev/ (e.g. /dev/shm/bench1) so ser2net serves it")
def sim_cmd(board, flash_dir, load, clock, speed, rig_port, seed, engine, micropython, serial_dir):
    """Run a virtual board until interrupted; prints port=<path> and rig=<address>."""
    from ..sim import BoardError, VirtualBoard, engine_from_env

    try:
        engine = engine_from_env(engine)
        vb = VirtualBoard(board=board, load=load, flash_dir=flash_dir, clock=clock, speed=speed, seed=seed,
                          rig_port=rig_port, engine=engine, micropython=micropython)
        vb.start()
    except (BoardError, RuntimeError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"port={vb.port}")
    click.echo(f"rig={vb.rig_address}")
    if vb.flash_dir is not None:
        click.echo(f"flash={vb.flash_dir}")
    rig_serial = None
    if serial_dir:
        from ..farm.virtual import serial_links
        try:
            dut_link, rig_serial = serial_links(vb, serial_dir)
        except OSError as e:
            vb.close()
            raise click.ClickException(f"--serial-dir {serial_dir}: {e}")
        click.echo(f"dut-serial={dut_link}")
        click.echo(f"rig-serial={rig_serial.link}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if rig_serial is not None:
            rig_serial.close()
            try:
                os.unlink(os.path.join(serial_dir, "dut"))
            except OSError:
                pass
        vb.close()
