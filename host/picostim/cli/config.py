"""`picostim config get/set/diff/export/import`: device settings, checked against the board profile on the host
before sending (the device checks again)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import main
from ._common import check_operator, check_output_file, device_session, key_file_option, emit_json, json_option, say_if_ephemeral, friendly_errors, operator_default, port_option, profile_for
from .. import settings

EXPORT_FORMAT = 1


def read_export(path: Path) -> dict:
    """A file written by `config export`; malformed files are refused with the reason."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise click.ClickException(f"{path}: not a picostim config export: {e}") from e
    if not isinstance(doc, dict) or doc.get("picostim_export") != EXPORT_FORMAT:
        raise click.ClickException(f"{path}: not a picostim config export (missing picostim_export: {EXPORT_FORMAT})")
    if not isinstance(doc.get("config", {}), dict):
        raise click.ClickException(f"{path}: config must be an object")
    return doc


def write_atomic(path: Path, text: str) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@main.group()
def config():
    """Device settings (session length, default level/program)."""


@config.command("get")
@port_option
@click.option("--json", "as_json", is_flag=True)
@friendly_errors
def config_get(port, as_json):
    """Show the applied config."""
    with device_session(port) as (dev, _):
        cfg = dev.config_get()
    if as_json:
        click.echo(json.dumps(cfg, indent=1, sort_keys=True))
    else:
        for k, v in sorted(cfg.items()):
            click.echo(f"{k} = {json.dumps(v)}")


@config.command("set")
@port_option
@click.argument("assignments", nargs=-1, required=True)
@click.option("--no-host-check", is_flag=True, help="send without the host-side check (the device still checks)")
@key_file_option
@friendly_errors
def config_set(port, assignments, no_host_check, key_file):
    """Set KEY=VALUE ... (values are JSON: 600, null, \"ems\")."""
    partial = {}
    for a in assignments:
        if "=" not in a:
            raise click.ClickException(f"{a!r}: expected KEY=VALUE")
        k, v = a.split("=", 1)
        partial[k.strip()] = settings.parse_value(v.strip())
    with device_session(port, key_file=key_file) as (dev, tgt):
        if not no_host_check:
            hello = dev.hello()
            merged = {**dev.config_get(), **partial}
            settings.check_config(profile_for(hello), merged, len(hello.get("levels_ua", [])) or None)
        applied = dev.config_set(partial)
    for k, v in sorted(applied.items()):
        click.echo(f"{k} = {json.dumps(v)}")
    say_if_ephemeral(tgt, "the new settings")


def _snapshot(dev) -> dict:
    hello = dev.hello()
    return {"picostim_export": EXPORT_FORMAT, "board": hello.get("board"), "uid": hello.get("uid"),
            "fw": hello.get("fw"), "config": dev.config_get(), "levels_ua": dev.levels_get()}


@config.command("export")
@port_option
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), required=False)
@friendly_errors
def config_export(port, file):
    """Write config and level table to FILE (or stdout) as JSON."""
    check_output_file(file, "FILE")
    with device_session(port) as (dev, _):
        doc = _snapshot(dev)
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    if file is None:
        click.echo(text, nl=False)
    else:
        write_atomic(file, text)
        click.echo(f"wrote {file}")


@config.command("diff")
@port_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@click.option("--exit-code", is_flag=True, help="exit 1 when the device differs from FILE (as `git diff --exit-code`)")
@friendly_errors
def config_diff(port, file, as_json, exit_code):
    """Compare the device with an exported FILE (exit code 0 either way, unless --exit-code)."""
    want = read_export(file)
    with device_session(port) as (dev, _):
        have = _snapshot(dev)
    rows = []
    for k in sorted(set(want.get("config", {})) | set(have["config"])):
        a, b = have["config"].get(k), want.get("config", {}).get(k)
        if a != b:
            rows.append((f"config.{k}", json.dumps(a), json.dumps(b)))
    if "levels_ua" in want and want["levels_ua"] != have["levels_ua"]:
        rows.append(("levels_ua", json.dumps(have["levels_ua"]), json.dumps(want["levels_ua"])))
    if as_json:
        emit_json({"identical": not rows, "file": str(file),
                   "differences": [{"setting": k, "device": json.loads(a), "file": json.loads(b)} for k, a, b in rows]})
    elif not rows:
        click.echo("identical")
    else:
        t = Table(title=f"device vs {file}")
        for c in ("setting", "device", "file"):
            t.add_column(c)
        for r in rows:
            t.add_row(*(Text(x) for x in r))
        Console().print(t)
    if rows and exit_code:
        raise SystemExit(1)


@config.command("import")
@port_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--operator", default=operator_default, callback=check_operator,
              help="name in the audit log ($PICOSTIM_OPERATOR, else $USER)")
@key_file_option
@friendly_errors
def config_import(port, file, operator, key_file):
    """Apply an exported FILE (checked against the board profile first)."""
    doc = read_export(file)
    with device_session(port, key_file=key_file) as (dev, tgt):
        hello = dev.hello()
        profile = profile_for(hello)
        if doc.get("board") not in (None, hello.get("board")):
            raise click.ClickException(f"{file} is for board {doc.get('board')!r}, this is {hello.get('board')!r}")
        levels = doc.get("levels_ua")
        if levels is not None:
            settings.check_levels(profile, levels)
        settings.check_config(profile, doc.get("config", {}))
        if doc.get("config"):
            dev.config_set(doc["config"])
        if levels is not None and levels != dev.levels_get():
            dev.levels_set(levels, operator=operator)
        click.echo(f"imported {file}: config {dev.config_get()}, levels {dev.levels_get()}")
    say_if_ephemeral(tgt, "the imported settings")
