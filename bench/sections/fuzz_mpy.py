"""Campaign: protocol fuzzing against the firmware's real request handler on the MicroPython unix port.

Invariants checked by the harness (bench/mpy/fuzz_protocol.py) for every input: no exception escapes the
handler, every line gets exactly one JSON reply with a known error code, no ISET duty write above the cap (at the
PWM boundary), and a rejected request changes no output, register, pin, setting or stored file."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from benchlib import MICROPYTHON, MPY_CROSS, REPO, Figure
from fuzzgen import generate

FAKES = REPO / "firmware" / "tests" / "mpy" / "fakes"
HARNESS = REPO / "bench" / "mpy" / "fuzz_protocol.py"
HEAP_KB = 256          # the RP2040's ~192 KB GC heap in 4-byte words; this unix port's words are 8 bytes


def compile_lib(out_dir: Path) -> Path:
    """firmware/lib compiled as a deploy does (mpy-cross -march=armv6m): the form the device imports. The unix
    port loads these bytecode-only files, so the heap holds what an RP2040's would (not the compiler's leftovers)."""
    for src in sorted((REPO / "firmware" / "lib").glob("*.py")):
        r = subprocess.run([str(MPY_CROSS), "-march=armv6m", "-o", str(out_dir / (src.stem + ".mpy")), str(src)],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"mpy-cross failed on {src.name}: {r.stderr}")
    return out_dir


def fuzz(n: int, seed: int, board: str = "handheld-home", heap_kb: int = HEAP_KB, step_every: int = 1,
         inputs=None, debug=False, lib_dir=None) -> dict:
    """Run n generated inputs (or `inputs`) through the harness. lib_dir: where the firmware modules come from
    (default: firmware/lib compiled to armv6m .mpy, as deployed)."""
    if lib_dir is None:
        with tempfile.TemporaryDirectory(prefix="psmpylib-") as d:
            return fuzz(n, seed, board, heap_kb, step_every, inputs, debug, compile_lib(Path(d)))
    inputs = generate(n, seed) if inputs is None else inputs
    with tempfile.TemporaryDirectory(prefix="psfuzz-") as d:
        d = Path(d)
        flash = d / "flash"
        flash.mkdir()
        inp = d / "inputs.bin"
        inp.write_bytes(b"".join(len(x).to_bytes(4, "little") + x for x in inputs))
        env = dict(os.environ)
        env["MICROPYPATH"] = os.pathsep.join([str(FAKES), str(lib_dir)])
        r = subprocess.run([str(MICROPYTHON), "-X", f"heapsize={heap_kb}k", str(HARNESS),
                            str(REPO / "boards" / f"{board}.json"), str(REPO / "boards" / "programs.json"),
                            str(flash), str(inp), str(step_every)] + (["debug"] if debug else []),
                           capture_output=True, text=True, timeout=600, env=env, cwd=str(d))
    if "memory allocation failed" in r.stdout + r.stderr:
        raise MemoryError(f"heap {heap_kb} KB exhausted: {(r.stdout + r.stderr)[-600:]}")
    out = r.stdout + r.stderr
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    if debug:
        print("\n".join(l for l in out.splitlines() if l.startswith(("GC", "HEAP"))))
    if r.returncode != 0 or not lines:
        raise RuntimeError(f"fuzz harness failed (exit {r.returncode}): {out[-2000:]}")
    res = json.loads(lines[-1][len("RESULT "):])
    if debug:
        print(out)
    res["seed"] = seed
    return res


def run(quick: bool = False) -> dict:
    n = 2000 if quick else 12000
    res = fuzz(n, seed=20261123)
    figs = [
        Figure("inputs run through the firmware handler", "", res["inputs"], goal=(">=", n), n=res["inputs"],
               note=f"{res['lines']} request lines; {res['replies_ok']} accepted, {res['replies_err']} rejected"),
        Figure("crashes (exception out of the handler)", "", res["crashes"], goal=("==", 0), n=res["inputs"]),
        Figure("invariant violations (reply, cap, rejected-changes-nothing)", "", res["n_violations"],
               goal=("==", 0), n=res["inputs"]),
        Figure("highest ISET write at the PWM boundary", "uA", round(res["max_iset_ua"], 1),
               goal=("<=", 400), baseline=400, baseline_label="board cap", n=res["iset_writes"]),
        Figure("live heap after GC, peak (sampled every 64 inputs)", "bytes", res["heap_peak_sampled"],
               baseline=HEAP_KB * 1024, baseline_label="RP2040-sized heap given"),
    ]
    return {"figures": figs, "clock": "unix port, no virtual board", "counts": {"inputs": res["inputs"], "request lines": res["lines"],
                                        "accepted": res["replies_ok"], "rejected": res["replies_err"],
                                        "violations": res["n_violations"], "crashes": res["crashes"]},
            "details": res,
            "setup": f"MicroPython unix port, -X heapsize={HEAP_KB}k, firmware/lib as deployed (armv6m .mpy) + recording "
                     "machine/rp2 stand-ins "
                     "(firmware/tests/mpy/fakes), the firmware's flash paths pointed at a temp dir; seeded generator "
                     f"bench/fuzzgen.py seed {res['seed']}",
            "notes": ["Rejection codes seen: " + ", ".join(f"{k} {v}" for k, v in sorted(res["codes"].items(),
                                                                                      key=lambda kv: -kv[1]))]
            + ([f"First violations: {res['violations'][:5]}"] if res["violations"] else [])}
