"""Firmware bundles without a board: deterministic build, every check of `bundle.read` on damaged or altered
files (each refused with a reason, never half-read), and the CLI's clear errors."""
import io
import json
import zipfile

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from picostim import bundle, deploy
from picostim.cli import main as cli

BOARD = "handheld-home"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundle")
    r = CliRunner().invoke(cli, ["build", "--board", BOARD, "-o", str(d), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    return info, d


def test_build_writes_one_versioned_checked_file(built):
    info, d = built
    path = d / info["path"].rsplit("/", 1)[-1]
    assert path.name == f"picostim-{BOARD}-{info['fw']}-{info['bundle'][:12]}{bundle.SUFFIX}"
    b = bundle.read(path)
    image = deploy.build_image(BOARD)
    assert b.image == image                              # the same bytes a source deploy sends
    assert b.hash == info["bundle"] == deploy.bundle_hash(image, deploy.firmware_version(), BOARD)
    assert any(p.endswith(".mpy") for p in b.image) and b.profile["name"] == BOARD
    man = json.loads(zipfile.ZipFile(path).read("manifest.json"))
    assert man["bundle"] == b.hash and set(man["files"]) == set(image)
    assert all(man["files"][p] == deploy.sha256(image[p]) for p in image)
    # deterministic: building again gives the same bytes
    again = bundle.write(bundle.build(BOARD), d / "again.psbundle")
    assert again.read_bytes() == path.read_bytes()


def _rezip(src, edit):
    """Rewrite a bundle's entries through edit(dict name->bytes) (-> dict)."""
    with zipfile.ZipFile(src) as z:
        files = {n: z.read(n) for n in z.namelist()}
    files = edit(files)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    return buf.getvalue()


def _resign(files):
    """Recompute the manifest as an honest tool would (file hashes + bundle hash) after an edit."""
    man = json.loads(files["manifest.json"])
    image = {"/" + n: d for n, d in files.items() if n != "manifest.json"}
    man["files"] = {p: deploy.sha256(d) for p, d in image.items()}
    man["bundle"] = deploy.bundle_hash(image, man["fw"], man["board"])
    files["manifest.json"] = json.dumps(man).encode()
    return files


def _over_cap(files):
    prof = json.loads(files["board.json"])
    prof["limits"]["cap_ua"] = 5000
    files["board.json"] = json.dumps(prof).encode()
    return _resign(files)


CASES = {
    "file altered": (lambda f: {**f, "lib/app.mpy": f["lib/app.mpy"] + b"x"}, "sha256 does not match"),
    "extra file": (lambda f: {**f, "lib/evil.py": b"print(1)"}, "not in the manifest"),
    "missing file": (lambda f: {k: v for k, v in f.items() if k != "lib/ui.mpy"}, "not in the bundle"),
    "unsafe name": (lambda f: {**f, "../x.py": b""}, "unsafe file name"),
    "no manifest": (lambda f: {k: v for k, v in f.items() if k != "manifest.json"}, "no manifest.json"),
    "manifest not json": (lambda f: {**f, "manifest.json": b"{nope"}, "not JSON"),
    "wrong bundle hash": (lambda f: {**f, "manifest.json": f["manifest.json"].replace(b'"bundle":"', b'"bundle":"0')},
                          "does not match its contents"),
    "profile over the firmware ceiling": (_over_cap, "board profile"),
    "no board profile": (lambda f: _resign({k: v for k, v in f.items() if k != "board.json"}), "no board.json"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_damaged_bundles_refused_with_reason(built, tmp_path, case):
    info, _ = built
    edit, reason = CASES[case]
    bad = tmp_path / "bad.psbundle"
    bad.write_bytes(_rezip(info["path"], edit))
    with pytest.raises(bundle.BundleError, match=reason):
        bundle.read(bad)
    r = CliRunner().invoke(cli, ["flash", "--bundle", str(bad), "-p", "/dev/null-no-such-port"])
    assert r.exit_code == 1 and reason.split()[0] in r.output and "Traceback" not in r.output


def test_not_a_zip_and_size_limits(tmp_path):
    p = tmp_path / "x.psbundle"
    p.write_bytes(b"hello")
    with pytest.raises(bundle.BundleError, match="not a picostim bundle"):
        bundle.read(p)
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", "{}")
        z.writestr("big.bin", b"\0" * (bundle.MAX_FILE_BYTES + 1))       # compresses to almost nothing
    with pytest.raises(bundle.BundleError, match="larger than"):
        bundle.read(p)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_byte_damage_is_refused_or_harmless(built, data):
    """Flip bytes anywhere in the file: read() refuses it, or (damage only in zip bookkeeping nobody reads) returns
    exactly the original bundle -- never a different image."""
    info, _ = built
    raw = bytearray(open(info["path"], "rb").read())
    good = bundle.read(info["path"])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".psbundle") as f:
        f.write(raw)
        f.flush()
        try:
            b = bundle.read(f.name)
        except bundle.BundleError:
            return
    assert b.image == good.image and b.hash == good.hash


def test_build_errors_are_one_line(tmp_path):
    r = CliRunner().invoke(cli, ["build", "--board", "no-such-board"])
    assert r.exit_code == 1 and "unknown board" in r.output and "Traceback" not in r.output
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = CliRunner().invoke(cli, ["build", "--board", BOARD, "-o", str(blocker / "sub" / "b.psbundle")])
    assert r.exit_code == 1 and "cannot write the bundle" in r.output
