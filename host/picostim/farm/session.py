"""`picostim hil --lg-place NAME|PATTERN`: the HIL suite on labgrid places.

Acquire every matching place (a place another client holds is waited for up to `wait_s`, then skipped with a
message), read each acquired place's DUT and rig rfc2217:// URLs, run the suite with one pytest-xdist worker per
place (the plugin's rigs-file mechanism: worker gwN takes place N), and release every place this run acquired,
whatever way the run ends (pass, fail, error, Ctrl-C, SIGTERM). `farm.json` in the report directory says which
places ran, who held them before, how long the run waited and when each was acquired and released; each test's
record entry names its place.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..hil.bench import DEFAULT_BOARD
from .coordinator import Coordinator, FarmError, coordinator_address

FARM_RECORD = "farm.json"
BENCH_LIST = "farm-benches.json"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class PlaceUse:
    name: str
    board: str = DEFAULT_BOARD
    urls: dict = field(default_factory=dict)
    held_by: str | None = None       # who held it when this run first asked (None: it was free)
    waited_s: float = 0.0
    acquired_at: str | None = None
    released_at: str | None = None
    release_error: str | None = None


class FarmPlaces:
    """The places one run uses. acquire() then release() (release is safe to call any number of times)."""

    def __init__(self, patterns, coordinator: str | None = None, wait_s: float = 60.0, echo=None):
        self.patterns = list(patterns)
        self.address = coordinator_address(coordinator)
        self.wait_s = max(0.0, float(wait_s))
        self.echo = echo or (lambda s: None)
        self.used: dict[str, PlaceUse] = {}          # acquired by this run
        self.skipped: dict[str, str] = {}             # place -> who held it
        self.identity = None

    def acquire(self) -> list[PlaceUse]:
        with Coordinator(self.address) as c:
            self.identity = c.identity
            names = c.resolve(self.patterns)
            t0 = time.monotonic()
            deadline = t0 + self.wait_s
            pending = {n: None for n in names}       # place -> holder seen
            first_ask = {}
            try:
                while pending:
                    for name in list(pending):
                        first_ask.setdefault(name, time.monotonic())
                        holder = c.try_acquire(name)
                        if holder is None:
                            use = PlaceUse(name, held_by=pending.pop(name), acquired_at=_now(),
                                           waited_s=round(time.monotonic() - first_ask[name], 3))
                            self.used[name] = use
                            self.echo(f"acquired place {name}" + (f" (after {use.waited_s:.1f} s; was held by "
                                                                   f"{use.held_by})" if use.held_by else ""))
                        elif pending[name] is None:
                            pending[name] = holder
                            if self.wait_s > 0:
                                self.echo(f"place {name} is held by {holder}: waiting up to {self.wait_s:.0f} s")
                    if pending and time.monotonic() >= deadline:
                        for name, holder in pending.items():
                            self.skipped[name] = holder
                            self.echo(f"place {name} skipped: held by {holder}"
                                      + (f" for more than {self.wait_s:.0f} s" if self.wait_s > 0 else ""))
                        break
                    if pending:
                        time.sleep(0.5)
                for name, use in self.used.items():
                    use.board = c.places[name].tags.get("board") or DEFAULT_BOARD
                    use.urls = c.serial_urls(name)
            except BaseException:
                self.release()
                raise
        return list(self.used.values())

    def release(self) -> list[str]:
        """Release every place this run acquired; returns the errors (a place that could not be released)."""
        todo = [u for u in self.used.values() if u.released_at is None]
        if not todo:
            return []
        errors = []
        try:
            with Coordinator(self.address) as c:
                for use in todo:
                    try:
                        c.release(use.name)
                        use.released_at = _now()
                        use.release_error = None
                    except FarmError as e:
                        use.release_error = str(e)
        except FarmError as e:
            for use in todo:
                use.release_error = str(e)
        for use in todo:
            if use.release_error:
                errors.append(f"place {use.name} NOT released ({use.release_error}); release it with "
                              f"`labgrid-client -x {self.address} -p {use.name} release`")
            else:
                self.echo(f"released place {use.name}")
        return errors

    def leave_idle(self, timeout_s: float = 10.0) -> list[str]:
        """Before the places go back: ask every DUT to stop (a run cut short by Ctrl-C, SIGTERM or a crashed
        worker may have left one stimulating). In parallel; returns the places whose DUT did not confirm."""
        import threading

        from ..device import Device
        results = {}

        def stop(use):
            try:
                with Device(use.urls["dut"], timeout=timeout_s / 2) as d:
                    d.stop()
                results[use.name] = None
            except Exception as e:   # a DUT in the REPL or mid-reset is idle by S14; say so, don't fail the run
                results[use.name] = f"{type(e).__name__}: {e}"

        threads = [threading.Thread(target=stop, args=(u,), daemon=True)
                   for u in self.used.values() if u.released_at is None and u.urls.get("dut")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout_s)
        return [f"place {n}: DUT did not confirm stop ({err})" for n, err in results.items() if err]

    def bench_entries(self) -> list[dict]:
        return [{"name": u.name, "dut": u.urls["dut"], "rig": u.urls["rig"], "board": u.board}
                for u in self.used.values()]

    def as_dict(self) -> dict:
        return {"coordinator": self.address, "client": self.identity, "patterns": self.patterns,
                "wait_s": self.wait_s, "places": [asdict(u) for u in self.used.values()],
                "skipped": [{"name": n, "held_by": h} for n, h in self.skipped.items()]}


def _place_table(record: dict, farm: FarmPlaces, console) -> None:
    from rich.table import Table
    per = {name: {"passed": 0, "failed": 0, "error": 0, "skipped": 0} for name in farm.used}
    for t in record.get("tests", []):
        p = t.get("place")
        if p in per:
            per[p][t["outcome"]] = per[p].get(t["outcome"], 0) + 1
    table = Table(title="places")
    for col in ("place", "board", "tests", "pass", "fail", "err", "skip", "released"):
        table.add_column(col, justify="left" if col in ("place", "board") else "right")
    for name, g in per.items():
        u = farm.used[name]
        table.add_row(name, u.board, str(sum(g.values())), str(g["passed"]), str(g["failed"]), str(g["error"]),
                      str(g["skipped"]), "yes" if u.released_at else "[red]NO[/]")
    for name, holder in farm.skipped.items():
        table.add_row(name, "", "0", "", "", "", "", f"skipped: held by {holder}")
    console.print(table)


def run_hil(places, coordinator, wait_s, report_dir, quiet, keyword, load, pytest_args, console) -> int:
    """The `picostim hil --lg-place` run; returns the exit code (pytest's, or 1 when no place could be used)."""
    import pytest

    from ..cli import hil as H

    try:
        farm = FarmPlaces(places, coordinator, wait_s,
                          echo=lambda s: console.print(f"farm: {s}", highlight=False, soft_wrap=True))
    except FarmError as e:
        console.print(f"[red]farm:[/] {e}", highlight=False, soft_wrap=True)
        return 1

    def _term(signum, frame):
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, _term)
    rc = 1
    record = None
    try:
        try:
            used = farm.acquire()
        except FarmError as e:
            console.print(f"[red]farm:[/] {e}", highlight=False, soft_wrap=True)
            return 1
        if not used:
            console.print("[red]farm:[/] no place could be acquired; nothing ran", highlight=False)
            return 1
        os.makedirs(report_dir, exist_ok=True)
        bench_file = Path(report_dir) / BENCH_LIST
        bench_file.write_text(json.dumps(farm.bench_entries(), indent=1))
        # labgrid is imported here already (the coordinator client): pytest cannot assert-rewrite its plugin module,
        # which the farm does not use (pytest.ini: -p no:labgrid)
        quiet_labgrid = ("-W", "ignore:Module already imported so cannot be rewritten; labgrid"
                               ":pytest.PytestAssertRewriteWarning")
        args = H.build_pytest_args("farm", None, report_dir, quiet, keyword, len(used), load, str(bench_file),
                                   quiet_labgrid + tuple(pytest_args))
        collector = H._Collector()
        if not quiet:
            console.print(f"[bold]picostim hil[/]: {len(used)} place(s) {', '.join(farm.used)} -> {report_dir}/")
        rc = int(pytest.main(args, plugins=[collector]))
        record = collector.record
        if record and record.get("tests"):
            H._summary_table(record, console)
        if collector.paths:
            console.print(f"record: {collector.paths[0]}  report: {collector.paths[1]}  junit: {report_dir}/junit.xml")
    except KeyboardInterrupt:
        console.print("[yellow]farm: interrupted[/]")
        rc = 130
    finally:
        # a second Ctrl-C / SIGTERM must not cut the clean-up short: places left acquired block everyone else
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if rc != 0:  # the run did not end cleanly: no DUT may be left stimulating when its place is handed back
                for msg in farm.leave_idle():
                    console.print(f"[yellow]farm:[/] {msg}", highlight=False, soft_wrap=True)
            errors = farm.release()
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
        for err in errors:
            console.print(f"[red]farm:[/] {err}", highlight=False, soft_wrap=True)
        if farm.used or farm.skipped:
            try:
                os.makedirs(report_dir, exist_ok=True)
                (Path(report_dir) / FARM_RECORD).write_text(json.dumps(farm.as_dict(), indent=1))
            except OSError as e:
                console.print(f"[red]farm:[/] cannot write {FARM_RECORD}: {e}")
        if record and record.get("tests"):
            _place_table(record, farm, console)
        if errors and rc == 0:
            rc = 1
    return rc
