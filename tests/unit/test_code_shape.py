"""The code's shape: small modules and short functions in stages/, tasks.py and the Python that
runs on the Pi, firstboot/ (its package and its scripts without .py), read with ast. Tests
(tests/, firstboot/tests/) are not held to it.

Limits: a module has at most 300 lines unless it is a declarative table named in TABLES
with its reason; a function or method (decorators included) has at most 60 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60
# Declarative tables may be longer: "path": "why it is a table". None is today; the recipe
# settings table (stages/core/config.py) stays under the limit with its checks and parser apart.
TABLES: dict[str, str] = {}


def _is_python_script(path: Path) -> bool:
    """A file without .py that python runs: its first line is a python shebang."""
    with path.open("rb") as f:
        first = f.readline()
    return path.suffix == "" and first.startswith(b"#!") and b"python" in first


def _firstboot() -> list[Path]:
    """firstboot/'s Python outside its tests: the package modules and the installed scripts."""
    firstboot = ROOT / "firstboot"
    modules = [p for p in firstboot.rglob("*.py") if "tests" not in p.relative_to(firstboot).parts]
    guest = ROOT / "stages" / "boottest" / "guest"  # the boot test's own guest programs
    scripts = [p for d in (firstboot, guest) for p in d.iterdir() if p.is_file() and _is_python_script(p)]
    return sorted(modules + scripts)


def _modules() -> list[Path]:
    return [*sorted((ROOT / "stages").rglob("*.py")), ROOT / "tasks.py", *_firstboot()]


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_every_module_is_at_most_300_lines_unless_it_is_a_declared_table() -> None:
    long = [f"{_name(p)}: {_lines(p)} lines" for p in _modules()
            if _lines(p) > MAX_MODULE_LINES and _name(p) not in TABLES]
    assert not long, "split these modules (or declare a table in TABLES with its reason):\n" + "\n".join(long)


def test_every_declared_table_exists_and_still_needs_its_exception() -> None:
    for name, reason in TABLES.items():
        assert reason and (ROOT / name).is_file(), name
        assert _lines(ROOT / name) > MAX_MODULE_LINES, f"{name} is short now: drop it from TABLES"


def _function_lengths(path: Path, name: str) -> list[tuple[str, int]]:
    """(where, lines) of every function and method in ``path``, decorators included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            found.append((f"{name}:{node.lineno} {node.name}()", (node.end_lineno or node.lineno) - first + 1))
    return found


def test_no_function_or_method_is_over_60_lines() -> None:
    long = [f"{where}: {n} lines" for p in _modules()
            for where, n in _function_lengths(p, _name(p)) if n > MAX_FUNCTION_LINES]
    assert not long, "split these functions:\n" + "\n".join(long)


def test_the_reader_counts_a_long_function_with_its_decorator(tmp_path: Path) -> None:
    # Negative control: a 61-line function (decorator and 59 body lines) is seen as 61 lines.
    body = "\n".join(f"    x{i} = {i}" for i in range(59))
    src = tmp_path / "long.py"
    src.write_text(f"import functools\n\n\n@functools.cache\ndef long() -> None:\n{body}\n")
    assert _function_lengths(src, "long.py") == [("long.py:5 long()", 61)]


def test_the_firstboot_scripts_without_py_are_read_too() -> None:
    names = {_name(p) for p in _firstboot()}
    for script in ("firstboot/entropi-firstboot", "stages/boottest/guest/entropi-probe", "firstboot/entropi-growroot"):
        assert script in names, script
    assert "firstboot/entropi_firstboot/main.py" in names
    assert not any(name.startswith("firstboot/tests/") for name in names)
