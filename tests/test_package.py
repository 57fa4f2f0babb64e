"""The package as a user gets it: a wheel installed into a fresh virtual environment,
run from a folder with no checkout (the bundled flows come from the package itself)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT

VIGNETTES = ROOT / "tests" / "vignettes" / "sample-vignettes.yaml"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with only the wheel built from this tree; its dependencies are
    this interpreter's (a .pth line), so nothing is downloaded, but nothing of the
    checkout is on its path either."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "bot", src / "bot", symlinks=True, ignore=ignore)
    shutil.copytree(ROOT / "flows", src / "flows", ignore=ignore)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(work / "dist"), str(src)],
                   check=True, capture_output=True, timeout=120)
    wheel, = (work / "dist").glob("triagebot-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "bot/flows/back_pain_fever.yaml" in names and "bot/flows/back_pain_fever.ar.yaml" \
        in names and "bot/locales/es.yaml" in names
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=60)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                    "--quiet", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, timeout=120)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies, after the venv's own site-packages (so its `bot` is the wheel's)
    Path(purelib, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def run(venv: Path, *args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("TRIAGEBOT_", "TELEGRAM_", "PYTHON"))}
    return subprocess.run([str(venv / "bin" / "triagebot"), *args], input=stdin, text=True,
                          capture_output=True, cwd=cwd, env=environ, timeout=60)


def test_the_wheel_runs_chat_validate_and_eval_in_an_empty_folder(installed, tmp_path):
    where = subprocess.run([str(installed / "bin" / "python"), "-c",
                            "import bot, bot.settings as s; print(bot.__file__); "
                            "print(s.BUNDLED_FLOWS)"], capture_output=True, text=True,
                           cwd=tmp_path, check=True).stdout.split()
    assert all(str(installed) in line and str(ROOT) not in line for line in where), where

    chat = run(installed, "chat", "--colour", "never", cwd=tmp_path, stdin="yes\n")
    assert chat.returncode == 0, chat.stderr
    assert "?" in chat.stdout and "does not exist" not in chat.stderr

    validate = run(installed, "validate", cwd=tmp_path)
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert "flow 'back_pain_fever'" in validate.stdout and "site-packages" in validate.stdout

    shutil.copy(VIGNETTES, tmp_path / "cases.yaml")
    result = run(installed, "eval", "cases.yaml", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)["summary"]
    assert summary["n"] == 18 and summary["emergency_sensitivity"] == 1.0
    assert summary["under_triaged"] == 0


def test_init_then_chat_in_an_empty_folder_as_a_new_user_would(installed, tmp_path):
    made = run(installed, "init", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "triagebot.env").exists() and (tmp_path / "local.yaml").exists()
    (tmp_path / "local.yaml").write_text('service_name: "Riverside Health"\n')
    chat = run(installed, "chat", "--colour", "never", cwd=tmp_path,
               stdin="45\nmale\nlower back\n11\n")
    assert chat.returncode == 0, chat.stderr
    assert "CALL 112 NOW" in chat.stdout and "offered by Riverside Health" in chat.stdout
