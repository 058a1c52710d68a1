"""Build hooks: the package carries the project's shared trees (firmware/, boards/, hil_tests/) as package data.

They live once, at the top of the repository; a build copies them into picostim/_data/ (an sdist holds the copy,
so a wheel built from the sdist gets them too). An editable install reads them from the checkout (picostim.paths).
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
TREES = ("firmware", "boards", "hil_tests")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.mpy", ".hypothesis", ".pytest_cache", "hil-report")


def _source(name: str) -> Path:
    packed = HERE / "picostim" / "_data" / name          # inside an unpacked sdist
    if packed.is_dir():
        return packed
    tree = HERE.parent / name                             # a checkout: host/../<name>
    if not tree.is_dir():
        raise SystemExit(f"picostim build: {name}/ not found (neither {packed} nor {tree})")
    return tree


def _copy_trees(dest_pkg: Path) -> None:
    for name in TREES:
        dest = dest_pkg / "_data" / name
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(_source(name), dest, ignore=IGNORE)


class BuildPy(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return        # editable: picostim.paths finds the checkout's trees
        _copy_trees(Path(self.build_lib) / "picostim")


class Sdist(sdist):
    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        _copy_trees(Path(base_dir) / "picostim")


setup(cmdclass={"build_py": BuildPy, "sdist": Sdist})
