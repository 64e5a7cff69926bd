"""The repo as a package: the wheel ``pip install .`` builds holds every config, eval task file and bundled data file
(an installed copy finds conf/ and data/ beside its packages, as a checkout does), declares the two console scripts,
and declares what the code needs (dependency floors, no accelerate, which nothing imports).

The wheel is built from a copy of the package folders (no build/ or egg-info left in the checkout), without build
isolation: the venv's setuptools builds it offline in a few seconds."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
TOP_LEVEL = sorted({p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]})
RESOURCES = ("conf", "data", "eval/tasks")  # every file of these (code and data) must be in the wheel


def _ignored(path: Path) -> bool:
    return "__pycache__" in path.parts or path.suffix == ".pyc"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in TOP_LEVEL:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "results"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = out.glob("*.whl")
    return zipfile.ZipFile(path)


def _dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (member,) = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
    return wheel.read(member).decode()


@pytest.mark.parametrize("folder", RESOURCES)
def test_the_wheel_holds_every_config_task_and_data_file(wheel, folder):
    """conf/ (Hydra's configs), data/ (the bundled pairs) and eval/tasks/ (task YAMLs, their utils, the mini
    copies): a non-editable install without them cannot compose a config or run a benchmark."""
    names = set(wheel.namelist())
    files = [p.relative_to(REPO).as_posix() for p in sorted((REPO / folder).rglob("*")) if p.is_file()]
    missing = [f for f in files if not _ignored(Path(f)) and f not in names]
    assert files and missing == []


def test_the_wheel_holds_the_packages_and_nothing_of_the_checkout(wheel):
    tops = {n.split("/")[0] for n in wheel.namelist() if not n.split("/")[0].endswith(".dist-info")}
    assert {"align", "eval", "conf", "data", "miniature"} <= tops
    assert not tops & {"tests", "outputs", ".cache", "bench", "docs", "requirements"}


def test_the_console_scripts_are_declared_and_importable(wheel):
    scripts = PYPROJECT["project"]["scripts"]
    assert scripts == {"mio-train": "align.run:main", "mio-eval": "eval.run:main"}
    entry_points = _dist_info(wheel, "entry_points.txt")
    for name, target in scripts.items():
        assert f"{name} = {target}" in entry_points
        module, _, attr = target.partition(":")  # a top-level function of that module (read, not imported)
        tree = ast.parse((REPO / f"{module.replace('.', '/')}.py").read_text())
        assert attr in {f.name for f in tree.body if isinstance(f, ast.FunctionDef)}, target


def test_the_dependency_floors_match_what_the_code_uses(wheel):
    """transformers 4.56 added from_pretrained(dtype=...); lm-eval 0.4.12 the TaskManager and task index eval/
    uses; setuptools 77 reads the SPDX license string. accelerate is dropped: nothing here imports it (lm-eval's hf
    extra and peft still bring it)."""
    requires = [
        line for line in _dist_info(wheel, "METADATA").splitlines() if line.startswith("Requires-Dist:")
    ]
    assert "Requires-Dist: transformers>=4.56" in requires
    assert "Requires-Dist: lm-eval[hf]<0.5,>=0.4.12" in requires
    assert not [r for r in requires if "accelerate" in r]
    assert "setuptools>=77" in PYPROJECT["build-system"]["requires"]
    assert "License-Expression: Apache-2.0" in _dist_info(wheel, "METADATA")


def test_no_module_imports_accelerate():
    found = []
    for name in TOP_LEVEL:
        for path in sorted((REPO / name).rglob("*.py")) if (REPO / name).is_dir() else []:
            for node in ast.walk(ast.parse(path.read_text())):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                mods += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                found += [f"{path.relative_to(REPO)}: {m}" for m in mods if m.split(".")[0] == "accelerate"]
    assert found == []


def test_an_installed_copy_writes_outputs_under_the_current_directory(monkeypatch, tmp_path):
    """In a checkout, outputs and caches go under it; in an installed copy the packages' parent is site-packages,
    so they go under the current directory instead (paths.work_dir), never into site-packages."""
    from align.config import compose
    from common import config as shared

    monkeypatch.delenv("MIO_WORK_DIR", raising=False)
    monkeypatch.delenv("MIO_LOG_DIR", raising=False)
    monkeypatch.delenv("MIO_CACHE", raising=False)
    paths = compose(["output_dir=x"]).paths
    assert paths.log_dir == str(shared.REPO_ROOT / "outputs") and paths.cache_dir == str(
        shared.REPO_ROOT / ".cache"
    )
    site = tmp_path / "site-packages"  # what an installed copy's REPO_ROOT is: no pyproject.toml beside it
    site.mkdir()
    monkeypatch.setattr(shared, "REPO_ROOT", site)
    monkeypatch.chdir(tmp_path)
    paths = compose(["output_dir=x"]).paths
    assert paths.log_dir == str(tmp_path / "outputs") and paths.cache_dir == str(tmp_path / ".cache")
