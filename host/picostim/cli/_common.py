"""Shared bits of the CLI modules: the --port option (path, URL, `sim`, `sim:<board>`), opening a Device for a
command, and turning API errors into one clear line for the operator."""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Iterator

import click

from ..device import Device, DeviceError
from ..settings import SettingsError
from ..target import Target, open_target
from ..transport import TransportError

PORT_HELP = "serial port or URL; `sim` / `sim:<board>` starts a virtual board for this command ($PICOSTIM_PORT)"


def port_option(f):
    return click.option("--port", "-p", default=lambda: os.environ.get("PICOSTIM_PORT"), help=PORT_HELP)(f)


def friendly_errors(f):
    """Report API errors as a ClickException (exit 1, one line) instead of a traceback."""
    @functools.wraps(f)
    def wrapper(*a, **kw):
        try:
            return f(*a, **kw)
        except DeviceError as e:
            raise click.ClickException(str(e)) from e
        except SettingsError as e:
            raise click.ClickException(f"refused by host check ({e.code}): {e}") from e
        except TransportError as e:
            raise click.ClickException(str(e)) from e
        except Exception as e:
            from ..deploy import DeployError
            from ..uf2 import Uf2Error
            from ..boards import BoardError
            if isinstance(e, (DeployError, Uf2Error, BoardError)):
                raise click.ClickException(str(e)) from e
            raise
    return wrapper


@contextlib.contextmanager
def device_session(port: str | None, board: str | None = None, timeout: float = 3.0) -> Iterator[tuple[Device, Target]]:
    """Open the target (starting + flashing a virtual board for `sim`), make sure the application answers."""
    with open_target(port, board=board) as tgt:
        dev = Device(tgt.port, timeout=timeout)
        try:
            dev.ensure_app()
            yield dev, tgt
        finally:
            dev.close()


def profile_for(info: dict) -> dict:
    """The board profile named by the device's hello (for host-side checks)."""
    from .. import boards
    return boards.load(info["board"])
