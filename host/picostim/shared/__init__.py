"""Access to modules shared with the firmware (loaded by path from firmware/lib so there is one source)."""
import importlib.util

from .. import paths


def _load(name):
    spec = importlib.util.spec_from_file_location(f"picostim.shared.{name}", paths.FIRMWARE_DIR / "lib" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


codes = _load("pscodes")
zones = _load("zones")     # imports nothing: the device and the host validate zones with the same code
