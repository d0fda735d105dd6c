"""The wheel installs and runs on a clean machine: build it from a copy of the source tree
(``pip wheel``; build isolation fetches setuptools from the configured package index), check
what it holds, install it into a fresh virtualenv (dependencies from the package index) and run
the installed ``pgha``. Slow-ish (a minute: downloads); pip's cache, HOME and temporary files
stay in the test's directory, so it runs as an unprivileged user."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "configs" / "patroni-example.yml"
# pip downloads (build requirements, the dependencies): generous, it is a bound, not a timing
PIP_TIMEOUT = 900


def source_version() -> str:
    tree = ast.parse((ROOT / "src" / "pgha" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets):
            assert isinstance(node.value, ast.Constant)
            return str(node.value.value)
    raise AssertionError("no __version__ in src/pgha/__init__.py")


def clean_env(base: Path) -> dict[str, str]:
    """The environment of someone on a fresh machine: no source tree on the path, HOME, pip's
    cache and temporary files under ``base``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV")}
    for name in ("home", "cache", "tmp"):
        (base / name).mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(base / "home"), PIP_CACHE_DIR=str(base / "cache"),
               TMPDIR=str(base / "tmp"), PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120,
        ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def copy_tree(dest: Path) -> Path:
    """What a source checkout needs to build: pyproject, README, LICENSE, src (no caches or
    build leftovers, so the build starts clean and never writes into the working tree)."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns(
        "__pycache__", "*.pyc", "*.egg-info", "build"))
    return dest


def test_wheel_builds_installs_into_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    version = source_version()
    tree = copy_tree(tmp_path / "tree")

    # build
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist"),
         str(tree)], env, tmp_path, timeout=PIP_TIMEOUT)
    wheels = list((tmp_path / "dist").glob("*.whl"))
    assert [w.name for w in wheels] == [f"pgha-{version}-py3-none-any.whl"]
    wheel = wheels[0]

    # contents: the whole package with its data, the license, no tests
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        dist_info = f"pgha-{version}.dist-info"
        assert {n.split("/", 1)[0] for n in names} == {"pgha", dist_info}
        src = ROOT / "src"
        package_files = {str(p.relative_to(src)) for p in (src / "pgha").rglob("*")
                         if p.is_file() and "__pycache__" not in p.parts}
        assert "pgha/py.typed" in package_files
        assert package_files <= names, sorted(package_files - names)
        assert not any("test" in part for n in names for part in n.split("/")[:-1])
        assert zf.read(f"{dist_info}/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
        metadata = zf.read(f"{dist_info}/METADATA").decode()
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert "License-File: LICENSE" in metadata.splitlines()
    assert f"Version: {version}" in metadata.splitlines()
    assert "pgha = pgha.cli.entry:main" in entry_points

    # install into a fresh virtualenv, dependencies from the package index
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], env, tmp_path)
    py, pgha = venv / "bin" / "python", venv / "bin" / "pgha"
    run([str(py), "-m", "pip", "install", str(wheel)], env, tmp_path, timeout=PIP_TIMEOUT)

    where = run([str(py), "-c", "import pgha; print(pgha.__file__)"], env, tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout

    assert run([str(pgha), "--version"], env, tmp_path).stdout == f"pgha {version}\n"
    helped = run([str(pgha), "--help"], env, tmp_path).stdout
    for word in ("switchover", "validate-config", "--install-completion"):
        assert word in helped
    checked = run([str(pgha), "validate-config", str(EXAMPLE)], env, tmp_path).stdout
    assert "configuration is valid" in checked
    # shell completion of the installed script, the shell detected from the calling bash
    shown = run(["bash", "-c", f'"{pgha}" --show-completion; exit $?'], env, tmp_path).stdout
    assert "complete -o default -F _pgha_completion pgha" in shown
