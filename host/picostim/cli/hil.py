"""`picostim hil`: run the HIL suite (hil_tests/) against a DUT + rig, or the virtual board when nothing is attached.

Thin layer over pytest + the picostim pytest plugin: builds the pytest arguments, runs pytest in this process,
prints a rich summary from the run's record and exits with pytest's exit code.
"""
from __future__ import annotations

import os
import sys
from collections import OrderedDict

import click

from . import main
from .. import paths
from ._common import EXIT_INTERRUPTED, check_board, check_load, check_output_dir, check_port


TEST_TIMEOUT_S = 240   # per test (pytest-timeout): a wedged bench fails one test instead of hanging CI


def _attached_picos() -> list[str]:
    """Serial ports of boards running MicroPython (USB 2E8A:0005)."""
    try:
        from serial.tools import list_ports
    except ImportError:
        return []
    return sorted(p.device for p in list_ports.comports() if p.vid == 0x2E8A and p.pid == 0x0005)


def default_dut() -> str:
    env = os.environ.get("PICOSTIM_DUT")
    if env:
        return env
    ports = _attached_picos()
    return ports[0] if len(ports) == 1 else "sim"


class _Collector:
    """In-process pytest plugin: keeps the run's record for the summary table (works with xdist: controller side)."""

    def __init__(self):
        self.record = None
        self.paths = None

    def pytest_sessionfinish(self, session):
        rec = getattr(session.config, "_picostim_record", None)
        if rec is not None:
            self.record = rec.as_dict()

    def pytest_unconfigure(self, config):
        self.paths = getattr(config, "_picostim_paths", None)


def build_pytest_args(dut: str, rig: str | None, report_dir: str, quiet: bool, keyword: str | None,
                      workers: int | None, load: str | None, rigs_file: str | None, extra: tuple) -> list[str]:
    args = [str(paths.HIL_TESTS_DIR), "--dut", dut, "--hil-report", report_dir,
            "--junitxml", os.path.join(report_dir, "junit.xml"), "-p", "no:cacheprovider",
            "--timeout", str(TEST_TIMEOUT_S)]
    if rig:
        args += ["--rig", rig]
    if load:
        args += ["--load", load]
    if rigs_file:
        args += ["--rigs-file", rigs_file]
    if keyword:
        args += ["-k", keyword]
    if workers and workers > 1:
        args += ["-n", str(workers)]
    # quiet: one line per failure (no tracebacks with object reprs); the record and report keep the details
    args += ["-q", "--no-header", "-rfE", "--tb=line"] if quiet else ["-v"]
    args += list(extra)
    return args


