"""Flash and provision many boards at once: one worker thread per board (the work is serial I/O), a rich progress
bar per board and a summary table (port, unique_id, board, version, result, seconds)."""
from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import deploy as deploy_mod
from .target import open_target
from .transport import SerialTransport


@dataclass
class BoardResult:
    port: str
    board: str
    unique_id: str = "?"
    version: str = "?"
    result: str = "pending"
    ok: bool = False
    seconds: float = 0.0
    detail: str = ""
    written: int = 0
    removed: int = 0
    bundle: str = ""
    quick: bool = False


def flash_one(spec: str, board: str, uf2_file: Path | None = None, firmware_dir: Path | None = None,
              progress=None, handshake: bool = True, bundle=None, verify: bool = True,
              reprovision: bool = False, signer=None) -> BoardResult:
    """UF2 (optional) + application deploy on one board; never raises (the result says what happened). A locked
    unit is unlocked with `signer` (picostim.auth.Signer), flashed, and locked again."""
    t0 = time.monotonic()
    res = BoardResult(port=spec, board=board)
    progress = progress or (lambda *a, **k: None)
    try:
        with open_target(spec, board=board, deploy_app=False) as tgt:
            res.port = spec if spec.startswith("sim") else tgt.port
            port = tgt.port
            was_locked = None
            if signer is not None:
                with SerialTransport(port) as t:
                    was_locked = deploy_mod.unlock_for_flash(t, signer)
            if uf2_file is not None:
                from . import uf2
                port = uf2.install(Path(uf2_file), port=port, progress=progress)
            with SerialTransport(port) as t:
                r = deploy_mod.deploy(t, board, firmware_dir=firmware_dir, handshake=handshake, progress=progress,
                                      bundle=bundle, verify=verify, reprovision=reprovision)
                if was_locked is not None:
                    deploy_mod.relock(t, signer)
            res.written, res.removed = len(r.written), len(r.removed)
            res.version, res.bundle, res.quick = r.version, r.bundle, r.quick
            if r.hello:
                res.unique_id = str(r.hello.get("uid", "?"))
                res.version = str(r.hello.get("fw", r.version))
            res.ok = True
            res.result = (f"{len(r.written)} written, {len(r.removed)} removed, {r.bytes_sent / 1000:.1f} kB, "
                          f"all verified" if r.changed else
                          f"up to date (bundle reported, {r.seconds * 1000:.0f} ms)" if r.quick else
                          "up to date, every file verified, nothing sent")
    except Exception as e:  # noqa: BLE001 - one board's failure must not stop the tray
        res.result = "FAILED"
        res.detail = str(e) or type(e).__name__
    res.seconds = time.monotonic() - t0
    return res


def flash_many(specs: list[str], board: str, uf2_file: Path | None = None, firmware_dir: Path | None = None,
               console: Console | None = None, handshake: bool = True, show_progress: bool = True,
               bundle=None, verify: bool = True, reprovision: bool = False, signer=None) -> list[BoardResult]:
    console = console or Console()
    results: list[BoardResult | None] = [None] * len(specs)
    cols = [TextColumn("{task.fields[port]:<14}"), TextColumn("{task.fields[stage]:<10}"), BarColumn(),
            DownloadColumn(), TimeElapsedColumn()]
    ctx = Progress(*cols, console=console, transient=False) if show_progress else contextlib.nullcontext()
    with ctx as prog:
        tasks = [prog.add_task("", total=None, port=s[-14:], stage="start") if prog else None for s in specs]
        lock = threading.Lock()

        def make_cb(task):
            def cb(kind, **kw):
                if prog is None:
                    return
                with lock:
                    if kind == "stage":
                        prog.update(task, stage=kw["stage"])
                    elif kind == "plan":
                        prog.update(task, total=max(1, kw["total_bytes"]), completed=0, stage="sending")
                        if not kw["total_bytes"]:
                            prog.update(task, completed=1)
                    elif kind == "bytes":
                        prog.advance(task, kw["n"])
            return cb

        def work(i):
            results[i] = flash_one(specs[i], board, uf2_file, firmware_dir, make_cb(tasks[i]), handshake,
                                   bundle=bundle, verify=verify, reprovision=reprovision, signer=signer)
            if prog is not None:
                with lock:
                    prog.update(tasks[i], stage="done" if results[i].ok else "FAILED")

        threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(specs))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    return [r for r in results if r is not None]


def summary_table(results: list[BoardResult]) -> Table:
    t = Table(title="picostim flash")
    for c in ("port", "unique_id", "board", "version", "bundle", "result", "seconds"):
        t.add_column(c, justify="right" if c == "seconds" else "left", no_wrap=c in ("unique_id", "version", "bundle"))
    for r in results:
        style = "green" if r.ok else "red"
        t.add_row(r.port, r.unique_id, r.board, r.version, r.bundle[:12],
                  f"[{style}]{r.result}[/]" + (f"\n{r.detail}" if r.detail else ""), f"{r.seconds:.1f}")
    return t
