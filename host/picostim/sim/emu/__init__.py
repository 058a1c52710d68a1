"""The `emu` engine of the virtual board: the official MicroPython image in an RP2040 emulator (see board.py)."""
from .board import ENV_UF2, EmuBoard, EmuError, image_path

__all__ = ["EmuBoard", "EmuError", "ENV_UF2", "image_path"]
