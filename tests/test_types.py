"""Type checking (README, docs/coding-habits.md): the command README documents passes, and every
``# type: ignore`` names the error it silences."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE = ("imgprotect", "catalog", "matching", "workers", "spark", "bench", "training", "tests")
# A "type: ignore" comment not followed by "[code]".
BARE_IGNORE = re.compile(r"#\s*type:\s*ignore(?!\[[a-z-]+(,\s*[a-z-]+)*\])")


def documented_mypy() -> list[str]:
    """The arguments of the one mypy command README.md documents (after ``mypy``)."""
    commands = [line.strip() for line in (ROOT / "README.md").read_text().splitlines()
                if re.match(r"^\S*mypy --config-file", line.strip())]
    assert len(commands) == 1, f"README.md should document exactly one mypy command, found {commands}"
    words = shlex.split(commands[0].split("#")[0])
    return words[1:]


@pytest.mark.timeout(900)
def test_mypy_passes_on_the_documented_command(tmp_path: Path) -> None:
    args = documented_mypy()
    assert args[:2] == ["--config-file", "pyproject.toml"]
    # A fresh cache: a cache left by an older configuration has reported errors that a clean run does not.
    # django-stubs loads the settings: as a developer runs it, on the embedded default (this run's own
    # DATABASE_URL would make them a deployment's, which needs a SECRET_KEY).
    env = {**{k: v for k, v in os.environ.items() if k != "DATABASE_URL"}, "MYPY_CACHE_DIR": str(tmp_path / "mypy-cache")}
    run = subprocess.run([sys.executable, "-m", "mypy", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=850)
    assert run.returncode == 0, f"mypy {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}"
    assert "Success: no issues found" in run.stdout


def bare_ignores(text: str) -> list[int]:
    """Line numbers of ``type: ignore`` comments without an error code."""
    return [n for n, line in enumerate(text.splitlines(), 1) if BARE_IGNORE.search(line)]


def test_bare_ignores_are_found() -> None:
    sample = "\n".join([
        "a = f()  # type: ignore",
        "b = g()  # type: ignore[attr-defined]",
        "c = h()  #type:ignore  # reason",
        "d = i()  # type: ignore[arg-type, misc]",
        "e = j()  # type: ignore[]",
    ])
    assert bare_ignores(sample) == [1, 3, 5]


def test_every_type_ignore_names_its_error_code() -> None:
    found = []
    for package in CODE:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == Path(__file__).resolve():  # its samples above are bare on purpose
                continue
            found += [f"{path.relative_to(ROOT)}:{n}" for n in bare_ignores(path.read_text())]
    assert not found, f"type: ignore without an error code: {found}"
