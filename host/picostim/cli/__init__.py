"""The `picostim` command line: a thin layer over the public API (picostim.device, picostim.deploy, picostim.sim ...).

Each command group lives in its own module here and registers itself on `main` when imported below.
"""
import importlib

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="picostim")
def main():
    """picostim: flash, configure, tune, monitor and test RP2040 microcurrent/EMS handhelds (or the virtual board)."""


# One module per command group; a missing module (work in progress) must not break the others.
for _name in ("sim", "flash", "info", "config", "levels", "run", "monitor", "hil", "demo", "selftest", "farm"):
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _e:
        if _e.name != f"{__name__}.{_name}":
            raise
