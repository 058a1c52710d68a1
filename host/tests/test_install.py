"""The released toolkit works without a checkout: build the sdist and, from it, the wheel (as `python -m build`
does), install the wheel alone into a fresh venv in a temp dir, and from a directory outside any checkout run
`picostim demo` and a HIL selection.

The new venv installs only the wheel (--no-deps); its dependencies (pinned, already installed in this venv) are
reached through a .pth line to this venv's site-packages, which does not activate this venv's editable picostim.
"""
import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

from picostim import bundle, paths

HOST = Path(__file__).resolve().parents[1]
REPO = HOST.parent


def _run(cmd, cwd, env, timeout=300):
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{cmd} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def test_wheel_installed_alone_runs_demo_and_hil_from_anywhere(tmp_path):
    dist = tmp_path / "dist"
    env = {k: v for k, v in os.environ.items() if k not in ("PICOSTIM_ROOT", "PYTHONPATH", "VIRTUAL_ENV")}
    _run([sys.executable, "-m", "build", "--no-isolation", "-o", str(dist), str(HOST)], cwd=tmp_path, env=env)
    wheel = next(dist.glob("picostim-*.whl"))
    sdist = next(dist.glob("picostim-*.tar.gz"))
    # both carry the shared trees, each file once, identical to the checkout's
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for rel in ("firmware/lib/pscodes.py", "firmware/main.py", "boards/handheld-home.json",
                    "boards/programs.json", "hil_tests/test_safety.py", "hil_tests/conftest.py"):
            assert z.read(f"picostim/_data/{rel}") == (REPO / rel).read_bytes(), rel
        assert not any("__pycache__" in n for n in names)
    with tarfile.open(sdist) as t:
        assert any(n.endswith("picostim/_data/firmware/lib/app.py") for n in t.getnames())

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path, env=env)
    py = venv / "bin" / "python"
    site = _run([str(py), "-c", "import sysconfig;print(sysconfig.get_paths()['purelib'])"], tmp_path, env).stdout
    (Path(site.strip()) / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)],
         cwd=tmp_path, env=env)

    work = tmp_path / "anywhere"
    work.mkdir()
    env = {**env, "XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}"}
    where = json.loads(_run([str(py), "-c", "import json,picostim,picostim.paths as p;print(json.dumps("
                             "[picostim.__file__,str(p.FIRMWARE_DIR),str(p.HIL_TESTS_DIR),p.INSTALLED]))"],
                            work, env).stdout)
    assert all(str(x).startswith(str(venv)) for x in where[:3]) and where[3] is True, where
    assert str(REPO) not in json.dumps(where)

    cli = str(venv / "bin" / "picostim")
    demo = _run([cli, "demo", "--levels", "1,3", "--capture-s", "0.2"], work, env)
    assert "requested vs measured" in demo.stdout and (work / "demo.png").stat().st_size > 1000
    hil = _run([cli, "hil", "-n", "1", "--quiet", "-k", "test_selftest_fails_on_an_open_load or "
                "test_specific_bad_requests"], work, env)
    rec = json.loads((work / "hil-report" / "record.json").read_text())
    assert rec["summary"]["passed"] >= 2 and rec["summary"]["failed"] == 0 and rec["outcome"] == "PASS", hil.stdout
    assert all(t["nodeid"] for t in rec["tests"]) and (work / "hil-report" / "junit.xml").is_file()
    assert rec["duts"] and rec["duts"][0]["fw"] == _fw_version()
    # the firmware bundle the DUT reports is in the record, the report and JUnit
    want = bundle.build("handheld-home").hash         # the checkout's sources = the wheel's copy
    assert {d["bundle"] for d in rec["duts"]} == {want}
    assert want in (work / "hil-report" / "report.html").read_text()
    junit = (work / "hil-report" / "junit.xml").read_text()
    assert f'name="picostim_bundle" value="{want}"' in junit
    # a bundle built by the installed toolkit, put through the station on one virtual unit
    built = json.loads(_run([cli, "build", "--board", "handheld-home", "-o", str(work), "--json"], work, env).stdout)
    assert built["bundle"] == want
    _run([cli, "station", "--bundle", built["path"], "-p", "sim", "--db", "line.sqlite"], work, env)
    (unit,) = json.loads(_run([cli, "units", "list", "--db", "line.sqlite", "--json"], work, env).stdout)
    assert unit["last_result"] == "PASS" and unit["bundle"] == want


def _fw_version():
    ns = {}
    exec((paths.FIRMWARE_DIR / "lib" / "pscodes.py").read_text(), ns)
    return ns["FW_VERSION"]


def test_every_third_party_import_is_a_pinned_dependency():
    """What the package and its HIL suite import is what `pip install picostim` installs (pinned), so an installed
    toolkit runs `picostim hil` / `station` without a dev environment; psycopg only for PostgreSQL (extra)."""
    import ast
    import importlib.metadata as md
    import re
    import tomllib

    project = tomllib.loads((HOST / "pyproject.toml").read_text())["project"]
    pins = {re.split(r"[=<>\[ ]", d)[0].lower().replace("_", "-"): d for d in project["dependencies"]}
    assert all("==" in d for d in pins.values()), pins
    optional = {re.split(r"[=<>\[ ]", d)[0].lower() for d in project["optional-dependencies"]["postgres"]}
    local = {"picostim", "support", "conftest", "benchlib"}
    sources = [p for p in (HOST / "picostim").rglob("*.py") if "runtime" not in p.parts]   # runtime/: MicroPython
    sources += list((REPO / "hil_tests").glob("*.py"))
    imported = set()
    for src in sources:
        for node in ast.walk(ast.parse(src.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third = sorted(m for m in imported if m not in sys.stdlib_module_names and m not in local)
    dists = md.packages_distributions()
    missing = []
    for mod in third:
        names = {d.lower().replace("_", "-") for d in dists.get(mod, [])}
        if not names & (set(pins) | optional):
            missing.append((mod, sorted(names)))
    assert not missing, f"imported but not a pinned dependency: {missing}"
