"""Deploy benchmark on the virtual board: picostim deploy (full, no-change, one file changed, and the reflash of a
bundle the unit already has: one `hello` round trip) vs stock `mpremote fs cp -r` of the same files (full, and its
own skip-unchanged second run).

    .venv/bin/python bench/deploy_bench.py [--board handheld-home] [--repeat 3]

Writes bench/results/deploy.json. Each run starts from an empty flash directory.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from picostim import bundle, deploy, paths
from picostim.sim import VirtualBoard
from picostim.target import wait_alive
from picostim.transport import SerialTransport

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))


def write_image_dir(image: dict, root: Path) -> list[str]:
    for p, data in image.items():
        dest = root / p.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    return sorted({p.lstrip("/").split("/")[0] for p in image})


def mpremote_cp(port: str, src_dir: Path, top: list[str]) -> float:
    t0 = time.monotonic()
    subprocess.run([MPREMOTE, "connect", port, "fs", "cp", "-r", *top, ":"], cwd=src_dir, check=True,
                   capture_output=True, timeout=600)
    return time.monotonic() - t0


def one_round(board: str) -> dict:
    image = deploy.build_image(board)
    out = {"files": len(image) + 1, "bytes": sum(len(v) for v in image.values())}
    with VirtualBoard(board=board, clock="model", rig_port=None) as vb, SerialTransport(wait_alive(vb.port) or vb.port) as t:
        r = deploy.deploy(t, board, handshake=False)
        out["picostim_full_s"] = r.seconds
        out["picostim_full_bytes_sent"] = r.bytes_sent
        r = deploy.deploy(t, board, handshake=False)
        assert not r.changed
        out["picostim_nochange_s"] = r.seconds
        # one file changed: a different board.json content via a profile field the firmware ignores is not
        # possible without editing boards/, so change one compiled module's bytes in the image instead
        img2 = dict(image)
        victim = sorted(p for p in img2 if p.endswith(".mpy"))[0]
        img2[victim] = img2[victim] + b"\n"
        r = deploy.deploy(t, board, handshake=False, image=img2)
        out["picostim_onefile_s"] = r.seconds
        out["picostim_onefile_written"] = r.written
        r = deploy.deploy(t, board, handshake=True)
        out["picostim_full_with_handshake_restore_s"] = r.seconds
        # the application runs again: reflashing the bundle it has is decided by the hello it answers
        b = bundle.build(board)
        recheck, fallbacks = [], 0
        for _ in range(7):
            r = deploy.deploy(t, bundle=b, verify=False)
            assert not r.changed and r.bytes_sent == 0
            fallbacks += 0 if r.quick else 1     # no hello answer in time: a full hash check was done instead
            recheck.append(r.seconds)
        out["picostim_bundle_recheck_s"] = statistics.median(recheck)
        out["picostim_bundle_recheck_max_s"] = max(recheck)
        out["picostim_bundle_recheck_fallbacks"] = fallbacks
    with VirtualBoard(board=board, clock="model", rig_port=None) as vb, tempfile.TemporaryDirectory() as d:
        wait_alive(vb.port)
        top = write_image_dir(image, Path(d))
        out["mpremote_cp_full_s"] = mpremote_cp(vb.port, Path(d), top)
        out["mpremote_cp_nochange_s"] = mpremote_cp(vb.port, Path(d), top)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--board", default="handheld-home")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(paths.REPO_ROOT / "bench" / "results" / "deploy.json"))
    a = ap.parse_args()
    rounds = [one_round(a.board) for _ in range(a.repeat)]
    keys = [k for k, v in rounds[0].items() if k.endswith("_s")]
    med = {k: statistics.median(r[k] for r in rounds) for k in keys}
    res = {"board": a.board, "repeat": a.repeat, "median_s": med, "rounds": rounds,
           "files": rounds[0]["files"], "image_bytes": rounds[0]["bytes"],
           "speedup_full": med["mpremote_cp_full_s"] / med["picostim_full_s"],
           "speedup_nochange": med["mpremote_cp_nochange_s"] / med["picostim_nochange_s"],
           "speedup_bundle_recheck": med["mpremote_cp_nochange_s"] / med["picostim_bundle_recheck_s"],
           "host": {"python": platform.python_version(), "machine": platform.machine()},
           "target": "picostim virtual board (pty)"}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    for k, v in med.items():
        print(f"{k:40s} {v:8.3f} s")
    print(f"full deploy speed-up vs mpremote cp: {res['speedup_full']:.1f}x; no-change: {res['speedup_nochange']:.1f}x; "
          f"bundle recheck: {res['speedup_bundle_recheck']:.0f}x")


if __name__ == "__main__":
    main()
