"""Issue 15: the README tells a new user how to run the command, about selftest, every environment variable the
code reads, and shell completion."""
import re
from pathlib import Path

from picostim import paths

README = (paths.REPO_ROOT / "README.md").read_text()


def test_readme_covers_venv_selftest_env_and_completion():
    assert ". .venv/bin/activate" in README and ".venv/bin/picostim" in README
    assert "picostim selftest" in README
    assert "_PICOSTIM_COMPLETE=bash_source picostim" in README


def test_every_environment_variable_the_code_reads_is_documented():
    used = set()
    for p in (paths.REPO_ROOT / "host" / "picostim").rglob("*.py"):
        used |= set(re.findall(r"environ(?:\.get)?[\(\[]\s*\"(PICOSTIM_[A-Z0-9_]+)", p.read_text()))
    assert used >= {"PICOSTIM_PORT", "PICOSTIM_SIM_CLOCK"}
    missing = {v for v in used if f"`{v}`" not in README}
    assert not missing, missing
