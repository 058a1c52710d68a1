"""`picostim farm`: benches as labgrid places.

    picostim farm exporter-config --benches lab.json -o exporter.yaml     # real benches of one exporter host
    picostim farm places --benches lab.json --exporter rack1 -x COORD      # one place per bench on the coordinator
    picostim farm up -n 2 --prefix rack1- -x COORD                        # virtual benches + exporter + places

The suite then runs on places with `picostim hil --lg-place 'rack1-*'`.
"""
from __future__ import annotations

import signal
import sys
import threading

import click

from . import main


def _benches_from(benches_file, bench_opts) -> list[dict]:
    from ..farm.benches import BenchListError, check_benches, load_benches, parse_bench_option
    try:
        entries = load_benches(benches_file) if benches_file else []
        entries += [parse_bench_option(b) for b in bench_opts]
        return check_benches(entries)
    except BenchListError as e:
        raise click.ClickException(str(e))


@main.group("farm")
def farm_group():
    """HIL benches as labgrid places (exporter configuration, places, virtual benches)."""


@farm_group.command("exporter-config")
@click.option("--benches", "benches_file", type=click.Path(dir_okay=False), default=None,
              help='JSON bench list: [{"name", "dut", "rig", "board"}] with local device paths (/dev/serial/by-id/...)')
@click.option("--bench", "bench_opts", multiple=True, metavar="NAME,DUT,RIG[,BOARD]",
              help="one bench (repeatable), e.g. bench1,/dev/serial/by-id/usb-...-dut,/dev/serial/by-id/usb-...-rig")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default="-", show_default=True,
              help="file to write (- for stdout)")
def exporter_config_cmd(benches_file, bench_opts, output):
    """Write the labgrid exporter configuration serving these benches' DUT and rig serial ports."""
    from ..farm.benches import exporter_config
    if not benches_file and not bench_opts:
        raise click.UsageError("give --benches FILE or at least one --bench NAME,DUT,RIG[,BOARD]")
    text = exporter_config(_benches_from(benches_file, bench_opts))
    if output == "-":
        click.echo(text, nl=False)
        return
    try:
        with open(output, "w") as f:
            f.write(text)
    except OSError as e:
        raise click.ClickException(f"{output}: {e}")
    click.echo(f"wrote {output}")


@farm_group.command("places")
@click.option("--benches", "benches_file", type=click.Path(dir_okay=False), default=None, help="JSON bench list")
@click.option("--bench", "bench_opts", multiple=True, metavar="NAME,DUT,RIG[,BOARD]", help="one bench (repeatable)")
@click.option("--exporter", "exporter_name", required=True, help="the exporter's name (labgrid-exporter -n NAME)")
@click.option("-x", "--lg-coordinator", "coordinator", default=None, help="coordinator HOST[:PORT] ($LG_COORDINATOR)")
def places_cmd(benches_file, bench_opts, exporter_name, coordinator):
    """Create (or complete) one labgrid place per bench: its dut and rig ports, tagged with its board."""
    from ..farm.benches import place_matches
    from ..farm.coordinator import Coordinator, FarmError
    benches = _benches_from(benches_file, bench_opts)
    try:
        with Coordinator(coordinator) as c:
            for b in benches:
                c.ensure_place(b["name"], place_matches(exporter_name, b["name"]), {"board": b["board"]})
                click.echo(f"place {b['name']}: {' '.join(place_matches(exporter_name, b['name']))} board={b['board']}")
    except FarmError as e:
        raise click.ClickException(str(e))


@farm_group.command("up")
@click.option("-n", "--benches", "count", type=click.IntRange(1, 32), default=2, show_default=True,
              help="number of virtual benches")
@click.option("--prefix", default="vbench-", show_default=True, help="bench / place names: PREFIX1, PREFIX2, ...")
@click.option("--board", default="handheld-home", show_default=True, help="board profile of every bench")
@click.option("--load", default="2k", show_default=True, help="electrode load at start")
@click.option("--clock", type=click.Choice(["cpu", "model", "realtime"]), default="model", show_default=True,
              help="virtual clock (model: deterministic, independent of host load)")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="where to write the exporter configuration (default: in the farm's /dev/shm directory)")
@click.option("-x", "--lg-coordinator", "coordinator", default=None,
              help="also run labgrid-exporter against this coordinator and create one place per bench")
@click.option("--exporter", "exporter_name", default=None, help="exporter name (default: PREFIX + 'exporter')")
@click.option("--hostname", default=None,
              help="host name or IP clients use to reach this exporter's ports (default: this host's name)")
def up_cmd(count, prefix, board, load, clock, config_path, coordinator, exporter_name, hostname):
    """Run N virtual benches (and their exporter) until interrupted; prints `ready` when they can be acquired."""
    from ..farm.coordinator import FarmError
    from ..farm.virtual import VirtualFarm

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    farm = None
    try:
        farm = VirtualFarm(count, prefix=prefix, board=board, load=load, clock=clock, config_path=config_path,
                           coordinator=coordinator, exporter_name=exporter_name, hostname=hostname,
                           echo=lambda s: click.echo(s))
        if not coordinator:
            click.echo(f"run: labgrid-exporter -c COORDINATOR -n {farm.exporter_name} {farm.config_path}")
            click.echo(f"then: picostim farm places --benches {farm.bench_list} --exporter {farm.exporter_name} "
                       f"-x COORDINATOR")
        click.echo("ready")
        sys.stdout.flush()
        while not stop.wait(0.5):
            if farm.exporter is not None and farm.exporter.poll() is not None:
                raise FarmError(f"labgrid-exporter exited with {farm.exporter.returncode}")
    except KeyboardInterrupt:
        pass
    except (FarmError, OSError) as e:
        raise click.ClickException(str(e))
    finally:
        if farm is not None:
            farm.close()
