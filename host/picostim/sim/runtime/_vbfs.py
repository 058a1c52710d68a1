# The flash filesystem: the board's flash directory mounted as "/", with every write reported to the board so the
# rig can cut power in the middle of one (a torn write, as on a real power loss).
import _vblink


class _File:
    def __init__(self, f, path):
        self._f = f
        self._path = path

    def write(self, buf):
        allowed = _vblink.call("fs_write", self._path, len(buf))
        if allowed is not None and 0 <= allowed < len(buf):
            if allowed:
                self._f.write(buf[:allowed])
            self._f.close()
            _vblink.call("power_dead")
            while True:
                pass
        return self._f.write(buf)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self._f.close()

    def __iter__(self):
        return iter(self._f)


class FlashFS:
    def __init__(self, posix, root=None):
        self._v = posix
        self._root = root.rstrip("/") if root else None

    def mount(self, readonly, mkfs):
        pass

    def umount(self):
        pass

    def open(self, path, mode):
        f = self._v.open(path, mode)
        if "w" in mode or "a" in mode or "+" in mode:
            return _File(f, path)
        return f

    def ilistdir(self, path):
        # LittleFS on a Pico reports (name, type, inode, size); VfsPosix leaves out the size.
        base = path.rstrip("/")
        for e in self._v.ilistdir(path):
            size = 0
            if e[1] == 0x8000:
                try:
                    size = self._v.stat(base + "/" + e[0])[6]
                except OSError:
                    pass
            yield (e[0], e[1], 0, size)

    def chdir(self, path):
        return self._v.chdir(path)

    def getcwd(self):
        return self._v.getcwd()

    def mkdir(self, path):
        return self._v.mkdir(path)

    def remove(self, path):
        return self._v.remove(path)

    def rename(self, a, b):
        if self._root is None:
            return self._v.rename(a, b)
        # VfsPosix(root).rename resolves both paths into one shared buffer (the second overwrites the first), so
        # it always fails with ENOENT; a rootless VfsPosix with host paths renames atomically (replaces b).
        import vfs
        a = a if a.startswith("/") else "/" + a
        b = b if b.startswith("/") else "/" + b
        return vfs.VfsPosix().rename(self._root + a, self._root + b)

    def rmdir(self, path):
        return self._v.rmdir(path)

    def stat(self, path):
        return self._v.stat(path)

    def statvfs(self, path):
        # Report the 1.4 MB LittleFS a Pico has, not the host disk.
        return (4096, 4096, 352, 300, 300, 0, 0, 0, 0, 255)
