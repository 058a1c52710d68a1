"""Resolve a `--port` value to a serial port: a path / pyserial URL, or `sim` / `sim:<board>` (a virtual board
started for the duration of the command, flashed with the application unless told not to)."""
from __future__ import annotations

import contextlib
import itertools
import os
from dataclasses import dataclass
from typing import Iterator

SIM_PREFIX = "sim"
_sim_seeds = itertools.count()   # each virtual board of one command gets its own unique_id
DEFAULT_SIM_BOARD = "handheld-home"


def is_sim(spec: str | None) -> bool:
    return spec is not None and (spec == SIM_PREFIX or spec.startswith(SIM_PREFIX + ":"))


def sim_board(spec: str, default: str | None = None) -> str:
    return spec.split(":", 1)[1] if ":" in spec else (default or DEFAULT_SIM_BOARD)


class BoardMismatch(ValueError):
    pass


def check_sim_board(spec: str | None, board: str | None) -> None:
    """`sim:<board>` names the virtual unit's hardware: flashing it with another board's profile is refused."""
    if board and is_sim(spec) and ":" in spec and sim_board(spec) != board:
        raise BoardMismatch(f"--port {spec} is a {sim_board(spec)} unit but --board is {board}: use --port sim:{board}"
                            f" or --board {sim_board(spec)}")


def slot_uid(slot: int) -> str:
    """The unique_id of the virtual unit in a station's slot `slot`: the same in every run, so a retest in that slot
    reaches the same unit (as a real retest re-seats the same handheld)."""
    import hashlib
    return hashlib.sha256(f"picostim virtual unit in slot {slot}".encode()).hexdigest()[:16]


@dataclass
class Target:
    port: str
    spec: str
    board: str | None = None
    vb: object | None = None      # picostim.sim.VirtualBoard when spec is sim


def default_port() -> str | None:
    """$PICOSTIM_PORT, else the only attached MicroPython board, else None."""
    env = os.environ.get("PICOSTIM_PORT")
    if env:
        return env
    from .transport import list_ports
    ports = [p["port"] for p in list_ports() if p["micropython"]]
    return ports[0] if len(ports) == 1 else None


@contextlib.contextmanager
def open_target(spec: str | None, board: str | None = None, deploy_app: bool = True, load: str = "2k",
                flash_dir=None, quiet: bool = True, seed: int | None = None,
                uid: str | None = None) -> Iterator[Target]:
    """Yield a Target for `spec`; a virtual board is started (and flashed when `deploy_app`) and closed after.
    A virtual board gets `uid` as its unique_id, or a fresh one when None."""
    spec = spec or default_port()
    if spec is None:
        raise click_error("no board found: pass --port PORT (or --port sim for the virtual board)")
    if not is_sim(spec):
        yield Target(port=spec, spec=spec, board=board)
        return
    check_sim_board(spec, board)
    from .sim import VirtualBoard, engine_from_env
    name = sim_board(spec, board)
    # A deterministic virtual clock by default: a busy host then cannot stretch virtual time into a watchdog reset.
    clock = os.environ.get("PICOSTIM_SIM_CLOCK", "model")
    # $PICOSTIM_ENGINE=emu (with $PICOSTIM_MICROPYTHON_UF2) runs the official image in the RP2040 emulator
    with VirtualBoard(board=name, load=load, flash_dir=flash_dir, clock=clock,
                      seed=next(_sim_seeds) if seed is None else seed, engine=engine_from_env(),
                      uid=uid) as vb:
        wait_alive(vb.port)
        if deploy_app:
            from . import deploy
            from .transport import SerialTransport
            with SerialTransport(vb.port) as t:
                deploy.deploy(t, name)
        yield Target(port=vb.port, spec=spec, board=name, vb=vb)


def wait_alive(port: str, timeout: float = 30.0) -> None:
    """Wait until a freshly started or reset board's serial port has enumerated and opens."""
    from .transport import SerialTransport
    SerialTransport(port, open_timeout=timeout).close()


def click_error(msg: str):
    import click
    return click.ClickException(msg)
