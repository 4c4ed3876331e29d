"""The code stays readable: no function in the package longer than a screen and a half."""

import ast
from pathlib import Path

import sknet

MAX_FUNCTION_LINES = 80  # docstring included


def _functions(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


def test_no_function_in_the_package_is_longer_than_80_lines():
    root = Path(sknet.__file__).parent
    long = [
        f"{path.relative_to(root.parent)}:{line} {name} ({length} lines)"
        for path in sorted(root.rglob("*.py"))
        for name, line, length in _functions(path)
        if length > MAX_FUNCTION_LINES
    ]
    assert not long, "split these functions:\n" + "\n".join(long)


def test_the_check_measures_a_function_from_its_def_to_its_last_line(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n" + "    x = 1\n" * 80 + "\n\nasync def g():\n    pass\n")
    assert [(name, length) for name, _, length in _functions(path)] == [("f", 81), ("g", 2)]
