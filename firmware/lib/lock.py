# Production lock (issue 14): whether this unit is locked. Tiny on purpose: boot.py, main.py and app.py ask it at
# every boot; the state, the checks and the commands live in lockcmd.py, loaded only on a locked unit or for a
# lock command, so an unlocked unit's heap never holds them.
import os

LOCK_PATH = "/lock.bin"


def present():
    """Is the unit locked? (the lock file exists, readable or not: a damaged one keeps it locked)"""
    try:
        os.stat(LOCK_PATH)
        return True
    except OSError:
        return False
