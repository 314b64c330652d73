"""In CI every test must run and pass: a pytest plugin that fails the run on anything that hides a test.

``tests/conftest.py`` registers it; a bare pytest loads it with ``-p tests.skipguard``
(``tests/test_skipguard.py`` does, on a throw-away test directory). With ``CI`` truthy
(:func:`is_ci`), the run exits non-zero on

- a skip at collection (a module-level ``pytest.skip`` or ``pytest.importorskip``),
- a skipped test (a ``skip``/``skipif`` mark, ``pytest.skip`` in a test or a fixture),
- an expected failure, unless its ``xfail`` mark says ``ci_allowed=True``,
- a test deselected by ``-m``, ``-k`` or ``--deselect``, unless the run is the documented
  SQLite subset (``-m sqlite_subset`` alone; docs/testing.md).

Outside CI these are reported as usual. docs/testing.md describes the runs.
"""
from __future__ import annotations

import os

import pytest

# The one deselection CI allows: scripts/test's second run, the embedded-default subset on SQLite.
SQLITE_SUBSET_MARKEXPR = "sqlite_subset"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def is_ci(value: str | None = None) -> bool:
    """Whether ``CI`` (or ``value``) means "this is CI": true/1/yes/on; unset, empty, false/0/no/off are not.

    Any other value is refused rather than guessed (CI=maybe is a typo, not a decision).
    """
    raw = os.environ.get("CI") if value is None else value
    text = (raw or "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise pytest.UsageError(f"CI={raw!r} is neither true (1, true, yes, on) nor false (0, false, no, off, empty)")


def _reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: why")
        return str(longrepr[2])
    return str(longrepr)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_subset: also run on SQLite, the embedded default (docs/testing.md)")
    if is_ci():  # a CI value that means nothing stops the run here, before any test
        config.pluginmanager.register(SkipGuard(config), "skipguard-ci")


class SkipGuard:
    """The CI-only hooks; what hid a test is listed at the end and fails the run."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.problems: list[str] = []

    def subset_run(self) -> bool:
        option = self.config.getoption
        return (option("markexpr", "") == SQLITE_SUBSET_MARKEXPR and not option("keyword", "")
                and not option("deselect", None))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.skipped:
            self.problems.append(f"{report.nodeid or '<session>'}: skipped at collection: {_reason(report)}")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
        outcome = yield
        report: pytest.TestReport = outcome.get_result()
        if not report.skipped:
            return
        if hasattr(report, "wasxfail"):
            mark = item.get_closest_marker("xfail")
            if mark is not None and mark.kwargs.get("ci_allowed") is True:
                return
            what = f"an expected failure in CI, not allowed without xfail(ci_allowed=True): {report.wasxfail}"
            del report.wasxfail
        else:
            what = f"skipped in CI, which is not allowed: {_reason(report)}"
        report.outcome = "failed"
        report.longrepr = what
        self.problems.append(f"{report.nodeid}: {what}")

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        if items and not self.subset_run():
            self.problems.append(f"{len(items)} test(s) deselected in CI (-m/-k/--deselect), e.g. {items[0].nodeid}; "
                                 f"only the SQLite subset run (-m {SQLITE_SUBSET_MARKEXPR}) may deselect")

    def pytest_terminal_summary(self, terminalreporter) -> None:  # type: ignore[no-untyped-def]
        if self.problems:
            terminalreporter.section("skip guard: tests hidden in CI", sep="=", red=True, bold=True)
            for problem in self.problems:
                terminalreporter.line(problem, red=True)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.problems and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
