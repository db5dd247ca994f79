"""The lock and pyproject never drift apart: each direct dependency is locked within its range."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
UV = REPO / ".tools" / "bin" / "uv"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _locked() -> dict[str, str]:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    return {_canonical(p["name"]): p["version"] for p in lock["package"] if "version" in p}


def _direct() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        wanted += [Requirement(r) for r in extra]
    return wanted


def test_every_direct_dependency_is_locked_at_a_version_its_range_allows() -> None:
    locked = _locked()
    missing = [str(r) for r in _direct() if _canonical(r.name) not in locked]
    assert not missing, f"in pyproject.toml but not in uv.lock (run `make lock`): {missing}"
    outside = [
        f"{r} (locked {locked[_canonical(r.name)]})"
        for r in _direct()
        if not r.specifier.contains(locked[_canonical(r.name)], prereleases=True)
    ]
    assert not outside, f"uv.lock holds versions pyproject.toml no longer allows (run `make lock`): {outside}"


def test_every_locked_package_is_pinned_by_hash() -> None:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    unhashed = [
        p["name"]
        for p in lock["package"]
        if p.get("source", {}).get("registry")
        and not all("hash" in w for w in [*p.get("wheels", []), *([p["sdist"]] if "sdist" in p else [])])
    ]
    assert not unhashed


def test_the_lock_is_up_to_date_with_pyproject() -> None:
    """`uv lock --check`: pyproject changed (a range, a package, an extra) and the lock was not re-made."""
    uv = str(UV) if UV.exists() else shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed (`make setup` installs it into .tools/)")
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    done = subprocess.run(
        [uv, "lock", "--check", "--offline", "--no-progress"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr


def test_the_python_check_stops_an_old_interpreter_in_one_line(tmp_path: Path) -> None:
    """`make` with a Python older than requires-python says so in one line, before installing anything."""
    old = tmp_path / "python3"
    fake = "import sys; sys.version_info = (3, 9, 18); exec(sys.argv[2])"
    old.write_text(f'#!/bin/sh\nexec python3 -c "{fake}" "$@"\n')
    old.chmod(0o755)
    done = subprocess.run(
        ["make", "--dry-run", "--no-print-directory", "setup", f"PYTHON={old}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stdout == ""  # nothing ran
    (line,) = done.stderr.strip().splitlines()
    assert "Hotline needs Python 3.11 or newer" in line and "is 3.9.18" in line
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"
