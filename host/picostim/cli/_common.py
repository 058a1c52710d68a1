"""Shared bits of the CLI modules: the --port option (path, URL, `sim`, `sim:<board>`), opening a Device for a
command, and turning API errors into one clear line for the operator."""
from __future__ import annotations

import contextlib
import functools
import logging
import os
from typing import Iterator

import click

from ..device import Device, DeviceError
from ..settings import SettingsError
from ..target import Target, open_target
from ..transport import TransportError

log = logging.getLogger("picostim.cli")

PORT_HELP = "serial port or URL; `sim` / `sim:<board>` starts a virtual board for this command ($PICOSTIM_PORT)"


def check_board(name: str, what: str = "--board", dut: bool = True) -> dict:
    """A board profile by name, refused before any work when unknown, malformed or (for a DUT) the rig's."""
    from .. import boards
    try:
        prof = boards.load(name)
    except (boards.BoardError, OSError, ValueError) as e:
        raise click.BadParameter(one_line(e), param_hint=what) from None
    if dut and prof.get("kind") == "rig":
        duts = [n for n in boards.names() if boards.load(n).get("kind") != "rig"]
        raise click.BadParameter(f"{name!r} is the HIL rig's profile, not a stimulator board; use one of "
                                 f"{', '.join(duts)}", param_hint=what)
    return prof


def check_load(spec: str, what: str = "--load") -> str:
    """An electrode load spec (500, 2k, 10k, skin, open, short, or ohms), refused before any work when invalid."""
    from ..sim.chip.load import LoadError, parse_load
    try:
        parse_load(spec)
    except (LoadError, ValueError, TypeError) as e:
        raise click.BadParameter(f"{spec!r}: {one_line(e)}", param_hint=what) from None
    return spec


def check_port(spec: str | None, what: str = "--port") -> str | None:
    """`sim` / `sim:<board>` (board checked), a URL, or a serial device that exists: refused before any work."""
    from ..target import is_sim, sim_board
    if spec is None:
        return None
    if not isinstance(spec, str) or not spec.strip():
        raise click.BadParameter("empty port", param_hint=what)
    if is_sim(spec):
        check_board(sim_board(spec), what)
    elif "://" not in spec and not os.path.exists(spec):
        raise click.BadParameter(f"{spec}: no such serial port (`picostim info --list` shows what is attached; "
                                 f"`sim` starts a virtual board)", param_hint=what)
    return spec


def _port_param(ctx, param, value):
    return check_port(value, "--port")


def port_option(f):
    return click.option("--port", "-p", default=lambda: os.environ.get("PICOSTIM_PORT"), help=PORT_HELP,
                        callback=_port_param)(f)


EXIT_ERROR = 1          # the command ran and something failed (device refused, check failed, I/O error)
EXIT_USAGE = 2          # bad arguments (click's own code for usage errors)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)


def _api_errors() -> tuple:
    from ..boards import BoardError
    from ..deploy import DeployError
    from ..uf2 import Uf2Error
    return (DeviceError, SettingsError, TransportError, DeployError, Uf2Error, BoardError)


