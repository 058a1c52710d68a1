"""Load firmware/lib modules into CPython by path (they are plain MicroPython-compatible Python)."""
import importlib
import sys
from pathlib import Path

FW_DIR = Path(__file__).resolve().parent.parent
LIB = FW_DIR / "lib"
PURE = ("pscodes", "planner", "store", "protocol", "board", "config", "audit", "zones", "calib", "calset")


def load(name):
    assert name in PURE, f"{name} needs hardware; test it under MicroPython"
    if name in sys.modules and getattr(sys.modules[name], "__file__", "").startswith(str(LIB)):
        return sys.modules[name]
    sys.path.insert(0, str(LIB))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(LIB))
        if str(LIB) not in sys.path:
            sys.path.append(str(LIB))     # (for the imports these modules make later, e.g. board.load_zones)
