"""pytest plugin for the picostim HIL suite (registered by the `pytest11` entry point `picostim`).

Options: --dut PORT|sim[:board], --rig ADDR|sim, --hil-report DIR, --load LOAD.
Fixtures: `dut` (a connected picostim Device on a flashed board), `rig` (VirtualRig or RigClient), `measure`
(OpenHTF-style measurements), `bench` (both, plus the virtual board when there is one), `bench_factory`
(a fresh private bench, e.g. for a mutated firmware).
Marker: `@pytest.mark.hil_retry(n)` re-runs a failing test body up to n more times; every attempt is recorded.

A plain pytest run that uses none of this is untouched: no board starts, no record is written unless a test used
a HIL fixture or --hil-report was given explicitly.
"""
from __future__ import annotations

import time

import pytest

from . import measure as M

def pytest_addoption(parser):
    group = parser.getgroup("picostim", "picostim HIL")
    group.addoption("--dut", default=None,
                    help="DUT: a serial port (/dev/ttyACM0, rfc2217://host:port) or sim[:board] for the virtual board")
    group.addoption("--rig", default=None, help="rig: serial port / address of a rig Pico, or sim (default: "
                    "sim when --dut is sim)")
    group.addoption("--hil-report", default=None,
                    help="directory for record.json and report.html (default hil-report/ when HIL fixtures ran)")
    group.addoption("--load", default=None, help="load at the start of each test: 500, 2k, 10k, skin, open, short "
                    "(default 2k)")
    group.addoption("--clock", default=None, choices=("cpu", "model", "realtime"),
                    help="virtual board clock (default: the bench default, model = deterministic)")
    group.addoption("--firmware", default=None,
                    help="firmware tree to provision instead of the repo's firmware/ (e.g. a mutated copy)")
    group.addoption("--lock-key-file", default=None,
                    help="the maker's line secret (issue 14): a locked DUT is tested locked; a virtual DUT is locked "
                    "first ($PICOSTIM_LOCK_KEY_FILE)")
    group.addoption("--rigs-file", default=None,
                    help="JSON file listing benches [{dut:..., rig:...}, ...]; xdist worker N takes entry N")


def pytest_configure(config):
    config.addinivalue_line("markers", "hil_retry(n): re-run a failing HIL test body up to n more times (recorded)")
    config.addinivalue_line("markers", "hil_slow: long-running HIL test (endurance)")
    config.addinivalue_line("markers", "hil_fresh: test needs a freshly started bench of its own")
    config.addinivalue_line("markers", "repl: test needs the DUT's REPL (a locked DUT is unlocked for it, then locked)")
    config.addinivalue_line("markers", "production: quick test in the production station's subset (-m production)")
    from .record import RecordBuilder
    opts = {"dut": config.getoption("--dut"), "rig": config.getoption("--rig"),
            "load": config.getoption("--load"), "rigs_file": config.getoption("--rigs-file"),
            "firmware": config.getoption("--firmware")}
    config._picostim_record = RecordBuilder(opts)
    config.pluginmanager.register(_Recorder(config), "picostim-recorder")


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


# --- session bench ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def hil_settings(request):
    from .bench import BenchSettings
    cfg = request.config
    wid = cfg.workerinput.get("workerid") if _is_worker(cfg) else None
    s = BenchSettings.from_options(dut=cfg.getoption("--dut"), rig=cfg.getoption("--rig"),
                                   load=cfg.getoption("--load"), rigs_file=cfg.getoption("--rigs-file"),
                                   worker_id=wid)
    if cfg.getoption("--lock-key-file"):
        s = s.replace(lock_key_file=str(cfg.getoption("--lock-key-file")))
    fw = cfg.getoption("--firmware")
    if fw:
        s = s.replace(firmware_dir=str(fw))
    if cfg.getoption("--clock"):
        s = s.replace(clock=cfg.getoption("--clock"))
    return s


@pytest.fixture(scope="session")
def _session_bench(hil_settings, request):
    from .bench import Bench
    b = Bench.open(hil_settings)
    yield b
    b.close()


@pytest.fixture
def bench(_session_bench, request):
    """The shared bench, brought back to a known state (output idle, faults cleared, default load) for each test."""
    b = _session_bench
    b.prepare_for_test()
    if request.node.get_closest_marker("repl") is not None:
        ctx = b.repl_access()       # a locked DUT: unlocked for this test, locked again after it (issue 14)
        ctx.__enter__()
        request.addfinalizer(lambda: ctx.__exit__(None, None, None))
    request.node.user_properties.append((M.PROP_DUT, M.prop(b.dut_identity())))
    request.node.user_properties.append((M.PROP_RIG, M.prop(b.rig_identity())))
    request.node.user_properties.append((M.PROP_BUNDLE, M.prop(b.dut_identity().get("bundle"))))
    if b.settings.label:
        request.node.user_properties.append((M.PROP_PLACE, M.prop(b.settings.label)))
    yield b
    b.after_test()


@pytest.fixture
def dut(bench):
    return bench.device


@pytest.fixture
def rig(bench):
    return bench.rig


