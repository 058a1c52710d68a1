"""The virtual board: the firmware on the MicroPython unix port with models of the RP2040, front end, load and rig."""
from .board import VirtualBoard, BoardError, PWRON_RESET, WDT_RESET, engine_from_env

__all__ = ["VirtualBoard", "BoardError", "PWRON_RESET", "WDT_RESET", "engine_from_env"]