def one_line(e: BaseException) -> str:
    """An exception as one line for the operator (pyserial and OSError messages can span lines)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def json_option(f):
    return click.option("--json", "as_json", is_flag=True,
                        help="machine-readable output on stdout (JSON; JSON lines for streams)")(f)


def emit_json(obj, indent: int | None = 1) -> None:
    import json
    click.echo(json.dumps(obj, indent=indent, default=str))


def operator_default() -> str:
    return os.environ.get("PICOSTIM_OPERATOR") or os.environ.get("USER") or "unknown"


def check_operator(ctx, param, value):
    """The audit log needs a name: an empty or blank operator is a usage error (the device refuses it too)."""
    if value is not None and not str(value).strip():
        raise click.BadParameter("the operator name must not be empty")
    return value


def friendly_errors(f):
    """Every way out of a command is one line and an exit code: API errors and I/O errors exit 1 with their
    message, Ctrl-C exits 130, anything unexpected exits 1 with its type and message (the traceback only with
    PICOSTIM_DEBUG=1 or -v). Never a traceback for the operator."""
    @functools.wraps(f)
    def wrapper(*a, **kw):
        try:
            return f(*a, **kw)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            raise SystemExit(EXIT_INTERRUPTED) from None
        except SettingsError as e:
            raise click.ClickException(f"refused by host check ({e.code}): {e}") from e
        except Exception as e:  # noqa: BLE001 - the one place that turns failures into one line
            log.debug("command failed", exc_info=True)
            if os.environ.get("PICOSTIM_DEBUG"):
                raise
            if isinstance(e, _api_errors()) or isinstance(e, OSError):
                raise click.ClickException(one_line(e)) from e
            raise click.ClickException(f"{type(e).__name__}: {one_line(e)}") from e
    return wrapper


def stop_quietly(dev) -> None:
    """Stop stimulation on the way out (a second Ctrl-C must not cut the stop short)."""
    import signal
    import threading
    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        dev.stop()
    except Exception:  # noqa: BLE001 - best effort: the device also idles on its own (session timer, watchdog)
        log.debug("stop on exit failed", exc_info=True)
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def output_idle_on_exit(dev, always: bool = True) -> Iterator[None]:
    """Leave the output idle when the block ends: on error and Ctrl-C always, on a normal end when `always`."""
    try:
        yield
    except BaseException:
        stop_quietly(dev)
        raise
    if always:
        stop_quietly(dev)


def check_output_file(path, what: str = "output file") -> None:
    """Refuse an output path that cannot be written, before any work is done (exit 2, one line)."""
    if path is None:
        return
    from pathlib import Path
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise click.BadParameter(f"{p} is a directory", param_hint=what)
    if not parent.is_dir():
        raise click.BadParameter(f"{p}: directory {parent} does not exist", param_hint=what)
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise click.BadParameter(f"{p}: not writable", param_hint=what)


def check_output_dir(path, what: str = "output directory") -> None:
    """Refuse a directory that cannot be created or written, before any work is done."""
    from pathlib import Path
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise click.BadParameter(f"{p} exists and is not a directory", param_hint=what)
    q = p
    while not q.exists():
        q = q.parent if str(q.parent) != str(q) else q
        if q == q.parent:
            break
    if q.exists() and not q.is_dir():
        raise click.BadParameter(f"{p}: {q} is not a directory", param_hint=what)
    if q.exists() and not os.access(q, os.W_OK):
        raise click.BadParameter(f"{p}: {q} is not writable", param_hint=what)


KEY_FILE_HELP = ("the maker's line secret (from `picostim keygen`): signs privileged requests to a locked unit "
                 "($PICOSTIM_KEY_FILE)")


def key_file_option(f):
    return click.option("--key-file", type=click.Path(dir_okay=False), default=None, help=KEY_FILE_HELP)(f)


def signer_for(key_file: str | None, required: bool = False):
    """picostim.auth.Signer from --key-file or $PICOSTIM_KEY_FILE (None when neither is given, unless required)."""
    from ..auth import KeyFileError, Signer, key_file_from_env
    path = key_file_from_env(key_file)
    if path is None:
        if required:
            raise click.UsageError("this needs the maker's line secret: --key-file FILE or $PICOSTIM_KEY_FILE")
        return None
    try:
        return Signer.from_file(path)
    except KeyFileError as e:
        raise click.BadParameter(str(e), param_hint="--key-file") from None


@contextlib.contextmanager
def device_session(port: str | None, board: str | None = None, timeout: float = 3.0,
                   key_file: str | None = None) -> Iterator[tuple[Device, Target]]:
    """Open the target (starting + flashing a virtual board for `sim`), make sure the application answers. With a
    key file (or $PICOSTIM_KEY_FILE) the Device signs privileged requests to a locked unit."""
    signer = signer_for(key_file)
    with open_target(port, board=board) as tgt:
        log.info("opening %s (%s)", tgt.port, tgt.spec)
        dev = Device(tgt.port, timeout=timeout, signer=signer)
        try:
            dev.ensure_app()
            yield dev, tgt
        finally:
            dev.close()


def supervisor_stall(before: dict, after: dict) -> str | None:
    """Between two `status` replies the supervisor's judged samples stayed flat while its late (scans held off) or
    missed (samples lost unjudged) counters rose: nothing the device reports as measured current is real. Returns
    the operator's explanation, or None when sampling is healthy (or nothing was driven)."""
    def d(k):
        a, b = before.get(k), after.get(k)
        return (b - a) if isinstance(a, int) and isinstance(b, int) else 0
    if d("samples") > 0 or (d("late") <= 0 and d("missed") <= 0):
        return None
    return (f"the safety supervisor took no current sample ({d('late')} late, {d('missed')} lost unjudged, "
            f"0 valid): the output current is NOT being measured. On the virtual board the virtual clock is "
            f"too slow for its sampling (use --clock model / PICOSTIM_SIM_CLOCK=model, or a less loaded host); "
            f"on hardware something holds interrupts off (flash writes, a long IRQ handler)")


def warn_loudly(text: str) -> None:
    click.secho(f"WARNING: {text}", fg="red", bold=True, err=True)


def say_if_ephemeral(tgt: Target, what: str = "this change") -> None:
    """A `-p sim` board lives only for its command: say that the change just made went with it."""
    if tgt is not None and tgt.vb is not None:
        click.echo(f"note: {tgt.spec} was a virtual board started for this command; it is gone now, and {what} "
                   f"with it. Keep one running with `picostim sim -b {tgt.board}` and pass its port.", err=True)


def profile_for(info: dict) -> dict:
    """The board profile named by the device's hello (for host-side checks)."""
    from .. import boards
    return boards.load(info["board"])
