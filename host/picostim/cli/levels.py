"""`picostim levels show/set/tune/audit`: the per-device level table (µA per intensity level) and field tuning."""
from __future__ import annotations

import os
import select
import sys
import time

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import main
from ._common import check_operator, device_session, key_file_option, emit_json, json_option, say_if_ephemeral, friendly_errors, operator_default, port_option, profile_for
from .. import settings
from ..device import DeviceError
from ..shared import codes


@main.group()
def levels():
    """Intensity levels (µA per level), stored on the device with an audit log."""


@levels.command("show")
@port_option
@json_option
@friendly_errors
def levels_show(port, as_json):
    """The level table, the board cap and each treatment zone's limit (with what every level gives there)."""
    with device_session(port) as (dev, _):
        hello = dev.hello()
        table = dev.levels_get()
        zones, current = _zones_of(dev, hello)
    if as_json:
        emit_json({"board": hello.get("board"), "uid": hello.get("uid"), "cap_ua": hello.get("cap_ua"),
                   "levels_ua": table, "zone": current,
                   "zones": [{"name": z["name"], "limit_ua": z["limit_ua"], "programs": z["programs"],
                              "levels_ua": [min(ua, z["limit_ua"]) for ua in table]} for z in zones]})
        return
    t = Table(title=f"{hello.get('board')} {hello.get('uid')} (cap {hello.get('cap_ua')} µA)")
    t.add_column("level", justify="right")
    t.add_column("µA", justify="right")
    for z in zones:      # what each level applies in each zone: min(level, zone limit)
        t.add_column(z["name"] + (" *" if z["name"] == current else ""), justify="right")
    for i, ua in enumerate(table, 1):
        t.add_row(str(i), str(ua), *(str(min(ua, z["limit_ua"])) for z in zones))
    Console().print(t)
    zt = Table(title="treatment zones (* = chosen now)")
    for c in ("zone", "limit µA", "programs", "max rate Hz", "max phase µs", "session max s"):
        zt.add_column(c)
    for z in zones:
        zt.add_row(z["name"] + (" *" if z["name"] == current else ""), str(z["limit_ua"]), ", ".join(z["programs"]),
                   f"{z['max_rate_mhz'] / 1000:g}" if z.get("max_rate_mhz") else "-",
                   str(z["max_phase_us"]) if z.get("max_phase_us") else "-",
                   str(z["session_max_ms"] // 1000) if z.get("session_max_ms") else "-")
    Console().print(zt)


def _zones_of(dev, hello) -> tuple[list[dict], str | None]:
    """The zones as the device applies them (`zones` command); a device without zones: the board profile's."""
    try:
        r = dev.zones()
        return r["zones"], r.get("zone")
    except DeviceError as e:
        if e.code != codes.E_UNKNOWN_CMD:
            raise
    from .. import boards
    return boards.zone_table(profile_for(hello)), None


@levels.command("set")
@port_option
@click.argument("level", type=int, required=False)
@click.argument("ua", type=int, required=False)
@click.option("--table", "table_text", help="the whole table, comma separated (e.g. 80,160,240,320,400)")
@click.option("--operator", default=operator_default, callback=check_operator,
              help="name recorded in the device's audit log ($PICOSTIM_OPERATOR, else $USER)")
@click.option("--no-host-check", is_flag=True, help="send without the host-side check (the device still checks)")
@key_file_option
@friendly_errors
def levels_set(port, level, ua, table_text, operator, no_host_check, key_file):
    """Set LEVEL to UA microamps (or the whole --table); written atomically with an audit entry on the device."""
    if table_text is None and (level is None or ua is None):
        raise click.ClickException("give LEVEL UA, or --table a,b,c")
    with device_session(port, key_file=key_file) as (dev, tgt):
        hello = dev.hello()
        current = dev.levels_get()
        if table_text is not None:
            try:
                new = [int(x) for x in table_text.split(",")]
            except ValueError as e:
                raise click.ClickException(f"--table: {e}") from e
            if not no_host_check:
                settings.check_levels(profile_for(hello), new)
            applied = dev.levels_set(new, operator=operator)
        else:
            if not no_host_check:
                settings.with_level(profile_for(hello), current, level, ua)
            applied = dev.levels_set(level=level, ua=ua, operator=operator)
    click.echo(f"levels_ua {current} -> {applied}")
    say_if_ephemeral(tgt, "the new level table")


AUDIT_COLUMNS = ("seq", "utc", "operator", "level", "before_ua", "after_ua")   # utc: the host's time at the change


@levels.command("audit")
@port_option
@json_option
@friendly_errors
def levels_audit(port, as_json):
    """The device's audit log of level changes."""
    with device_session(port) as (dev, _):
        entries = dev.audit()
    if as_json:
        emit_json({"entries": entries})
        return
    t = Table(title="audit log")
    for c in AUDIT_COLUMNS:
        t.add_column(c, no_wrap=True)
    for e in entries:
        # operator names are data: "[bold]" or "tech [night shift]" must show as typed, not as rich markup
        t.add_row(*(Text("" if e.get(c) is None else str(e.get(c))) for c in AUDIT_COLUMNS))
    Console(width=max(120, Console().width)).print(t)


# -- tune ------------------------------------------------------------------------------------------------------
class StatusLine:
    """One status line redrawn in place on a terminal (carriage return + erase line), at most every `every_s`;
    to a pipe or file a line is written only when its text changes."""

    def __init__(self, stream=None, every_s: float = 0.2):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.every_s = every_s
        self.last_text = None
        self.last_t = 0.0

    def show(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if text == self.last_text or (not force and now - self.last_t < self.every_s):
            return
        self.stream.write(("\r\x1b[2K" + text) if self.tty else text + "\n")
        self.stream.flush()
        self.last_text, self.last_t = text, now

    def end(self) -> None:
        if self.tty and self.last_text is not None:
            self.stream.write("\n")
            self.stream.flush()
        self.last_text = None


KEYS_UP = (b"\x1b[A", b"+", b"k", b"u")
KEYS_DOWN = (b"\x1b[B", b"-", b"j", b"d")


class _Keys:
    """Key presses from stdin without waiting for Enter (cbreak on a terminal; plain reads from a pipe)."""

    def __init__(self):
        self.fd = sys.stdin.fileno()
        self.old = None
        if os.isatty(self.fd):
            import termios
            import tty
            self.old = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        self.buf = b""

    def restore(self):
        if self.old is not None:
            import termios
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.old)

    def get(self, timeout: float) -> list[bytes]:
        r, _, _ = select.select([self.fd], [], [], timeout)
        if r:
            data = os.read(self.fd, 64)
            if not data:
                return [b"q"]   # stdin closed: leave
            self.buf += data
        keys = []
        while self.buf:
            if self.buf.startswith(b"\x1b["):
                if len(self.buf) < 3:
                    break
                keys.append(self.buf[:3])
                self.buf = self.buf[3:]
            else:
                keys.append(self.buf[:1])
                self.buf = self.buf[1:]
        return keys


@levels.command("tune")
@port_option
@click.option("--level", "-l", "level", type=int, required=True, help="level to tune (1-based)")
@click.option("--step", type=click.IntRange(1, 100), default=5, show_default=True, help="µA per key press")
@click.option("--operator", default=operator_default, callback=check_operator,
              help="name recorded in the audit log on save ($PICOSTIM_OPERATOR, else $USER)")
@click.option("--duration", type=float, default=600, show_default=True, help="session length while tuning (s)")
@click.option("--rate-hz", "--rate", "telemetry_hz", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="telemetry rate (Hz)")
@click.option("--program", default=None,
              help="program to stimulate with while tuning (default: the device's default program)")
@click.option("--zone", help="treatment zone to tune in: its limit holds whatever the level's µA")
@key_file_option
@friendly_errors
def levels_tune(port, level, step, operator, duration, telemetry_hz, program, zone, key_file):
    """Interactive: stimulate at LEVEL, Up/Down (or +/-) change its µA live (device-ramped) with the measured
    current shown; `s` saves (atomic, audit entry), `q` quits (unsaved changes are discarded)."""
    with device_session(port, key_file=key_file) as (dev, tgt):
        hello = dev.hello()
        profile = profile_for(hello)
        cap = settings.cap_ua(profile)
        table = dev.levels_get()
        if not 1 <= level <= len(table):
            raise click.ClickException(f"level must be 1..{len(table)}")
        saved = table[level - 1]
        table_before = list(table)
        trial = saved
        live_mode = "trial"      # set_level with ua (not persisted); falls back to levels_set if unsupported
        applied = dev.start(level=level, duration_s=duration, program=program, zone=zone)  # (raised if it starts low)
        zone_note = ""
        if applied.get("zone") is not None:
            zone_note = f", zone {applied['zone']} (limit {applied.get('zone_limit_ua')} µA)"
        dev.telemetry_enable(True, telemetry_hz)
        keys = _Keys()
        measured, state, note, burst = None, "?", "", None
        click.echo(f"tuning level {level} on {hello.get('board')} {hello.get('uid')} (cap {cap} µA, step {step} µA), "
                   f"program {applied.get('program') or 'custom waveform'}{zone_note}"
                   f"\nUp/Down or +/- change µA, s = save, q = quit")
        status_line = StatusLine()

        def draw(force=False):
            if measured is None:
                m = "— µA (no fresh sample" + (": burst off)" if burst == "off" else ")")
            else:
                m = f"{measured:.0f} µA"
            status_line.show(f"level {level}: set {trial} µA (saved {saved} µA) measured {m} state {state}"
                             f"{'  ' + note if note else ''}", force)

        def apply(new_ua):
            nonlocal live_mode, trial, note
            if live_mode == "trial":
                try:
                    dev.set_level(level, ua=new_ua)
                    trial = new_ua
                    return
                except DeviceError as e:
                    if e.code not in (codes.E_BAD_REQUEST, codes.E_BAD_TYPE):
                        raise
                    live_mode = "table"
                    note = "(device has no trial amplitude: each step is written to the table)"
            dev.levels_set(level=level, ua=new_ua, operator=operator + " (tune)")
            trial = new_ua

        try:
            draw(True)
            while True:
                for k in keys.get(0.05):
                    if k in KEYS_UP or k in KEYS_DOWN:
                        new = trial + (step if k in KEYS_UP else -step)
                        try:
                            if new > cap:
                                raise settings.SettingsError(codes.E_OVER_CAP, f"{new} µA is above the cap {cap} µA")
                            if new < 1:
                                raise settings.SettingsError(codes.E_OUT_OF_RANGE, "a level needs at least 1 µA")
                            apply(new)
                            note = ""
                        except settings.SettingsError as e:
                            note = f"refused: {e}"
                        except DeviceError as e:
                            note = f"device refused: {e.code} ({e.detail})"
                        draw(True)
                    elif k in (b"s", b"S"):
                        try:
                            settings.with_level(profile, table, level, trial)
                            table = dev.levels_set(level=level, ua=trial, operator=operator)
                            note = f"saved: level {level} {saved} -> {table[level - 1]} µA (audit entry written)"
                            saved = table[level - 1]
                        except settings.SettingsError as e:
                            note = f"not saved: {e}"
                        except DeviceError as e:
                            note = f"not saved, device refused: {e.code} ({e.detail})"
                        draw(True)
                    elif k in (b"q", b"Q", b"\x03", b"\x04"):
                        return
                for ev in dev.poll_events(0.05):
                    if ev.get("ev") == codes.EV_TELEMETRY:
                        batch = dev.telemetry_samples(ev)       # (a batch of samples; show the newest)
                        if batch:
                            measured = batch[-1].get("i_ua")     # None: no fresh measurement (never a stale one)
                        state = ev.get("state", state)
                        burst = ev.get("burst")
                    elif ev.get("ev") in (codes.EV_TRIP, codes.EV_PAUSE, codes.EV_SESSION_END):
                        note = f"event {ev.get('ev')}: {ev.get('reason')}"
                        draw(True)
                draw()
        finally:
            status_line.end()
            keys.restore()
            try:
                dev.telemetry_enable(False)
                dev.stop()
            except Exception:  # noqa: BLE001 - best effort on the way out; the device idles on its own too
                pass
            click.echo(f"done: level {level} = {saved} µA" + ("" if trial == saved else f" (trial {trial} µA discarded)"))
            if saved != table_before[level - 1]:
                say_if_ephemeral(tgt, "the saved level")
