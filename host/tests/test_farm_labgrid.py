"""A HIL farm on one machine, on labgrid's own coordinator and exporters: two exporters with two virtual benches
each (`picostim farm up`), the suite spread over the four places by `picostim hil --lg-place`, one place held by
another labgrid client when the run starts.

Checks what the farm promises: every place ran tests, every place was released, and the place another client
held was not used while it held it (the run waited, then acquired it after that client released it).
Everything started here is stopped at the end, on failure too.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
SER2NET = shutil.which("ser2net") or ("/usr/sbin/ser2net" if os.path.exists("/usr/sbin/ser2net") else None)

pytestmark = pytest.mark.skipif(SER2NET is None, reason="ser2net is not installed (Debian package ser2net)")

# small and fast: 8 tests, 2 per place (xdist's first batch), none of which needs more than one bench
SELECTION = ("test_s13_stop_leaves_output_idle or test_power_button_starts_and_stops or "
             "test_s10_no_start_while_charging or test_down_button_lowers_one_level or "
             "test_s13_idle_after_boot_for_a_while or test_up_at_top_level_stays_at_top or "
             "test_s9_session_longer_than_board_max_not_applied or test_buttons_do_nothing_while_charging")
HELD_FOR_S = 4.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Procs:
    """Processes this test started, each in its own session; stopped (SIGTERM, then SIGKILL) in reverse order."""

    def __init__(self):
        self.procs = []

    def start(self, args, log: Path, cwd=None) -> subprocess.Popen:
        f = open(log, "wb")
        p = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd,
                             start_new_session=True)
        p._log = f
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)
            p._log.close()


def _wait_for_line(proc, log: Path, word: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if any(line.strip() == word for line in text.splitlines()):
            return text
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[:3]} exited with {proc.returncode}:\n{text[-2000:]}")
        time.sleep(0.2)
    raise AssertionError(f"no '{word}' from {proc.args[:3]} within {timeout_s} s:\n{log.read_text()[-2000:]}")


def _lg_client(coord, *args, user=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, LG_COORDINATOR=coord)
    if user:
        env["LG_USERNAME"] = user
    return subprocess.run([str(BIN / "labgrid-client"), *args], env=env, capture_output=True, text=True, timeout=60)


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd:
                found.append(f"{d.name}: {cmd[:200]}")
    return found


@pytest.fixture
def farm(tmp_path):
    """Coordinator on 127.0.0.1 (free port) + two exporters (`picostim farm up -n 2` each, virtual benches)."""
    procs = _Procs()
    link_dirs = []
    try:
        coord = f"127.0.0.1:{_free_port()}"
        # the coordinator keeps its state (places.yaml, resources.yaml) in its working directory
        procs.start([str(BIN / "labgrid-coordinator"), "-l", coord], tmp_path / "coordinator.log", cwd=tmp_path)
        deadline = time.monotonic() + 30
        while True:   # the coordinator is up when it accepts a connection
            try:
                socket.create_connection(("127.0.0.1", int(coord.split(":")[1])), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "coordinator.log").read_text()
                time.sleep(0.2)
        ups = []   # two exporter hosts, each `picostim farm up`
        for prefix in ("ea-", "eb-"):
            log = tmp_path / f"farm-up-{prefix}log"
            ups.append((procs.start([str(BIN / "picostim"), "farm", "up", "-n", "2", "--prefix", prefix,
                                     "-x", coord, "--hostname", "127.0.0.1"], log), log))
        for p, log in ups:
            text = _wait_for_line(p, log, "ready", 180)
            cfg = [l.split("=", 1)[1] for l in text.splitlines() if l.startswith("exporter-config=")]
            link_dirs.append(str(Path(cfg[0]).parent))
        yield {"coordinator": coord, "places": ["ea-1", "ea-2", "eb-1", "eb-2"], "procs": procs}
    finally:
        procs.stop_all()
        setup_failed = sys.exc_info()[0] is not None       # don't hide that error behind a teardown one
        ups_rc = [p.returncode for p in procs.procs if p.args[1:3] == ["farm", "up"]]
        assert setup_failed or all(rc == 0 for rc in ups_rc), f"`picostim farm up` exit codes on SIGTERM: {ups_rc}"
        for d in link_dirs:   # nothing the farm started (boards, exporters, ser2net) outlives it
            assert not _processes_mentioning(d), _processes_mentioning(d)
            assert not os.path.exists(d)


def test_suite_runs_across_four_places_of_two_exporters(farm, tmp_path):
    coord = farm["coordinator"]
    held = "eb-2"
    r = _lg_client(coord, "-p", held, "acquire", user="other")
    assert r.returncode == 0, r.stderr
    from picostim.device import Device
    from picostim.farm.session import FarmPlaces
    from picostim.sim.rigproto import RigClient

    # a run cut short hands its places back idle: a DUT left stimulating (its port closed, as after a killed
    # worker) is stopped before release; the rig, over the place's own rfc2217 port, sees the pulses end
    fp = FarmPlaces(["ea-1"], coord, wait_s=0)
    try:
        use = fp.acquire()[0]
        with Device(use.urls["dut"], timeout=20) as d:
            d.hello(timeout=20)
            d.start(level=2, phase_us=200, gap_us=100, rate_hz=100)
        with RigClient(use.urls["rig"], timeout=60) as rig:
            rig.wait(1.0)
            assert rig.capture(0.3).n_active > 0           # still stimulating with nobody connected
            assert fp.leave_idle() == []
            rig.wait(0.2)
            assert rig.capture(0.3).n_pulses == 0
    finally:
        assert fp.release() == []

    # a held place is never taken: without waiting it is skipped with a message (and nothing is left acquired)
    msgs = []
    fp = FarmPlaces([held, "ea-1"], coord, wait_s=0, echo=msgs.append)
    try:
        assert [u.name for u in fp.acquire()] == ["ea-1"]
        assert list(fp.skipped) == [held] and fp.skipped[held].endswith("/other"), fp.skipped
        assert any(f"{held} skipped: held by" in m for m in msgs), msgs
    finally:
        assert fp.release() == []
    assert "/other" in _lg_client(coord, "-p", held, "show").stdout
    assert "acquired: None" in _lg_client(coord, "-p", "ea-1", "show").stdout

    # the whole run; the other client lets go of its place a while after the run says it is waiting for it
    released_by_other = {}

    def release_later():
        time.sleep(HELD_FOR_S)
        released_by_other["holder_before"] = _lg_client(coord, "-p", held, "show").stdout   # still the other's
        rr = _lg_client(coord, "-p", held, "release", user="other")
        released_by_other["t"] = datetime.now().astimezone()
        released_by_other["rc"] = rr.returncode

    report = tmp_path / "report"
    t0 = time.monotonic()
    run = subprocess.Popen([str(BIN / "picostim"), "hil", "--lg-place", "ea-*", "--lg-place", "eb-*",
                            "--lg-coordinator", coord, "--lg-wait", "240", "--report", str(report), "-q",
                            "-k", SELECTION], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           stdin=subprocess.DEVNULL)
    releaser = threading.Thread(target=release_later, daemon=True)
    lines = []
    try:
        for line in run.stdout:
            lines.append(line)
            if f"place {held} is held by" in line and not releaser.is_alive() and not released_by_other:
                releaser.start()
        rc = run.wait(60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    wall = time.monotonic() - t0
    out = "".join(lines)
    assert releaser.ident is not None, "the run never said it was waiting for the held place:\n" + out[-3000:]
    releaser.join(30)
    assert rc == 0, out[-4000:]
    assert released_by_other.get("rc") == 0
    assert "/other" in released_by_other["holder_before"]

    record = json.loads((report / "record.json").read_text())
    farm_rec = json.loads((report / "farm.json").read_text())
    per_place = {}
    for test in record["tests"]:
        per_place.setdefault(test.get("place"), []).append(test["outcome"])
    # every place ran tests, and every test ran on one of the four places
    assert sorted(per_place) == sorted(farm["places"]), per_place
    assert all(outcomes and set(outcomes) == {"passed"} for outcomes in per_place.values()), per_place
    assert len(record["tests"]) == 8
    # every place was released: by the run's own account and by the coordinator's
    uses = {u["name"]: u for u in farm_rec["places"]}
    assert sorted(uses) == sorted(farm["places"]) and not farm_rec["skipped"]
    assert all(u["released_at"] and not u["release_error"] for u in uses.values()), uses
    who = _lg_client(coord, "who")
    assert who.returncode == 0 and not any(p in who.stdout for p in farm["places"]), who.stdout
    for p in farm["places"]:
        show = _lg_client(coord, "-p", p, "show").stdout
        assert "acquired: None" in show, show
    # the place the other client held was not used while it held it: the run saw it held, waited, and acquired it
    # only after the release
    u = uses[held]
    assert u["held_by"] and u["held_by"].endswith("/other"), u
    assert datetime.fromisoformat(u["acquired_at"]) >= released_by_other["t"], (u, released_by_other["t"])
    assert u["waited_s"] > 0
    assert all(uses[p]["held_by"] is None for p in farm["places"] if p != held)
    # the junit file names each test's place too
    junit = (report / "junit.xml").read_text()
    assert all(f'name="picostim_place" value="{p}"' in junit for p in farm["places"])
    print(f"farm run: {len(record['tests'])} tests on {len(uses)} places in {wall:.1f} s "
          f"({ {p: len(o) for p, o in per_place.items()} })")
