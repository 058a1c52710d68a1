"""The `picostim` command line: a thin layer over the public API (picostim.device, picostim.deploy, picostim.sim ...).

Each command group lives in its own module here and registers itself on `main` when imported below.
"""
import importlib

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="picostim")
@click.option("-v", "--verbose", count=True, help="more output on stderr: -v steps, -vv the serial trace too")
@click.option("--log", "log_file", type=click.Path(dir_okay=False, writable=True), default=None,
              help="write a debug log with the full serial trace to FILE")
def main(verbose, log_file):
    """picostim: flash, configure, tune, monitor and test RP2040 microcurrent/EMS handhelds (or the virtual board).

    Exit status: 0 ok, 1 failed (device refused, check failed, I/O error), 2 usage error, 130 interrupted."""
    _setup_logging(verbose, log_file)


def _setup_logging(verbose: int, log_file: str | None) -> None:
    import logging
    root = logging.getLogger("picostim")
    for h in list(root.handlers):
        if getattr(h, "_picostim_cli", False):
            root.removeHandler(h)
            h.close()
    fmt = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
    level = logging.WARNING
    if verbose:
        h = logging.StreamHandler()
        h.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
        h.setFormatter(fmt)
        h._picostim_cli = True
        root.addHandler(h)
        level = h.level
    if log_file:
        try:
            h = logging.FileHandler(log_file, mode="w")
        except OSError as e:
            raise click.BadParameter(f"{log_file}: {e.strerror or e}", param_hint="--log") from None
        h.setLevel(logging.DEBUG)
        h.setFormatter(fmt)
        h._picostim_cli = True
        root.addHandler(h)
        level = logging.DEBUG
    root.setLevel(level)


# One module per command group; a missing module (work in progress) must not break the others.
for _name in ("sim", "flash", "info", "config", "levels", "run", "monitor", "hil", "demo", "selftest", "build", "station", "units", "farm", "lock", "calibrate"):
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _e:
        if _e.name != f"{__name__}.{_name}":
            raise
