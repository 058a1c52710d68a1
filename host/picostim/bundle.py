"""Firmware bundles: one versioned file holding everything `picostim flash` puts on a unit.

A bundle is a zip (fixed timestamps and order: the same sources give the same bytes) of the application image as
`picostim.deploy.build_image` makes it -- the compiled .mpy files, boot.py/main.py, `board.json` (the board
profile), `programs.json` -- plus `manifest.json`: firmware version, board, the sha256 of every file and `bundle`,
the sha256 of all of them together (`deploy.bundle_hash`). The same manifest is written to the unit, whose `hello`
then reports the bundle hash.

    b = bundle.build("handheld-home"); path = bundle.write(b, "out/")     # picostim build
    b = bundle.read(path)                                                   # checked: hashes, names, profile
    deploy.deploy(transport, bundle=b)                                      # picostim flash --bundle
"""
from __future__ import annotations

import json
import re
import zipfile
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from . import boards, deploy

SUFFIX = ".psbundle"
MANIFEST_NAME = "manifest.json"
MAX_FILE_BYTES = 1 << 20          # an RP2040 has 2 MB of flash in all; anything bigger is not a bundle
MAX_TOTAL_BYTES = 2 << 20
MAX_FILES = 256
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# what zipfile raises on damaged archives (bad headers, unsupported versions/methods, encryption, broken deflate)
_ZIP_ERRORS = (OSError, zipfile.BadZipFile, ValueError, NotImplementedError, RuntimeError, EOFError, zlib.error,
               KeyError, IndexError, struct.error)


class BundleError(ValueError):
    """Not a usable bundle: unreadable, corrupt, tampered with, or for no known board."""


@dataclass(frozen=True)
class Bundle:
    board: str
    fw: str
    image: dict            # device path ("/lib/app.mpy") -> bytes, without the manifest
    hash: str

    @property
    def profile(self) -> dict:
        return json.loads(self.image["/board.json"])

    @property
    def manifest(self) -> bytes:
        return deploy.make_manifest(self.image, self.fw, self.board)

    def filename(self) -> str:
        return f"picostim-{self.board}-{self.fw}-{self.hash[:12]}{SUFFIX}"


def build(board: str, firmware_dir: Path | None = None) -> Bundle:
    """Compile and collect the image for `board` (a profile name from boards/, or a profile file)."""
    image = deploy.build_image(board, firmware_dir)
    name = boards.load(board)["name"] if Path(board).suffix else board
    version = deploy.firmware_version(firmware_dir)
    return Bundle(board=name, fw=version, image=image, hash=deploy.bundle_hash(image, version, name))


def write(b: Bundle, out: str | Path | None = None) -> Path:
    """Write the bundle to `out` (a file, or a directory for the default name); returns the path."""
    path = Path(out) if out is not None else Path(b.filename())
    if path.is_dir():
        path = path / b.filename()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in [(MANIFEST_NAME, b.manifest)] + [(p.lstrip("/"), d) for p, d in sorted(b.image.items())]:
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    tmp.replace(path)
    return path


def read(path: str | Path) -> Bundle:
    """Read and check a bundle: every file listed with the right sha256, nothing else, the bundle hash recomputed,
    the board profile valid. Raises BundleError with the reason."""
    path = Path(path)
    try:
        z = zipfile.ZipFile(path)
    except _ZIP_ERRORS as e:
        raise BundleError(f"{path}: not a picostim bundle ({e})") from e
    with z:
        infos = z.infolist()
        if len(infos) > MAX_FILES + 1:
            raise BundleError(f"{path}: {len(infos)} entries: not a picostim bundle")
        if sum(i.file_size for i in infos) > MAX_TOTAL_BYTES or any(i.file_size > MAX_FILE_BYTES for i in infos):
            raise BundleError(f"{path}: contents larger than a unit's flash: not a picostim bundle")
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise BundleError(f"{path}: duplicate entries")
        if MANIFEST_NAME not in names:
            raise BundleError(f"{path}: no {MANIFEST_NAME}: not a picostim bundle")
        try:
            files = {n: z.read(n) for n in names}
        except _ZIP_ERRORS as e:   # CRC errors, truncation, damaged headers
            raise BundleError(f"{path}: corrupt: {e}") from e
    try:
        man = json.loads(files.pop(MANIFEST_NAME))
    except ValueError as e:
        raise BundleError(f"{path}: {MANIFEST_NAME} is not JSON: {e}") from e
    if not (isinstance(man, dict) and man.get("format") == deploy.MANIFEST_FORMAT
            and isinstance(man.get("fw"), str) and isinstance(man.get("board"), str)
            and isinstance(man.get("files"), dict) and isinstance(man.get("bundle"), str)):
        raise BundleError(f"{path}: {MANIFEST_NAME} is not a format-{deploy.MANIFEST_FORMAT} bundle manifest")
    listed = man["files"]
    image = {}
    for name, data in files.items():
        if not _SAFE_NAME.match(name) or ".." in name.split("/"):
            raise BundleError(f"{path}: unsafe file name {name!r}")
        dev = "/" + name
        want = listed.get(dev)
        if want is None:
            raise BundleError(f"{path}: {name} is not in the manifest")
        if not (isinstance(want, str) and _HEX64.match(want)) or deploy.sha256(data) != want:
            raise BundleError(f"{path}: {name}: sha256 does not match the manifest (corrupt or altered)")
        image[dev] = data
    missing = sorted(set(listed) - set(image))
    if missing:
        raise BundleError(f"{path}: files in the manifest but not in the bundle: {', '.join(missing)}")
    for need in ("/board.json", "/programs.json", "/main.py"):
        if need not in image:
            raise BundleError(f"{path}: no {need.lstrip('/')}: not an application bundle")
    got = deploy.bundle_hash(image, man["fw"], man["board"])
    if got != man["bundle"]:
        raise BundleError(f"{path}: bundle hash {man['bundle'][:12]}... does not match its contents ({got[:12]}...)")
    try:
        profile = json.loads(image["/board.json"])
        boards.validate(profile)
    except (ValueError, boards.BoardError) as e:
        raise BundleError(f"{path}: board profile: {e}") from e
    if profile.get("name") != man["board"]:
        raise BundleError(f"{path}: manifest says board {man['board']!r}, its profile is {profile.get('name')!r}")
    return Bundle(board=man["board"], fw=man["fw"], image=image, hash=got)
