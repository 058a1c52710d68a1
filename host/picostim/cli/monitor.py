"""`picostim monitor`: live telemetry as a rich table, optional CSV and PNG plot."""
from __future__ import annotations

import csv
import time
from pathlib import Path

import click
from rich.live import Live
from rich.table import Table

from . import main
from ._common import device_session, friendly_errors, port_option

CSV_FIELDS = ("host_s", "seq", "t_ms", "state", "setpoint_ua", "i_ua", "v_mv", "gap", "zone", "zone_limit_ua")


def plot_samples(samples: list[dict], path: Path, title: str = "picostim telemetry") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.get("t_ms", 0) / 1000 for s in samples]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(t, [s.get("setpoint_ua") for s in samples], label="setpoint (µA)", drawstyle="steps-post")
    ax.plot(t, [s.get("i_ua") for s in samples], label="measured |I| (µA)", marker=".", linestyle="none")
    ax.set_xlabel("device time (s)")
    ax.set_ylabel("µA")
    ax.set_title(title)
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _table(samples, stats, others):
    t = Table(title=f"telemetry: {stats.received} samples, {stats.lost} lost in {stats.gaps} gaps")
    for c in ("seq", "t_ms", "state", "setpoint_ua", "i_ua", "v_mv"):
        t.add_column(c, justify="right")
    for s in samples[-12:]:
        t.add_row(*(str(s.get(c, "")) for c in ("seq", "t_ms", "state", "setpoint_ua", "i_ua", "v_mv")))
    if others:
        t.caption = "last event: " + str(others[-1])
    return t


@main.command()
@port_option
@click.option("--rate", "rate_hz", type=int, default=20, show_default=True, help="telemetry rate (Hz)")
@click.option("--duration", "duration_s", type=float, default=None, help="stop after this many seconds")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False, path_type=Path), help="write samples to CSV")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False, path_type=Path), help="write a PNG plot")
@click.option("--start-level", type=int, default=None, help="start a session at this level first")
@click.option("--zone", help="treatment zone: the session starts in it (--start-level), else the zone is chosen now")
@click.option("--quiet", is_flag=True, help="no live table")
@friendly_errors
def monitor(port, rate_hz, duration_s, csv_file, plot_file, start_level, zone, quiet):
    """Live telemetry (measured current, electrode voltage, state); seq gaps are counted and reported."""
    samples, others = [], []
    t0 = time.monotonic()
    with device_session(port) as (dev, _):
        if start_level is not None:
            dev.start(level=start_level, zone=zone)
        elif zone is not None:
            dev.set_zone(zone)
        writer = fh = None
        if csv_file:
            fh = open(csv_file, "w", newline="")
            writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
        try:
            with Live(_table(samples, dev.telemetry_stats, others), refresh_per_second=5,
                      auto_refresh=not quiet, transient=quiet) as live:
                for s in dev.telemetry(rate_hz=rate_hz, duration_s=duration_s, other_events=others):
                    s = {**s, "host_s": round(time.monotonic() - t0, 4)}
                    samples.append(s)
                    if writer:
                        writer.writerow(s)
                    if not quiet:
                        live.update(_table(samples, dev.telemetry_stats, others))
        except KeyboardInterrupt:
            pass
        finally:
            if fh:
                fh.close()
            if start_level is not None:
                try:
                    dev.stop()
                except Exception:  # noqa: BLE001
                    pass
        st = dev.telemetry_stats
    click.echo("")
    click.echo(f"{st.received} samples, {st.lost} lost ({st.gaps} gaps)")
    if plot_file and samples:
        plot_samples(samples, plot_file)
        click.echo(f"plot: {plot_file}")
    if csv_file:
        click.echo(f"csv: {csv_file}")
