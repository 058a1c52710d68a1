"""`picostim build`: one versioned firmware bundle file for a board (compiled .mpy, profile, programs, manifest)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from . import main
from ._common import friendly_errors


@main.command("build")
@click.option("--board", "-b", required=True, help="board profile from boards/ (e.g. handheld-home)")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="bundle file or directory (default: picostim-<board>-<fw>-<hash>.psbundle here)")
@click.option("--firmware-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="application source tree (default: the packaged firmware/)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@friendly_errors
def build_cmd(board, output, firmware_dir, as_json):
    """Build a firmware bundle: flash it with `picostim flash --bundle FILE`."""
    from .. import bundle

    b = bundle.build(board, firmware_dir)
    try:
        path = bundle.write(b, output)
    except OSError as e:
        raise click.ClickException(f"cannot write the bundle: {e}") from e
    info = {"path": str(path), "board": b.board, "fw": b.fw, "bundle": b.hash, "files": len(b.image) + 1,
            "bytes": path.stat().st_size}
    if as_json:
        click.echo(json.dumps(info, indent=1))
    else:
        click.echo(f"{path}: {b.board} firmware {b.fw}, bundle {b.hash}, {info['files']} files, "
                   f"{info['bytes']} bytes")
