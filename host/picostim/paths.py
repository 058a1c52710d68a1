"""Where the project's shared data lives: boards/, firmware/, hil_tests/ (one source of truth for all layers).

In a checkout they are the repository's top-level trees; an installed package carries a copy made at build time in
picostim/_data/ (see host/setup.py). $PICOSTIM_ROOT points at another tree with the same layout.
"""
import os
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_PACKED = _HERE / "_data"
INSTALLED = "PICOSTIM_ROOT" not in os.environ and (_PACKED / "firmware").is_dir()
REPO_ROOT = Path(os.environ.get("PICOSTIM_ROOT", _PACKED if INSTALLED else _HERE.parent.parent))
BOARDS_DIR = REPO_ROOT / "boards"
FIRMWARE_DIR = REPO_ROOT / "firmware"
HIL_TESTS_DIR = REPO_ROOT / "hil_tests"
SIM_RUNTIME_DIR = _HERE / "sim" / "runtime"


def cache_dir() -> Path:
    """Compiled .mpy files (keyed by source hash): build/ in a checkout, the user's cache dir when installed."""
    if not INSTALLED:
        return REPO_ROOT / "build" / "mpy-cache"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "picostim" / "mpy-cache"
