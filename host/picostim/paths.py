"""Where the project's shared data lives: boards/, firmware/ (one source of truth for all layers)."""
import os
from pathlib import Path

_HERE = Path(__file__).resolve().parent
REPO_ROOT = Path(os.environ.get("PICOSTIM_ROOT", _HERE.parent.parent))
BOARDS_DIR = REPO_ROOT / "boards"
FIRMWARE_DIR = REPO_ROOT / "firmware"
HIL_TESTS_DIR = REPO_ROOT / "hil_tests"
SIM_RUNTIME_DIR = _HERE / "sim" / "runtime"