@pytest.fixture
def bench_factory(hil_settings, request):
    """Open private benches (optionally from another firmware tree); closed at the end of the test."""
    from .bench import Bench
    opened = []

    def make(**overrides):
        b = Bench.open(hil_settings.replace(**overrides))
        opened.append(b)
        request.node.user_properties.append((M.PROP_DUT, M.prop(b.dut_identity())))
        request.node.user_properties.append((M.PROP_RIG, M.prop(b.rig_identity())))
        return b

    yield make
    for b in opened:
        b.close()


@pytest.fixture
def measure(request):
    tm = M.TestMeasurements(nodeid=request.node.nodeid, defer=True,
                            _sink=lambda k, v: request.node.user_properties.append((k, v)))
    request.node._picostim_measure = tm
    M.set_current(tm)
    yield tm
    M.set_current(None)


# --- measurements (OpenHTF style) and explicit retries ---------------------------------------------------------

def _run_body(func, args, tm):
    """The test body; a failed measurement does not stop it (every measurement is recorded, as in OpenHTF): the
    test fails after the body on the failed ones, naming what the body raised after them, if anything."""
    if tm is None:
        return func(**args)
    tm.pop_deferred()
    try:
        func(**args)
    except (pytest.skip.Exception, pytest.xfail.Exception, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:
        bad = tm.pop_deferred()
        if bad:
            raise M.failure_of(bad, then=e) from e
        raise
    bad = tm.pop_deferred()
    if bad:
        raise M.failure_of(bad)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    marker = pyfuncitem.get_closest_marker("hil_retry")
    tm = getattr(pyfuncitem, "_picostim_measure", None)
    if marker is None and tm is None:
        return None
    limit = int(marker.args[0] if marker.args else marker.kwargs.get("n", 1)) if marker is not None else 0
    if limit < 0:
        raise pytest.UsageError("hil_retry(n) needs n >= 0")
    func = pyfuncitem.obj
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    if marker is None:
        __tracebackhide__ = True
        _run_body(func, args, tm)
        return True
    for attempt in range(1, limit + 2):
        if tm is not None:
            tm.attempt = attempt
        t0 = time.monotonic()
        try:
            _run_body(func, args, tm)
        except (pytest.skip.Exception, pytest.xfail.Exception):
            raise
        except BaseException as e:
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            pyfuncitem.user_properties.append((M.PROP_ATTEMPT, M.prop({
                "attempt": attempt, "limit": limit, "outcome": "failed", "message": msg[:300],
                "duration_s": round(time.monotonic() - t0, 3)})))
            if attempt > limit:
                raise
            continue
        pyfuncitem.user_properties.append((M.PROP_ATTEMPT, M.prop({
            "attempt": attempt, "limit": limit, "outcome": "passed", "message": "",
            "duration_s": round(time.monotonic() - t0, 3)})))
        return True
    return True


# --- record, report ---------------------------------------------------------------------------------------------

class _Recorder:
    """Feeds every test report into the run's RecordBuilder; writes record.json + report.html at the end."""

    def __init__(self, config):
        self.config = config

    def pytest_runtest_logreport(self, report):
        self.config._picostim_record.add_report(report)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session, exitstatus):
        _junit_mark_unfinished(self.config)
        cfg = self.config
        if _is_worker(cfg):
            return
        rec = cfg._picostim_record
        explicit = cfg.getoption("--hil-report")
        if not explicit and not _has_hil(rec):
            return  # a plain pytest run: write nothing
        directory = explicit or "hil-report"
        from . import report as R
        data = rec.finish(exitstatus)
        try:
            rec_path = rec.write(directory)
            html_path = R.write(data, directory)
        except OSError as e:
            cfg._picostim_report_error = str(e)
            return
        cfg._picostim_paths = (rec_path, html_path)

    def pytest_terminal_summary(self, terminalreporter, exitstatus, config):
        paths = getattr(config, "_picostim_paths", None)
        if paths:
            terminalreporter.write_line(f"picostim HIL record: {paths[0]}  report: {paths[1]}")
        err = getattr(config, "_picostim_report_error", None)
        if err:
            terminalreporter.write_line(f"picostim HIL: could not write the report: {err}", red=True)


def _junit_mark_unfinished(config) -> None:
    """An interrupted run leaves JUnit test cases that started but never reported a result: pytest writes them
    without a name and without an outcome (so CI counts them as passed). Name each one and mark it an error."""
    try:
        from _pytest.junitxml import mangle_test_address, xml_key
    except ImportError:
        return
    xml = config.stash.get(xml_key, None)
    if xml is None:
        return
    for rep in list(xml.node_reporters_ordered):
        attrs = getattr(rep, "attrs", None)      # (a finished test case keeps only its XML)
        if attrs is None or attrs.get("name"):
            continue
        names = mangle_test_address(str(rep.id))
        rep.attrs = {"classname": ".".join(names[:-1]), "name": names[-1], **rep.attrs}
        rep._add_simple("error", "interrupted: the test did not finish")
        xml.stats["error"] = xml.stats.get("error", 0) + 1


def _has_hil(rec) -> bool:
    return bool(rec.duts or rec.rigs or any(t["measurements"] or t["attempts"] for t in rec.tests.values()))
