"""`picostim run` / `picostim stop`: a session by program or level, for a duration."""
from __future__ import annotations

import json

import click

from . import main
from ._common import (device_session, friendly_errors, json_option, output_idle_on_exit, port_option,
                      supervisor_stall, warn_loudly)


@main.command()
@port_option
@click.option("--level", "-l", type=int, required=True, help="intensity level (1-based)")
@click.option("--program", help="named program (boards/programs.json; the board must allow it)")
@click.option("--phase-us", type=int, help="phase width (µs) for a manual waveform")
@click.option("--gap-us", type=int, help="interphase gap (µs)")
@click.option("--rate-hz", "--rate", "rate_hz", type=float, help="repetition rate (Hz)")
@click.option("--duration", "duration_s", type=float, help="session length (s); default: the board's")
@click.option("--zone", help="treatment zone (board profile; `picostim levels show` lists them): its limit holds")
@click.option("--wait", is_flag=True, help="stay attached, print events until the session ends")
@json_option
@friendly_errors
def run(port, level, program, phase_us, gap_us, rate_hz, duration_s, zone, wait, as_json):
    """Start stimulation (ramped up by the device) and print what the device applied."""
    with device_session(port) as (dev, _):
        # Without --wait a started session is the result; an error or Ctrl-C before that, or while waiting,
        # stops it (the output is never left on by a command that did not finish).
        with output_idle_on_exit(dev, always=False):
            applied = dev.start(level=level, program=program, duration_s=duration_s, phase_us=phase_us,
                                gap_us=gap_us, rate_hz=rate_hz, zone=zone)
            shown = {k: v for k, v in applied.items() if k not in ("id", "ok")}
            if as_json:     # JSON lines: {"started": ...}, then (with --wait) one event per line, then {"state": ...}
                click.echo(json.dumps({"started": shown}))
            else:
                click.echo("started: " + json.dumps(shown))
                click.echo(f"level {applied.get('level')} ({applied.get('target_ua')} µA), "
                           + (f"program {applied['program']}" if applied.get("program") else "custom waveform")
                           + f", {applied.get('session_s')} s")
                if applied.get("start_bound"):
                    click.echo(f"note: the device started low ({applied['start_bound']}); raised to level "
                               f"{applied.get('level')} by set_level, ramped by the device")
                if applied.get("bound") == "zone":
                    click.echo(f"note: held to the {applied.get('zone')} zone limit of {applied.get('zone_limit_ua')} µA")
            if wait:
                # Follow the device's own clock (a virtual board may run slower than real time): until the session
                # ends (ramped down, S9) or the device leaves the stimulating states.
                prev, warned = dev.status(), False
                while True:
                    for ev in dev.events(timeout=1.0):
                        click.echo(json.dumps(ev))
                    st = dev.status()
                    if st.get("state") not in ("ramping", "running", "paused"):
                        break
                    stall = supervisor_stall(prev, st)
                    if stall and not warned:
                        warn_loudly(stall)
                        warned = True
                    prev = st
                final = dev.status().get("state")
                click.echo(json.dumps({"state": final}) if as_json else f"state: {final}")


@main.command()
@port_option
@friendly_errors
def stop(port):
    """Stop stimulation (output idle)."""
    with device_session(port) as (dev, _):
        r = dev.stop()
    click.echo(f"state: {r.get('state')}")
