"""Bench lists and the labgrid exporter configuration that serves them.

A bench list is the rigs-file format the HIL plugin already reads (a JSON list), with local serial device paths:

    [{"name": "bench1", "dut": "/dev/serial/by-id/usb-MicroPython_Board_in_FS_mode_e6614c...-if00",
      "rig": "/dev/serial/by-id/usb-MicroPython_Board_in_FS_mode_e6605f...-if00", "board": "handheld-home"}]

Each bench becomes one resource group (named after the bench) holding two RawSerialPort resources, `dut` and
`rig`; the exporter publishes them as NetworkSerialPort (ser2net, RFC 2217) while a place holding them is acquired.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..hil.bench import DEFAULT_BOARD

SPEED = 115200
PORT_NAMES = ("dut", "rig")
# labgrid place names / tag values: keep to what its CLI accepts and a shell needs no quoting for
_TEMPLATE_CHARS = ",{}%#"     # ser2net's connector syntax (,) and labgrid's jinja2 rendering of the config
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class BenchListError(ValueError):
    pass


def check_bench(entry, where: str = "bench") -> dict:
    """One bench entry, validated: {"name", "dut", "rig", "board"} with /dev/ paths (ser2net serves only devices)."""
    if not isinstance(entry, dict):
        raise BenchListError(f"{where}: a bench is an object with name, dut, rig (and board)")
    unknown = set(entry) - {"name", "dut", "rig", "board", "location"}
    if unknown:
        raise BenchListError(f"{where}: unknown keys {sorted(unknown)}")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise BenchListError(f"{where}: name must be 1-64 letters, digits, '.', '_' or '-' (got {name!r})")
    out = {"name": name}
    for key in PORT_NAMES:
        path = entry.get(key)
        if not isinstance(path, str) or not path.startswith("/dev/") or path.endswith("/") or any(c.isspace() or c in _TEMPLATE_CHARS
                                                                             for c in path):
            raise BenchListError(f"{where} {name}: {key} must be a serial device path under /dev/ without spaces or "
                                 f"commas or any of {_TEMPLATE_CHARS} (got {path!r}); e.g. /dev/serial/by-id/usb-...-if00")
        out[key] = path
    board = entry.get("board", DEFAULT_BOARD)
    if not isinstance(board, str) or not _NAME.match(board):
        raise BenchListError(f"{where} {name}: board must be a board profile name (got {board!r})")
    from .. import boards
    try:
        boards.path_of(board)
    except Exception as e:
        raise BenchListError(f"{where} {name}: {e}") from e
    out["board"] = board
    if "location" in entry:
        loc = entry["location"]
        if not isinstance(loc, str) or len(loc) > 200 or any(c in _TEMPLATE_CHARS or not c.isprintable() for c in loc):
            raise BenchListError(f"{where} {name}: location must be a line of text without {_TEMPLATE_CHARS}")
        out["location"] = entry["location"]
    return out


def check_benches(entries) -> list[dict]:
    if not isinstance(entries, list) or not entries:
        raise BenchListError("a bench list is a non-empty JSON list of benches")
    benches = [check_bench(e, f"bench #{i + 1}") for i, e in enumerate(entries)]
    names = [b["name"] for b in benches]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise BenchListError(f"bench names must be unique: {', '.join(dup)}")
    paths = [b[k] for b in benches for k in PORT_NAMES]
    dup = sorted({p for p in paths if paths.count(p) > 1})
    if dup:
        raise BenchListError(f"a serial port belongs to one bench only: {', '.join(dup)}")
    return benches


def load_benches(path) -> list[dict]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise BenchListError(f"{path}: cannot read bench list: {e}") from e
    try:
        return check_benches(data)
    except BenchListError as e:
        raise BenchListError(f"{path}: {e}") from e


def parse_bench_option(text: str) -> dict:
    """`NAME,DUT,RIG[,BOARD]` from the command line."""
    parts = text.split(",")
    if len(parts) not in (3, 4):
        raise BenchListError(f"--bench {text!r}: expected NAME,DUT_PORT,RIG_PORT[,BOARD]")
    entry = {"name": parts[0], "dut": parts[1], "rig": parts[2]}
    if len(parts) == 4:
        entry["board"] = parts[3]
    return entry


def _yaml_str(s: str) -> str:
    return json.dumps(s)    # a JSON string is a valid YAML flow scalar


def exporter_config(benches: list[dict]) -> str:
    """The labgrid exporter YAML for these benches (one group per bench: dut + rig as RawSerialPort)."""
    benches = check_benches(benches)
    # labgrid renders the file with jinja2 first: "##" starts a comment there, a lone "#" a template statement
    lines = ["## labgrid exporter configuration written by `picostim farm exporter-config`",
             "## run: labgrid-exporter -c COORDINATOR[:PORT] -n EXPORTER_NAME THIS_FILE", ""]
    for b in benches:
        lines.append(f"{_yaml_str(b['name'])}:")     # quoted: a bench named 0, 1e3 or on stays a string
        lines.append(f"  location: {_yaml_str(b.get('location') or 'picostim bench, board ' + b['board'])}")
        for key in PORT_NAMES:
            lines += [f"  {key}:", "    cls: RawSerialPort", f"    port: {_yaml_str(b[key])}", f"    speed: {SPEED}"]
    return "\n".join(lines) + "\n"


def place_matches(exporter: str, bench: str) -> list[str]:
    """The labgrid match patterns (exporter/group/cls/name) that make a place of one exported bench."""
    return [f"{exporter}/{bench}/NetworkSerialPort/{key}" for key in PORT_NAMES]
