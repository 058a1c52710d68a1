"""`picostim monitor`: live telemetry as a rich table, optional CSV and PNG plot."""
from __future__ import annotations

import contextlib
import csv
import json
import time
from pathlib import Path

import click
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from . import main
from ._common import (EXIT_INTERRUPTED, check_output_file, device_session, friendly_errors,
                      json_option, output_idle_on_exit, port_option, supervisor_stall, warn_loudly)

CSV_FIELDS = ("host_s", "seq", "t_ms", "state", "program", "burst", "setpoint_ua", "i_ua", "v_mv", "fresh", "age_ms",
              "gap", "zone", "zone_limit_ua")
TABLE_FIELDS = ("seq", "t_ms", "state", "program", "burst", "setpoint_ua", "i_ua", "v_mv")


def fresh_points(samples: list[dict]) -> tuple[list, list]:
    """(device time s, measured µA) of the samples that carry a fresh measurement: a stale value is not plotted."""
    pts = [(s.get("t_ms", 0) / 1000, s["i_ua"]) for s in samples if s.get("i_ua") is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _cell(s: dict, c: str) -> str:
    v = s.get(c)
    if c == "i_ua" and v is None:
        return "— (no fresh sample)"
    return "" if v is None else str(v)


def plot_samples(samples: list[dict], path: Path, title: str = "picostim telemetry") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.get("t_ms", 0) / 1000 for s in samples]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(t, [s.get("setpoint_ua") for s in samples], label="setpoint (µA)", drawstyle="steps-post")
    ft, fi = fresh_points(samples)
    ax.plot(ft, fi, label="measured |I| (µA), fresh samples only", marker=".", linestyle="none")
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
    for c in TABLE_FIELDS:
        t.add_column(c, justify="right")
    for s in samples[-12:]:
        t.add_row(*(escape(_cell(s, c)) for c in TABLE_FIELDS))
    if others:
        t.caption = escape("last event: " + str(others[-1]))
    return t


@main.command()
@port_option
@click.option("--rate-hz", "--rate", "rate_hz", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="telemetry rate (Hz)")
@click.option("--duration", "duration_s", type=float, default=None, help="stop after this many seconds")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False, path_type=Path), help="write samples to CSV")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False, path_type=Path), help="write a PNG plot")
@click.option("--start-level", type=int, default=None, help="start a session at this level first")
@click.option("--program", default=None,
              help="program for --start-level (default: the device's default program, from the board profile)")
@click.option("--zone", help="treatment zone: the session starts in it (--start-level), else the zone is chosen now")
@click.option("--quiet", is_flag=True, help="no live table")
@json_option
@friendly_errors
def monitor(port, rate_hz, duration_s, csv_file, plot_file, start_level, program, zone, quiet, as_json):
    """Live telemetry (measured current, electrode voltage, state); seq gaps are counted and reported."""
    if program is not None and start_level is None:
        raise click.UsageError("--program needs --start-level (monitor starts nothing without it)")
    check_output_file(csv_file, "--csv")
    check_output_file(plot_file, "--plot")
    samples, others = [], []
    interrupted = False

    def say(text):      # with --json, people's lines go to stderr: stdout stays JSON
        click.echo(text, err=as_json)

    t0 = time.monotonic()
    with device_session(port) as (dev, _):
        # What monitor started it stops, however it ends (normal end, error, Ctrl-C).
        with contextlib.ExitStack() as stack:
            if start_level is not None:
                stack.enter_context(output_idle_on_exit(dev))
                applied = dev.start(level=start_level, program=program, zone=zone)
                say(f"started level {applied.get('level')} ({applied.get('target_ua')} µA), program "
                           f"{applied.get('program') or 'custom waveform'}, zone {applied.get('zone')}")
            elif zone is not None:
                dev.set_zone(zone)
            writer = fh = None
            if csv_file:
                fh = stack.enter_context(open(csv_file, "w", newline=""))
                writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
                writer.writeheader()
            before = dev.status()
            try:
                with contextlib.ExitStack() as live_stack:
                    live = None
                    if not as_json:
                        live = live_stack.enter_context(Live(_table(samples, dev.telemetry_stats, others),
                                                             refresh_per_second=5, auto_refresh=not quiet,
                                                             transient=quiet))
                    for s in dev.telemetry(rate_hz=rate_hz, duration_s=duration_s, other_events=others):
                        s = {**s, "host_s": round(time.monotonic() - t0, 4)}
                        samples.append(s)
                        if writer:
                            writer.writerow(s)
                        if as_json:     # JSON lines: one sample per line, the summary last
                            click.echo(json.dumps({k: v for k, v in s.items() if k != "ev"}))
                        elif not quiet:
                            live.update(_table(samples, dev.telemetry_stats, others))
            except KeyboardInterrupt:
                interrupted = True      # keep what was captured: write it out below, then exit 130
            if not interrupted:
                stall = supervisor_stall(before, dev.status())
                if stall:
                    warn_loudly(stall)
        st = dev.telemetry_stats
    if as_json:
        click.echo(json.dumps({"summary": {"received": st.received, "lost": st.lost, "gaps": st.gaps,
                                           "events": others, "csv": csv_file and str(csv_file),
                                           "plot": plot_file and samples and str(plot_file) or None,
                                           "interrupted": interrupted}}, default=str))
    else:
        click.echo("")
        click.echo(f"{st.received} samples, {st.lost} lost ({st.gaps} gaps)")
    if plot_file and samples:
        progs = sorted({s["program"] for s in samples if s.get("program")})
        plot_samples(samples, plot_file, title="picostim telemetry" + (f" (program {', '.join(progs)})" if progs else ""))
        say(f"plot: {plot_file}")
    if csv_file:
        say(f"csv: {csv_file}")
    if interrupted:
        raise SystemExit(EXIT_INTERRUPTED)
