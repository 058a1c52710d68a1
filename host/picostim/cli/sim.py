"""`picostim sim`: run a virtual board in the foreground; other tools connect to its port and rig address."""
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
def sim_cmd(board, flash_dir, load, clock, speed, rig_port, seed):
    """Run a virtual board until interrupted; prints port=<path> and rig=<address>."""
    from ..sim import VirtualBoard

    vb = VirtualBoard(board=board, load=load, flash_dir=flash_dir, clock=clock, speed=speed, seed=seed,
                      rig_port=rig_port)
    vb.start()
    click.echo(f"port={vb.port}")
    click.echo(f"rig={vb.rig_address}")
    click.echo(f"flash={vb.flash_dir}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        vb.close()
