import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# firmware/tests/mpy/ holds MicroPython scripts run by test_fw_micropython.py, not CPython test modules.
collect_ignore_glob = ["mpy/*"]
