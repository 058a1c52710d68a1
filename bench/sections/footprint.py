"""Firmware footprint: .mpy size (mpy-cross -march=armv6m, the files a deploy sends), heap use of the running
application under an RP2040-sized heap (the deployed .mpy files loaded by the MicroPython unix port), the
smallest heap that survives a protocol workload, and the control-loop time per iteration.

Caveats stated with the figures: the unix port is 64-bit, so heap figures are upper bounds for the 32-bit RP2040
(pointer-sized objects are twice as large); loop time is host time x the virtual board's CPU factor (the same
reference-loop calibration the virtual board uses), CPU work only — peripheral register accesses cost extra on a
Pico."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from benchlib import MICROPYTHON, MPY_CROSS, REPO, Figure, board_profile, pct
from sections.fuzz_mpy import FAKES, HEAP_KB, fuzz

FW = REPO / "firmware"


def sources():
    return [FW / "boot.py", FW / "main.py"] + sorted((FW / "lib").glob("*.py"))


def compile_all(out_dir: Path) -> dict:
    sizes = {}
    for src in sources():
        rel = src.relative_to(FW)
        dst = out_dir / (src.stem + ".mpy")
        r = subprocess.run([str(MPY_CROSS), "-march=armv6m", "-o", str(dst), str(src)], capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"mpy-cross -march=armv6m failed on {rel}: {r.stderr}")
        sizes[str(rel)] = {"mpy": dst.stat().st_size, "py": src.stat().st_size}
    return sizes


def loop_time(lib_dir: Path, iters: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="psloop-") as d:
        env = dict(os.environ)
        env["MICROPYPATH"] = os.pathsep.join([str(FAKES), str(lib_dir)])
        r = subprocess.run([str(MICROPYTHON), "-X", f"heapsize={HEAP_KB}k", str(REPO / "bench" / "mpy" / "loop_time.py"),
                            str(REPO / "boards" / "handheld-home.json"), str(REPO / "boards" / "programs.json"), d,
                            str(iters)], capture_output=True, text=True, timeout=120, env=env)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    if r.returncode != 0 or not lines:
        raise RuntimeError(f"loop_time.py failed: {(r.stdout + r.stderr)[-1500:]}")
    res = json.loads(lines[-1][7:])
    times = sorted(int(ln.split()[1]) for ln in r.stdout.splitlines() if ln.startswith("T "))
    res.update(iters=len(times), p50_us=pct(times, 50), p99_us=pct(times, 99), max_us=times[-1])
    return res


def run(quick: bool = False) -> dict:
    prof = board_profile()
    with tempfile.TemporaryDirectory(prefix="psmpy-") as d:
        lib = Path(d)
        sizes = compile_all(lib)
        for name in ("boot.mpy", "main.mpy"):       # boot/main run as scripts, keep them off the import path
            (lib / name).unlink()
        n = 1500 if quick else 4000
        work = fuzz(n, seed=99, lib_dir=lib)
        # smallest heap (KB) that runs the same workload without MemoryError
        min_ok = None
        for kb in (64, 80, 96, 112, 128, 144, 160, 176, 192):
            try:
                fuzz(n, seed=99, lib_dir=lib, heap_kb=kb)
                min_ok = kb
                break
            except MemoryError:
                continue
        lt = loop_time(lib, 500 if quick else 3000)
    # the virtual board's calibration: RP2040 ns per reference-loop iteration / host ns per iteration (4000 of them)
    factor = prof["mcu"]["vclock"]["ref_loop_ns"] / (lt["ref_loop_us"] * 1000 / 4000)
    total_mpy = sum(v["mpy"] for v in sizes.values())
    total_py = sum(v["py"] for v in sizes.values())
    figs = [
        Figure("firmware .mpy total (armv6m)", "bytes", total_mpy, baseline=total_py, baseline_label=".py sources",
               n=len(sizes), note="largest: " + ", ".join(f"{k} {v['mpy']}" for k, v in
                                                          sorted(sizes.items(), key=lambda kv: -kv[1]["mpy"])[:3])),
        Figure("heap in use after boot (App built, after gc)", "bytes", work["heap_after_gc"],
               baseline=HEAP_KB * 1024, baseline_label="heap given (RP2040-sized)", note="64-bit unix port: upper bound"),
        Figure("live heap after GC, peak under a protocol workload (sampled every 64 inputs)", "bytes",
               work["heap_peak_sampled"],
               goal=("<=", HEAP_KB * 1024), baseline=HEAP_KB * 1024, baseline_label="heap given", n=work["inputs"]),
        Figure("smallest heap that runs the workload", "KB", min_ok, goal=("<=", HEAP_KB), baseline=HEAP_KB,
               baseline_label="RP2040-sized heap", n=work["inputs"], note="searched in 16 KB steps"),
        Figure("control-loop iteration, p50 (RP2040-equivalent, CPU only)", "us", lt["p50_us"] * factor,
               goal=("<=", 4000), baseline=4000, baseline_label="LOOP_MS period", n=lt["iters"],
               note=f"host p50 {lt['p50_us']} us x cpu factor {factor:.1f}"),
        Figure("control-loop iteration, p99 (RP2040-equivalent, CPU only)", "us", lt["p99_us"] * factor,
               goal=("<=", prof["limits"]["wdt_timeout_ms"] * 1000 / 2), baseline_label="goal: half the WDT period",
               n=lt["iters"], note=f"max {lt['max_us'] * factor:.0f} us; includes GC pauses and host scheduling "
                                   "noise (2 shared cores), scaled by the same factor"),
    ]
    return {"figures": figs, "clock": "unix port, no virtual board", "cpu_factor": factor,
            "counts": {"files": len(sizes), "workload inputs": work["inputs"]},
            "setup": f"mpy-cross -march=armv6m; MicroPython unix port -X heapsize={HEAP_KB}k loading the armv6m .mpy "
                     "files with recording machine/rp2 stand-ins",
            "details": {"sizes": sizes, "workload": {k: v for k, v in work.items() if k != "violations"},
                        "loop": lt, "min_heap_kb": min_ok}}
