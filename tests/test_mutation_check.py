"""The mutation check's own logic, without running a mutant: its table matches the source, and it refuses loudly
when it does not."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import pytest

from devtools.mutation_check import MUTANTS, ROOT, Mutant, MutantError, apply, first_failure, main, run, table_problems

RUNTIME_TESTS = ROOT / "tests" / "test_runtime.py"


def test_every_snippet_of_the_table_is_in_the_source_exactly_once_and_every_test_it_names_exists() -> None:
    assert table_problems(MUTANTS) == [], "code moved: update the table in devtools/mutation_check.py"


def test_every_runtime_test_has_a_mutant_it_must_kill() -> None:
    tree = ast.parse(RUNTIME_TESTS.read_text())
    tests = {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
    targeted = {test.partition("::")[2] for mutant in MUTANTS for test in mutant.tests}
    assert tests - targeted == set()


def a_tree(tmp_path: Path, source: str) -> tuple[Path, Mutant]:
    (tmp_path / "bridge").mkdir()
    (tmp_path / "bridge" / "rule.py").write_text(source)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_rule.py").write_text("def test_rule() -> None: ...\n")
    mutant = Mutant("flip", "a rule", "bridge/rule.py", "a >= b", "a > b", ("tests/test_rule.py::test_rule",))
    return tmp_path, mutant


def test_apply_puts_the_bug_in(tmp_path: Path) -> None:
    root, mutant = a_tree(tmp_path, "ok = a >= b\n")
    apply(mutant, root)
    assert (root / "bridge" / "rule.py").read_text() == "ok = a > b\n"


@pytest.mark.parametrize("source", ["ok = a > b\n", "ok = a >= b\nagain = a >= b\n"])
def test_a_snippet_not_there_exactly_once_is_refused(tmp_path: Path, source: str) -> None:
    root, mutant = a_tree(tmp_path, source)
    with pytest.raises(MutantError, match=r"flip: its snippet occurs [02] times in bridge/rule\.py"):
        apply(mutant, root)
    assert (root / "bridge" / "rule.py").read_text() == source, "nothing was changed"


def test_a_run_with_an_outdated_table_fails_before_running_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, mutant = a_tree(tmp_path, "ok = a > b\n")
    missing_test = replace(mutant, name="gone", snippet="ok", tests=("tests/test_rule.py::test_gone",))
    assert run([mutant, missing_test], root, timeout_s=1) == 1
    err = capsys.readouterr().err
    assert "flip: its snippet occurs 0 times in bridge/rule.py" in err
    assert "gone: tests/test_rule.py::test_gone names no test" in err


def test_the_failure_reported_is_the_first_failed_test_with_its_error() -> None:
    output = "\n".join(
        [
            "F",
            "E   AssertionError: every record let go of once delivered",
            "ERROR    asyncio:base_events.py:1771 Future exception was never retrieved",
            "FAILED tests/test_runtime.py::test_rows - AssertionError: every record...",
        ]
    )
    expected = "FAILED tests/test_runtime.py::test_rows: AssertionError: every record let go of once delivered"
    assert first_failure(output) == expected


def test_an_unknown_mutant_name_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no_such_mutant"]) == 2
    assert "no such mutant: no_such_mutant" in capsys.readouterr().err


def test_the_list_names_each_mutant_with_the_tests_that_must_kill_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list", MUTANTS[0].name]) == 0
    listed = capsys.readouterr().out
    assert MUTANTS[0].name in listed and f"killed by: {MUTANTS[0].tests[0]}" in listed
