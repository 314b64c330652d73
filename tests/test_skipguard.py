"""The skip guard (tests/skipguard.py): in CI nothing may hide a test; outside CI skips are only reported."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.skipguard import is_ci

ROOT = Path(__file__).resolve().parents[1]

# Each case is one test module, written into a throw-away directory; "ok" is the control.
CASES = {
    "ok": "def test_ok():\n    assert True\n",
    "module_skip": "import pytest\npytest.skip('no service', allow_module_level=True)\n\ndef test_x():\n    pass\n",
    "importorskip": "import pytest\nnot_there = pytest.importorskip('no_such_module_imgprotect')\n\n"
                    "def test_x():\n    pass\n",
    "skipped_test": "import pytest\n\n@pytest.mark.skipif(True, reason='not today')\ndef test_x():\n    pass\n",
    "skip_in_fixture": "import pytest\n\n@pytest.fixture\ndef chromium():\n    pytest.skip('no browser')\n\n"
                       "def test_x(chromium):\n    pass\n",
    "xfail": "import pytest\n\n@pytest.mark.xfail(reason='known bug')\ndef test_x():\n    assert False\n",
}


def run_pytest(tmp_path: Path, modules: dict[str, str], *args: str, ci: str) -> subprocess.CompletedProcess[str]:
    for name, source in modules.items():
        (tmp_path / f"test_{name}.py").write_text(source)
    (tmp_path / "pytest.ini").write_text("[pytest]\nxfail_strict = true\nmarkers =\n    sqlite_subset: x\n")
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTEST_ADDOPTS")}
    # No installed plugin (Django, Hypothesis, Faker: seconds of start-up), only the guard.
    env.update(CI=ci, PYTHONPATH=str(ROOT), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.skipguard", "-p", "no:cacheprovider",
                           "-q", "-rA", str(tmp_path), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", [c for c in CASES if c != "ok"])
def test_in_ci_anything_that_hides_a_test_fails_the_run(tmp_path: Path, case: str) -> None:
    result = run_pytest(tmp_path, {"ok": CASES["ok"], case: CASES[case]}, ci="true")
    assert result.returncode != 0, result.stdout
    assert "skip guard: tests hidden in CI" in result.stdout, result.stdout
    assert f"test_{case}.py" in result.stdout.split("skip guard: tests hidden in CI", 1)[1]


@pytest.mark.parametrize("args", [("-k", "not test_ok"), ("-m", "not sqlite_subset"),
                                  ("--deselect", "test_ok.py::test_ok"), ("-m", "sqlite_subset", "-k", "x")])
def test_in_ci_deselecting_fails_the_run(tmp_path: Path, args: tuple[str, ...]) -> None:
    other = "import pytest\n\n@pytest.mark.sqlite_subset\ndef test_x():\n    pass\n"
    result = run_pytest(tmp_path, {"ok": CASES["ok"], "other": other}, *args, ci="1")
    assert result.returncode != 0 and "deselected in CI" in result.stdout, result.stdout


def test_in_ci_the_sqlite_subset_may_deselect_and_an_allowed_xfail_passes(tmp_path: Path) -> None:
    modules = {"ok": CASES["ok"],
               "subset": "import pytest\n\npytestmark = pytest.mark.sqlite_subset\n\n"
                         "@pytest.mark.xfail(reason='upstream bug', ci_allowed=True)\ndef test_x():\n    assert False\n"}
    result = run_pytest(tmp_path, modules, "-m", "sqlite_subset", ci="yes")
    assert result.returncode == 0, result.stdout
    assert "1 deselected" in result.stdout and "1 xfailed" in result.stdout


@pytest.mark.parametrize("ci", ["false", "0", ""])
def test_outside_ci_skips_are_reported_and_pass(tmp_path: Path, ci: str) -> None:
    result = run_pytest(tmp_path, CASES, ci=ci)
    assert result.returncode == 0, result.stdout
    assert "skip guard" not in result.stdout
    assert "1 passed, 4 skipped, 1 xfailed" in result.stdout, result.stdout


@pytest.mark.parametrize(("value", "expected"), [
    ("true", True), ("1", True), ("yes", True), ("TRUE", True), (" on ", True),
    ("false", False), ("0", False), ("", False), (None, False), ("no", False), ("Off", False),
])
def test_is_ci_reads_truthy_and_falsy_values(monkeypatch: pytest.MonkeyPatch, value: str | None,
                                              expected: bool) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert is_ci() is expected


def test_a_ci_value_that_means_nothing_is_refused() -> None:
    with pytest.raises(pytest.UsageError, match="CI='maybe'"):
        is_ci("maybe")