def _summary_table(record: dict, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    groups: "OrderedDict[str, dict]" = OrderedDict()
    for t in record.get("tests", []):
        mod = escape(t["nodeid"].split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py"))
        g = groups.setdefault(mod, {"passed": 0, "failed": 0, "error": 0, "skipped": 0, "incomplete": 0, "retried": 0,
                                    "measurements": 0, "duration": 0.0})
        g[t["outcome"]] = g.get(t["outcome"], 0) + 1
        g["retried"] += 1 if t.get("retries") else 0
        g["measurements"] += len(t.get("measurements", []))
        g["duration"] += t.get("duration_s", 0.0)
    table = Table(title="picostim HIL", show_lines=False)
    for col in ("module", "pass", "fail", "err", "skip", "inc", "retry", "meas", "s"):
        table.add_column(col, justify="left" if col == "module" else "right", no_wrap=True)
    for mod, g in groups.items():
        bad = g["failed"] + g["error"] + g["incomplete"]
        table.add_row(mod, f"[green]{g['passed']}[/]", f"[red]{g['failed']}[/]" if g["failed"] else "0",
                      f"[red]{g['error']}[/]" if g["error"] else "0", str(g["skipped"]),
                      f"[yellow]{g['incomplete']}[/]" if g["incomplete"] else "0",
                      f"[yellow]{g['retried']}[/]" if g["retried"] else "0", str(g["measurements"]),
                      f"{g['duration']:.1f}", style="bold" if bad else None)
    s = record.get("summary", {})
    table.add_section()
    table.add_row("total", str(s.get("passed", 0)), str(s.get("failed", 0)), str(s.get("error", 0)),
                  str(s.get("skipped", 0)), str(s.get("incomplete", 0)), str(s.get("retried", 0)), str(s.get("measurements", 0)),
                  f"{record.get('duration_s', 0):.1f}")
    console.print(table)
    outcome = record.get("outcome")
    colour = {"PASS": "green", "FAIL": "red"}.get(outcome, "yellow")
    note = " (interrupted: not every test finished)" if outcome == "INCOMPLETE" else ""
    console.print(f"[bold {colour}]{outcome}[/]{note}")
    for d in record.get("duts", []):
        console.print(escape(f"DUT {d.get('board')} uid {d.get('uid')} fw {d.get('fw')} bundle {d.get('bundle')} "
                             f"(sha256 {str(d.get('fw_hash') or '?')[:16]}) ({d.get('port')})"))
        cal = d.get("calibration")
        if cal:
            u, c = cal.get("uncalibrated") or {}, cal.get("calibrated") or {}
            console.print(escape(f"  unit seed {d.get('unit_seed')}: worst level error uncalibrated "
                                 f"{u.get('worst_error_pct', 0):.2f} %, calibrated {c.get('worst_error_pct', 0):.2f} % "
                                 f"(cap bound {cal.get('cap_bound_ua')} uA)"))
        elif d.get("ideal_parts"):
            console.print("  ideal parts (no tolerances)")
    for t in record.get("tests", []):
        if t["outcome"] in ("failed", "error"):
            # node ids carry test parameters in brackets ([highest-2k]): print them as text, never as markup
            console.print(f"[red]{t['outcome'].upper()}[/] {escape(t['nodeid'])}: {escape(t.get('message', ''))}")
            for m in t.get("measurements", []):
                if m.get("outcome") == "FAIL":
                    console.print(escape(f"    {m['name']} = {m['value']} {m['unit']} "
                                         f"(limits {m.get('low')}..{m.get('high')})"))


@main.command("hil", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--dut", default=None, help="DUT serial port or sim[:board] (default: the one attached Pico, else sim)")
@click.option("--rig", default=None, help="rig address, sim, or sim-proto (the virtual rig over the rig protocol); "
              "default sim for a virtual DUT")
@click.option("--board", "-b", default=None, help="board profile for the virtual board (same as --dut sim:BOARD)")
@click.option("--load", default=None, help="default load per test: 500, 2k, 10k, skin")
@click.option("--clock", type=click.Choice(["cpu", "model", "realtime"]), default=None,
              help="virtual board clock (default model: deterministic, independent of host load)")
@click.option("--firmware", type=click.Path(exists=True, file_okay=False), default=None,
              help="firmware tree to provision instead of the repo's firmware/ (e.g. a mutated copy)")
@click.option("--rigs-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSON list of benches to run in parallel (one xdist worker per bench)")
@click.option("-n", "--workers", type=int, default=None, help="parallel workers (default 2 on the virtual board)")
@click.option("--report", "report_dir", default="hil-report", show_default=True, help="report directory")
@click.option("-k", "keyword", default=None, help="only tests matching this pytest -k expression")
@click.option("-q", "--quiet", is_flag=True, help="terse pytest output; print the summary table")
@click.option("--engine", type=click.Choice(["unix", "emu"]), default=None,
              help="virtual board engine (default $PICOSTIM_ENGINE, else unix); emu needs --micropython")
@click.option("--micropython", type=click.Path(exists=True, dir_okay=False), default=None,
              help="MicroPython RPI_PICO v1.28.0 UF2 for --engine emu (default $PICOSTIM_MICROPYTHON_UF2)")
@click.option("--lg-place", "lg_places", multiple=True, metavar="NAME|GLOB|TAG=VALUE",
              help="run on labgrid places (repeatable; a name, a glob like 'rack1-*' or a tag like board=handheld-pro): "
              "one worker per acquired place")
@click.option("--lg-coordinator", default=None, help="labgrid coordinator HOST[:PORT] (default $LG_COORDINATOR)")
@click.option("--lg-wait", type=click.FloatRange(0), default=60.0, show_default=True,
              help="seconds to wait for a place another client holds before skipping it")
@click.option("--lock-key-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="the maker's line secret: a locked DUT is tested locked (privileged requests signed; tests that "
                   "need the REPL unlock it and lock it again); a virtual DUT is locked first "
                   "($PICOSTIM_LOCK_KEY_FILE)")
@click.option("--unit-seed", type=click.IntRange(min=0), default=None,
              help="virtual units' part values: worker N's unit is seed+N (default $PICOSTIM_UNIT_SEED, else 1); each "
              "is calibrated against the rig before the tests")
@click.option("--ideal", is_flag=True, help="virtual units with ideal parts (no tolerances, no calibration)")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def hil_cmd(dut, rig, board, load, clock, firmware, rigs_file, workers, report_dir, keyword, quiet, engine, micropython,
            lg_places, lg_coordinator, lg_wait, lock_key_file, unit_seed, ideal, pytest_args):
    """Run the HIL suite; extra arguments go to pytest. Exit code = pytest's (130 when interrupted)."""
    import pytest
    from rich.console import Console

    # everything that can be refused is refused before a single test runs (results are never lost to a bad path)
    check_output_dir(report_dir, "--report")
    if board:
        check_board(board)
    if load:
        check_load(load)
    # the engine reaches each pytest worker through the environment (as PICOSTIM_DUT does)
    if engine:
        os.environ["PICOSTIM_ENGINE"] = engine
    if unit_seed is not None:
        os.environ["PICOSTIM_UNIT_SEED"] = str(unit_seed)
    if ideal:
        os.environ["PICOSTIM_IDEAL"] = "1"
    if micropython:
        os.environ["PICOSTIM_MICROPYTHON_UF2"] = os.path.abspath(micropython)
    if lock_key_file:       # (the environment reaches xdist workers too)
        os.environ["PICOSTIM_LOCK_KEY_FILE"] = os.path.abspath(lock_key_file)

    if lg_places:   # benches come from labgrid places (picostim.farm.session)
        if dut or rig or board or rigs_file or workers:
            raise click.UsageError("--lg-place takes the DUT, rig and board from the places: drop --dut/--rig/"
                                   "--board/--rigs-file/-n")
        from ..farm.session import run_hil
        sys.exit(run_hil(lg_places, lg_coordinator, lg_wait, report_dir, quiet, keyword, load, pytest_args,
                         Console(stderr=False)))

    dut = dut or default_dut()
    if board:
        if not dut.startswith("sim"):
            raise click.UsageError("--board only applies to the virtual board (--dut sim)")
        dut = f"sim:{board}"
    if rig is None and dut.startswith("sim"):
        rig = "sim"
    if rig is None and not rigs_file:
        raise click.UsageError(f"DUT {dut} is real hardware: give --rig PORT (the rig Pico) or --rigs-file")
    if rig and rig not in ("sim", "sim-proto") and dut.startswith("sim"):
        raise click.UsageError("a virtual DUT needs the virtual rig (--rig sim, or sim-proto over the rig protocol)")
    for spec, what in ((dut, "--dut"), (rig, "--rig")):
        if spec and spec not in ("sim", "sim-proto") and not spec.startswith("sim:"):
            check_port(spec, what)
        elif spec and spec.startswith("sim:"):
            check_board(spec.split(":", 1)[1], what)
    if workers is None:
        if rigs_file:
            import json
            try:
                workers = len(json.loads(open(rigs_file).read()))
            except (OSError, ValueError, TypeError) as e:
                raise click.UsageError(f"{rigs_file}: {e}")
        elif dut.startswith("sim"):
            workers = min(2, os.cpu_count() or 1)
        else:
            workers = 1
    extra = tuple(pytest_args)
    if clock:
        extra = ("--clock", clock) + extra
    if firmware:
        extra = ("--firmware", firmware) + extra
    args = build_pytest_args(dut, rig, report_dir, quiet, keyword, workers, load, rigs_file, extra)
    collector = _Collector()
    console = Console(stderr=False)
    if not quiet:
        console.print(f"[bold]picostim hil[/]: dut={dut} rig={rig or rigs_file} workers={workers} -> {report_dir}/")
    rc = pytest.main(args, plugins=[collector])
    if collector.record and collector.record.get("tests"):
        _summary_table(collector.record, console)
    if collector.paths:
        console.print(f"record: {collector.paths[0]}  report: {collector.paths[1]}  junit: {report_dir}/junit.xml")
    # pytest says INTERRUPTED (2) for Ctrl-C; picostim commands all say 130 for it (and 2 for usage errors)
    sys.exit(EXIT_INTERRUPTED if int(rc) == int(pytest.ExitCode.INTERRUPTED) else int(rc))
