"""The sandbox from the places users really install Python into: virtual environments under /tmp (a `python`
that is a symlink, and one made with --copies), a Python installed entirely under /tmp, and a non-root user.

The sandbox hides /tmp behind a private tmpfs, so an interpreter living there must be bound back. Each
environment runs the whole of tests/test_sandbox.py with LORALAB_TEST_REQUIRE_NAMESPACES=1 (a test that needs
the namespaces fails instead of skipping), after checking that it really runs from under /tmp and that the
sandbox kept its folders. Needs the namespaces on this machine to mean anything; skipped, saying so, without.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from loralab.evaluation.sandbox import supervisor as sandbox

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SUITE_TIMEOUT_S = 600
PROBE = """
import json, os, sys
from loralab.evaluation.sandbox import supervisor as sandbox
probe = sandbox.probe()
result = sandbox.run_code("import sys, ctypes, decimal, json, math, zlib; print(sys.executable, sys.flags.isolated)")
print(json.dumps({"executable": sys.executable, "namespaces": probe.namespaces, "layers": probe.active,
                  "result": [result.status, result.stdout]}))
"""


@pytest.fixture(scope="module", autouse=True)
def namespaces_here() -> None:
    if not sandbox.probe().namespaces:
        pytest.skip(f"the sandbox has no namespaces on this machine itself: {sandbox.isolation()}")


@pytest.fixture
def under_tmp():
    folder = Path(tempfile.mkdtemp(prefix="loralab-env-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def make_venv(folder: Path, python: str, copies: bool) -> Path:
    subprocess.run([python, "-m", "venv", "--without-pip", *(["--copies"] if copies else []), str(folder)],
                   check=True, capture_output=True)  # fmt: skip
    return folder / "bin" / "python"


def needs_libpython(executable: str) -> bool:
    """Whether the interpreter loads a shared libpython (found through an absolute RUNPATH, outside /tmp)."""
    with open(executable, "rb") as file:
        return b"libpython" in file.read()


def install_python(folder: Path) -> Path:
    """A copy of a Python interpreter and its standard library (no site-packages) under `folder`: what a
    from-source or standalone install under /tmp looks like. Prefers one without a shared libpython, so that
    nothing of it stays outside /tmp."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [Path(sys.base_prefix) / "bin" / version, Path("/usr/bin") / version]
    found = [
        c for c in candidates if c.is_file() and (Path(c.parents[1]) / "lib" / version / "os.py").is_file()
    ]
    if not found:
        pytest.skip(f"no {version} installation to copy")
    source = next((c for c in found if not needs_libpython(str(c))), found[0])
    (folder / "bin").mkdir(parents=True)
    shutil.copy2(source, folder / "bin" / version)
    skip = shutil.ignore_patterns(
        "site-packages", "dist-packages", "test", "__pycache__", "idlelib", "tkinter"
    )
    shutil.copytree(source.parents[1] / "lib" / version, folder / "lib" / version, ignore=skip)
    return folder / "bin" / version


def outer_path() -> str:
    """loralab's source and this environment's packages (pytest, torch), for the interpreter under test."""
    return os.pathsep.join([str(REPO / "src"), str(REPO / "tests"), sysconfig.get_paths()["purelib"]])


def run_in(
    python: Path, args: list[str], user: list[str] | None = None, **env: str
) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": outer_path(), "LORALAB_TEST_REQUIRE_NAMESPACES": "1", **env}
    return subprocess.run([*(user or []), str(python), *args], cwd=REPO, env=environment, capture_output=True,
                          text=True, timeout=SUITE_TIMEOUT_S)  # fmt: skip


def check_environment(python: Path, home: Path, user: list[str] | None = None, **env: str) -> None:
    """The interpreter runs from under /tmp, the sandbox keeps its folders, and the whole hostile suite passes."""
    probe = run_in(python, ["-c", PROBE], user, **env)
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout)
    assert found["executable"].startswith(str(home)), found
    assert found["namespaces"], found
    kept = next(layer for layer in found["layers"] if layer.startswith("Python's own folders kept there"))
    assert str(home) in kept, kept
    assert found["result"] == ["ok", f"{found['executable']} 1\n"], found
    suite = run_in(
        python, ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_sandbox.py"], user, **env
    )
    assert suite.returncode == 0, suite.stdout[-5000:] + suite.stderr[-2000:]
    assert " passed" in suite.stdout and " failed" not in suite.stdout, suite.stdout[-2000:]


def test_venv_with_symlinked_python(under_tmp):
    python = make_venv(under_tmp / "venv", sys.executable, copies=False)
    assert python.is_symlink()
    check_environment(python, under_tmp)


def test_venv_made_with_copies(under_tmp):
    python = make_venv(under_tmp / "venv", sys.executable, copies=True)
    assert not python.is_symlink()
    check_environment(python, under_tmp)


def test_python_installed_under_tmp(under_tmp):
    """(A venv made from such a Python: see the non-root test.)"""
    check_environment(install_python(under_tmp / "python"), under_tmp)


def test_non_root_user_with_python_and_venv_under_tmp(under_tmp):
    """As `nobody`: a Python under /tmp (root's own may be unreadable to others) and a venv made from it."""
    if os.getuid() != 0 or not shutil.which("runuser"):
        pytest.skip("needs root (to become another user) and runuser")
    installed = install_python(under_tmp / "python")
    if needs_libpython(str(installed)):
        pytest.skip("no Python here without a shared libpython outside /tmp, which another user may not read")
    needed = [str(REPO / "tests"), str(REPO / "src" / "loralab"), sysconfig.get_paths()["purelib"]]
    if subprocess.run(["runuser", "-u", "nobody", "--", "ls", *needed], capture_output=True).returncode:
        pytest.skip("the checkout or this environment is not readable by other users")
    python = make_venv(under_tmp / "venv", str(installed), copies=False)
    check_environment(python, under_tmp, ["runuser", "-u", "nobody", "--"], HOME=str(under_tmp))
