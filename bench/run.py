"""Run the benchmark sections and render bench/RESULTS.md (`make bench`).

    .venv/bin/python bench/run.py                   # every section, then RESULTS.md
    .venv/bin/python bench/run.py timing latency    # only these sections (others keep their last results)
    .venv/bin/python bench/run.py --render          # RESULTS.md from the JSON already in bench/results/
    .venv/bin/python bench/run.py --quick ...       # small counts (smoke run)

Each section runs in its own process with a time budget and writes bench/results/<section>.json; a section that
crashes or overruns is written as failed (with the error) and shown as failed in RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

# name -> (title, time budget in seconds for the full run)
SECTIONS = {
    "footprint": ("Firmware footprint", 60),
    "fuzz_mpy": ("Campaign: protocol fuzzing on the MicroPython unix port", 90),
    "timing": ("Pulse timing", 70),
    "latency": ("Safety latencies", 110),
    "amplitude": ("Amplitude and DC", 50),
    "host": ("Host: deploy, round trip, telemetry", 80),
    "vbspeed": ("Virtual board speed (15-minute session)", 45),
    "calibration": ("Virtual clock calibration against published RP2040 figures", 90),
    "fuzz_vb": ("Campaign: protocol fuzzing end to end", 45),
    "powerloss": ("Campaign: power loss during writes and deploy", 150),
    "faults": ("Campaign: random faults during stimulation", 50),
    "lock_attack": ("Campaign: USB attacks on a locked unit (issue 14)", 240),
    "lock_attack_emu": ("Campaign: USB attacks on a locked unit, emu engine (MicroPython image)", 900),
    "supervisor": ("Current supervisor on both engines: latencies, judged pairs, CPU load, calibration", 3000),
    "engines": ("Engines side by side: unix port models vs emulated silicon (MicroPython image)", 300),
    "unitcal": ("Units with tolerances: calibration before/after, the device's own view, the cap", 1500),
}


def run_one(name: str, quick: bool) -> dict:
    """In the child process: run the section, return its result (never raises)."""
    t0 = time.monotonic()
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    res = {"section": name, "title": SECTIONS[name][0], "started": started, "quick": quick}
    try:
        mod = importlib.import_module(f"sections.{name}")
        out = mod.run(quick=quick)
        res.update(out)
        figs = res.get("figures", [])
        res["figures"] = [f.to_dict() if isinstance(f, benchlib.Figure) else f for f in figs]
        failed = [f["name"] for f in res["figures"] if f.get("passed") is False]
        res["status"] = "ok"
        res["goals_missed"] = failed
    except BaseException as e:  # a section that fails is reported, not hidden
        res["status"] = "failed"
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()[-4000:]
        res.setdefault("figures", [])
        res["figures"] = [f.to_dict() if isinstance(f, benchlib.Figure) else f for f in res["figures"]]
    res["wall_s"] = round(time.monotonic() - t0, 2)
    return res


def run_section_process(name: str, quick: bool) -> dict:
    budget = SECTIONS[name][1] * (1 if not quick else 1)
    t0 = time.monotonic()
    path = benchlib.RESULTS_DIR / f"{name}.json"
    mark = time.time()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name] + (["--quick"] if quick else [])
    err = None
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=budget * 1.5 + 30)
        if p.returncode != 0:
            err = f"section process exited with {p.returncode}: {(p.stderr or p.stdout)[-2000:]}"
    except subprocess.TimeoutExpired as e:
        err = f"section overran its budget ({budget} s x 1.5 + 30 s) and was stopped"
        tail = (e.stderr or b"")
        if isinstance(tail, bytes):
            tail = tail.decode(errors="replace")
        err += ": " + tail[-1500:]
    if err is None and path.exists() and path.stat().st_mtime >= mark:
        res = json.loads(path.read_text())
        (benchlib.RESULTS_DIR / f"{name}.partial.json").unlink(missing_ok=True)
    else:
        res = {"section": name, "title": SECTIONS[name][0], "status": "failed", "quick": quick,
               "error": err or "section wrote no result", "figures": [],
               "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        part = benchlib.RESULTS_DIR / f"{name}.partial.json"
        if part.exists() and part.stat().st_mtime >= mark:
            res["counts"] = json.loads(part.read_text())
            res["notes"] = ["Counts are the campaign's last checkpoint before it was stopped."]
        res["wall_s"] = round(time.monotonic() - t0, 2)
        benchlib.write_result(name, res)
    return res


# ---- rendering ----------------------------------------------------------------------------------------------------

def _fmt(v):
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:
            return "—"
        a = abs(v)
        if a == 0:
            return "0"
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    return str(v)


def _goal(g):
    if not g:
        return "—"
    op, v = g
    return f"{op.replace('<=', '≤').replace('>=', '≥')} {_fmt(v)}"


def render(results: dict) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mi = benchlib.machine_info()
    lines = ["# picostim benchmark results", "",
             "Regenerated by `make bench` (bench/run.py); raw numbers in `bench/results/<section>.json`. Every figure",
             "was measured in the run that wrote it, its baseline in the same run. Virtual-board times are virtual",
             "RP2040 time (the board's clock), not host wall time, unless the unit says wall.", "",
             f"* Rendered: {now}",
             f"* Machine: {mi['cpu']}, {mi['cores']} cores, {mi['os']}",
             f"* Python {mi['python']}; MicroPython unix port {mi['micropython']}", ""]
    total = sum(1 for r in results.values() for f in r.get("figures", []) if f.get("goal"))
    met = sum(1 for r in results.values() for f in r.get("figures", []) if f.get("passed") is True)
    failed = [n for n, r in results.items() if r.get("status") != "ok"]
    lines += ["## Summary", "",
              f"* Sections: {len(results)} run, {len(results) - len(failed)} completed, {len(failed)} failed"
              + (f" ({', '.join(failed)})" if failed else ""),
              f"* Figures with a goal: {total}; goal met: {met}; missed: {total - met}", "",
              "| section | status | run date (UTC) | wall s | clock mode | cpu factor | figures (met/with goal) |",
              "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        figs = r.get("figures", [])
        g = [f for f in figs if f.get("goal")]
        status = "**FAILED**" if r.get("status") != "ok" else "ok"
        if r.get("quick"):
            status += " (quick)"
        clock = r.get("clock") or "—"
        factor = "not used" if clock == "model" else _fmt(r.get("cpu_factor"))
        lines.append(f"| {name} | {status} | {r.get('started', '—')} | {_fmt(r.get('wall_s'))} | {clock} | "
                     f"{factor} | {sum(1 for f in g if f.get('passed'))}/{len(g)} |")
    lines.append("")
    for name, r in results.items():
        lines += [f"## {r.get('title', name)} (`{name}`)", ""]
        if r.get("quick"):
            lines += ["*Quick run (reduced counts).*", ""]
        if r.get("status") != "ok":
            lines += [f"**FAILED**: {r.get('error', 'unknown error')}", ""]
            tb = r.get("traceback")
            if tb:
                lines += ["```", tb.strip()[-1500:], "```", ""]
        meta = []
        if r.get("clock"):
            meta.append(f"clock mode `{r['clock']}`")
        if r.get("cpu_factor") is not None and r.get("clock") != "model":
            meta.append(f"vb.cpu_factor {_fmt(r['cpu_factor'])}")
        if r.get("setup"):
            meta.append(r["setup"])
        if meta:
            lines += ["Setup: " + "; ".join(meta) + ".", ""]
        figs = r.get("figures", [])
        if figs:
            lines += ["| figure | goal | measured | baseline | pass | n | note |", "|---|---|---|---|---|---|---|"]
            for f in figs:
                base = _fmt(f.get("baseline"))
                if f.get("baseline_label") and f.get("baseline") is not None:
                    base += f" ({f['baseline_label']})"
                elif f.get("baseline_label"):
                    base = f["baseline_label"]
                ok = {True: "pass", False: "**FAIL**", None: "—"}[f.get("passed")]
                unit = f" {f['unit']}" if f.get("unit") else ""
                meas = _fmt(f.get("measured")) + (unit if f.get("measured") is not None else "")
                lines.append(f"| {f['name']} | {_goal(f.get('goal'))}{unit if f.get('goal') else ''} | "
                             f"{meas} | {base} | {ok} | {_fmt(f.get('n'))} | {f.get('note', '')} |")
            lines.append("")
        counts = r.get("counts")
        if counts:
            lines += ["Counts: " + "; ".join(f"{k} {_fmt(v)}" for k, v in counts.items()) + ".", ""]
        for note in r.get("notes", []):
            lines.append(f"* {note}")
        if r.get("notes"):
            lines.append("")
    return "\n".join(lines) + "\n"


def load_results(names) -> dict:
    out = {}
    for n in names:
        p = benchlib.RESULTS_DIR / f"{n}.json"
        if p.exists():
            out[n] = json.loads(p.read_text())
        else:
            out[n] = {"section": n, "title": SECTIONS[n][0], "status": "failed", "error": "not run", "figures": []}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sections", nargs="*", help=f"sections to run (default all): {', '.join(SECTIONS)}")
    ap.add_argument("--quick", action="store_true", help="reduced counts (smoke run)")
    ap.add_argument("--render", action="store_true", help="only render RESULTS.md from bench/results/")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        res = run_one(a.child, a.quick)
        benchlib.write_result(a.child, res)
        return 0
    unknown = [s for s in a.sections if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {unknown}; known: {', '.join(SECTIONS)}")
    if not a.render:
        t0 = time.monotonic()
        for name in a.sections or list(SECTIONS):
            t = time.monotonic()
            r = run_section_process(name, a.quick)
            figs = r.get("figures", [])
            missed = sum(1 for f in figs if f.get("passed") is False)
            print(f"{name:10s} {r.get('status'):7s} {time.monotonic() - t:6.1f} s  "
                  f"{len(figs)} figures, {missed} goals missed"
                  + (f"  [{r.get('error', '')[:200]}]" if r.get("status") != "ok" else ""), flush=True)
        print(f"total {time.monotonic() - t0:.1f} s")
    md = render(load_results(list(SECTIONS)))
    (benchlib.BENCH_DIR / "RESULTS.md").write_text(md)
    print(f"wrote {benchlib.BENCH_DIR / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
