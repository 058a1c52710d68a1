"""Campaign: USB attacks on a locked unit, on the emu engine (bench/sections/lock_attack.py, run_emu)."""
from sections.lock_attack import run_emu


def run(quick: bool = False) -> dict:
    return run_emu(quick)
